"""The layer-analysis command: outputs, report, compare, and one clear error per bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from layer_analysis.cli import main
from layer_analysis.probe.analysis import COLUMNS


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture
def run_args(tiny_llama_dir, out_dir):
    return ["run", "--model", str(tiny_llama_dir), "--languages", "en,de,zh", "--limit", "16",
            "--output", str(out_dir), "--no-progress", "--device", "cpu", "--projection", "pca",
            "--bootstrap", "200", "--no-static"]


def test_run_writes_tables_manifest_and_report(run_args, out_dir, capsys):
    assert main([*run_args, "--name", "base"]) == 0
    out = capsys.readouterr().out
    assert "Retrieval P@1" in out and "deu_Latn" in out and "report:" in out
    run = out_dir / "base"
    table = pd.read_parquet(run / "results.parquet")
    assert list(table.columns) == COLUMNS
    assert pd.read_csv(run / "results.csv").shape == table.shape
    assert set(table.normalisation) == {"raw", "centered", "csls", "margin"}
    assert {"p@1", "r@5", "r@10", "mrr", "cosine", "cosine_adjusted"} <= set(table.metric)
    assert set(table.layer) == set(range(5))
    both_ways = table[(table.metric == "p@1") & (table.normalisation == "centered")]
    assert {("eng_Latn", "deu_Latn"), ("deu_Latn", "eng_Latn")} <= set(
        zip(both_ways.source, both_ways.target, strict=True))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["languages"] == ["deu_Latn", "eng_Latn", "zho_Hans"]
    assert {"load_model", "extract", "analyse", "report"} <= set(manifest["timings_s"])
    assert "torch" in manifest["versions"]
    html = (run / "report.html").read_text()
    assert "heatmap_p@1" in html and "Plotly" in html
    assert pd.read_csv(run / "cka.csv").value.max() == pytest.approx(1.0, abs=1e-4)
    assert len(pd.read_csv(run / "projection.csv")) == 48


def test_report_and_compare(run_args, out_dir, tmp_path, capsys, tiny_llama_dir):
    from peft import LoraConfig, get_peft_model

    from layer_analysis.probe.models import load_model

    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base.model, lora).save_pretrained(tmp_path / "x-de")
    assert main([*run_args, "--name", "base", "--overwrite"]) == 0
    assert main([*run_args, "--name", "adapted", "--adapter", str(tmp_path / "x-de")]) == 0
    (out_dir / "base" / "report.html").unlink()
    assert main(["report", str(out_dir / "base"), "--no-static"]) == 0
    assert (out_dir / "base" / "report.html").exists()
    capsys.readouterr()
    assert main(["compare", str(out_dir / "base"), str(out_dir / "adapted"), "--output",
                 str(tmp_path / "cmp"), "--no-static"]) == 0
    table = pd.read_parquet(tmp_path / "cmp" / "results.parquet")
    assert table.model.nunique() == 2
    cka = pd.read_csv(tmp_path / "cmp" / "cka.csv")
    assert len(cka) == 25 and "comparison_p@1" in (tmp_path / "cmp" / "report.html").read_text()
    paired = pd.read_csv(tmp_path / "cmp" / "paired.csv")
    assert set(paired.model) == {table.model.unique()[1]} and len(paired) > 0
    out = capsys.readouterr().out
    assert "Paired differences per sentence" in out and "eng_Latn → deu_Latn" in out
    assert "paired_p@1" in (tmp_path / "cmp" / "report.html").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--languages", "en,xx"], "unknown language 'xx'"),
        (["--languages", "de,zh"], "pivot eng_Latn is not among the selected languages"),
        (["--languages", ","], "unknown language ''"),
        (["--layers", "0,99"], "out of range"),
        (["--data", "nowhere"], "no data set, directory or file named 'nowhere'"),
        (["--template", "no slot"], "must contain {sentence}"),
        (["--limit", "0"], "at least 1"),
        (["--projection-layer", "42"], "--projection-layer [42] out of range"),
        (["--dtype", "float16"], "float16 on the CPU is refused"),
        (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (["--limit", "1"], "too few sentences to analyse"),
        (["--languages", "en"], "no language pair to analyse"),
        (["--name", "../escape"], "must be a plain name"),
        (["--name", "/tmp/abs"], "must be a plain name"),
        (["--sink-ratio", "0.5"], "--sink-ratio: must be above 1, got 0.5"),
    ],
)
def test_bad_inputs_give_one_message_and_exit_2(run_args, capsys, extra, message):
    assert main(run_args + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("error:") == 1


def test_layers_out_of_range_fail_before_the_weights_load(run_args, capsys, monkeypatch):

    def load_model(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr("layer_analysis.probe.models.load_model", load_model)
    assert main([*run_args, "--layers", "2,7"]) == 2
    assert "layers [7] out of range: this model has layers 0..4" in capsys.readouterr().err


@pytest.mark.parametrize("layers", ["5-2", "3-", "-1", "a"])
def test_bad_layer_ranges_are_refused(run_args, capsys, layers):
    assert main([*run_args, "--layers", layers]) == 2
    assert "--layers" in capsys.readouterr().err


def test_truncation_by_max_length_is_warned_about_and_recorded(run_args, out_dir, capsys):
    assert main([*run_args, "--name", "cut", "--max-length", "3"]) == 0
    err = capsys.readouterr().err
    assert "warning: --max-length 3 truncates 48 of 48 sentences (100%)" in err
    manifest = json.loads((out_dir / "cut" / "manifest.json").read_text())
    cut = manifest["extraction"]["truncation"]
    assert cut["sentences"] == 48 and cut["share"] == 1.0 and cut["worst_kept_fraction"] < 0.5
    assert any("truncates 48 of 48" in w for w in manifest["warnings"])
    assert main([*run_args, "--name", "whole"]) == 0  # nothing cut: recorded, not warned
    assert "truncates" not in capsys.readouterr().err
    whole = json.loads((out_dir / "whole" / "manifest.json").read_text())
    assert whole["extraction"]["truncation"]["sentences"] == 0


def test_a_run_name_is_not_reused_without_overwrite(run_args, out_dir, capsys):
    assert main([*run_args, "--name", "once"]) == 0
    before = (out_dir / "once" / "manifest.json").read_text()
    assert main([*run_args, "--name", "once", "--bootstrap", "50"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out_dir / "once" / "manifest.json").read_text() == before
    assert main([*run_args, "--name", "once", "--bootstrap", "50", "--overwrite"]) == 0


def test_repeated_sentences_warn_and_move_chance(run_args, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "eng_Latn.txt").write_text("Hello.\nHello.\nGood night.\nSee you.\n")
    (tmp_path / "data" / "deu_Latn.txt").write_text("Hallo.\nHallo.\nGute Nacht.\nBis bald.\n")
    args = [a for a in run_args if a not in ("--languages", "en,de,zh")]
    assert main([*args, "--data", str(tmp_path / "data"), "--name", "repeats"]) == 0
    assert "eng_Latn has 1 repeated sentence" in capsys.readouterr().err
    table = pd.read_parquet(args[args.index("--output") + 1] / __import__("pathlib").Path(
        "repeats") / "results.parquet")
    p1 = table[(table.metric == "p@1") & (table.layer == 0) & (table.normalisation == "raw")]
    # two queries have 2 correct answers among 4 (rank uniform on 1..3), two have 1 (1..4)
    assert p1.null.iloc[0] == pytest.approx((2 / 3 + 2 / 4) / 4)


def test_compare_refuses_runs_on_different_data(run_args, out_dir, tmp_path, capsys,
                                               tiny_llama_dir):
    from peft import LoraConfig, get_peft_model

    from layer_analysis.probe.models import load_model

    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base.model, lora).save_pretrained(tmp_path / "x")
    assert main([*run_args, "--name", "de-zh-16", "--overwrite"]) == 0
    assert main([*run_args, "--name", "de-zh-12", "--limit", "12", "--overwrite",
                 "--adapter", str(tmp_path / "x")]) == 0
    runs = [str(out_dir / "de-zh-16"), str(out_dir / "de-zh-12")]
    capsys.readouterr()
    assert main(["compare", *runs, "--output", str(tmp_path / "c"), "--no-static"]) == 2
    err = capsys.readouterr().err
    assert "different data" in err and "sentences per language" in err
    assert main(["compare", *runs, "--output", str(tmp_path / "c"), "--no-static",
                 "--allow-different-data"]) == 0
    assert "sentences per language" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "c")]) == 2
    assert "is a comparison, not a run" in capsys.readouterr().err


def test_report_on_a_directory_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no manifest.json: not a finished layer-analysis run" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text('{"a": 1}')
    assert main(["report", str(tmp_path)]) == 2
    assert "not a layer-analysis run manifest" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text('{"model": {"name": "m"}, "data": {}}')
    assert main(["report", str(tmp_path)]) == 2
    assert "has no readable results" in capsys.readouterr().err


def test_argparse_errors_exit_nonzero(capsys):
    assert main(["run", "--normalisations", "zscore"]) == 2
    assert "invalid choice: 'zscore'" in capsys.readouterr().err


COMMANDS = {  # each command's required arguments
    "run": ["run"], "lens": ["lens"], "neurons": ["neurons"],
    "evaluate": ["evaluate", "--languages", "de"],
    "mine": ["mine", "a.txt", "b.txt", "--source-language", "de", "--target-language", "en"],
    "intervene": ["intervene", "steer", "--language", "el"],
    "train": ["train", "--mixture", "alpaca_en[:4]", "--output", "o"],
    "sweep": ["sweep", "--languages", "el", "--output", "o"], "allocate": ["allocate", "law.json"]}
BAD_NUMBERS = [  # command, option, value, what the message says after "argument OPTION: "
    ("run", "--limit", "0", "must be at least 1, got 0"),
    ("run", "--limit", "-3", "must be at least 1, got -3"),
    ("run", "--batch-size", "inf", "expected a whole number, got 'inf'"),
    ("run", "--sink-ratio", "nan", "must be a finite number above 1, got nan"),
    ("run", "--sink-ratio", "inf", "must be a finite number above 1, got inf"),
    ("run", "--max-length", "1", "must be at least 2, got 1"),
    ("run", "--bootstrap", "0", "must be at least 1"),
    ("run", "--seed", "-1", "must be in [0, 4294967295], got -1"),
    ("run", "--projection-layer", "-1", "must be at least 0"),
    ("mine", "--k", "0", "must be at least 1"),
    ("mine", "--max-length", "0", "must be at least 2"),
    ("mine", "--layer", "-2", "must be at least 0"),
    ("lens", "--tuned-steps", "-1", "must be at least 0"),
    ("lens", "--positions", "0", "must be at least 1"),
    ("lens", "--top-k", "nan", "expected a whole number"),
    ("lens", "--concepts", "0", "must be at least 1"),
    ("lens", "--limit", "-1", "must be at least 0"),
    ("lens", "--shots", "-1", "must be at least 0"),
    ("neurons", "--top-rate", "1.5", "must be in (0, 1), got 1.5"),
    ("neurons", "--top-rate", "nan", "must be a finite number in (0, 1), got nan"),
    ("neurons", "--filter-rate", "0", "must be in (0, 1), got 0.0"),
    ("neurons", "--bar-rate", "inf", "must be a finite number"),
    ("neurons", "--limit", "0", "must be at least 1"),
    ("intervene", "--strengths", "1,inf", "must be a finite number in [-1000, 1000], got inf"),
    ("intervene", "--strengths", "nan", "must be a finite number"),
    ("intervene", "--fit-sentences", "1", "must be at least 2"),
    ("intervene", "--eval-sentences", "0", "must be at least 2"),
    ("intervene", "--max-new-tokens", "0", "must be at least 1"),
    ("train", "--lr", "inf", "must be a finite number in (0, 1], got inf"),
    ("train", "--lr", "nan", "must be a finite number in (0, 1], got nan"),
    ("train", "--lr", "0", "must be in (0, 1], got 0.0"),
    ("train", "--lr", "1e6", "must be in (0, 1], got 1000000.0"),
    ("train", "--lora-dropout", "1.5", "must be in [0, 1), got 1.5"),
    ("train", "--warmup", "1", "must be in [0, 1), got 1.0"),
    ("train", "--epochs", "0", "must be above 0, got 0.0"),
    ("train", "--batch-size", "0", "must be at least 1"),
    ("train", "--max-steps", "-4", "must be at least 1"),
    ("train", "--align-temperature", "0", "must be above 0"),
    ("train", "--max-length", "4", "must be at least 8"),
    ("evaluate", "--limit", "0", "must be at least 1"),
    ("evaluate", "--limit", "-5", "must be at least 1"),
    ("evaluate", "--batch-size", "0", "must be at least 1"),
    ("evaluate", "--max-new-tokens", "0", "must be at least 1"),
    ("sweep", "--sizes", "0,-5", "must be at least 0, got -5"),
    ("sweep", "--eval-sentences", "0", "must be at least 1"),
    ("sweep", "--xquad", "-1", "must be at least 0"),
    ("sweep", "--lr", "nan", "must be a finite number"),
    ("allocate", "--budget", "-1", "must be at least 0"),
    ("allocate", "--step", "0", "must be at least 1"),
]


@pytest.mark.parametrize(("command", "option", "value", "message"), BAD_NUMBERS,
                         ids=[f"{c}{o}={v}" for c, o, v, _ in BAD_NUMBERS])
def test_numeric_options_are_checked_before_any_model_loads(command, option, value, message,
                                                             capsys, monkeypatch):
    import transformers

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", load)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", load)
    assert main([*COMMANDS[command], f"{option}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {message}" in err, err
    assert err.count("error:") == 1 and "Traceback" not in err


def test_limits_take_all_and_numbers_keep_their_type():
    from layer_analysis.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "--limit", "all"]).limit is None
    assert parser.parse_args(["evaluate", "--languages", "de", "--limit", "ALL"]).limit is None
    assert parser.parse_args(["intervene", "map", "--language", "el",
                              "--strengths", "0.5, -2"]).strengths == (0.5, -2.0)
    assert parser.parse_args(["sweep", "--languages", "el", "--output", "o",
                              "--sizes", "0,250"]).sizes == (0, 250)


ALL_COMMANDS = {**COMMANDS, "report": ["report", "r"], "compare": ["compare", "a", "b"],
                "fit-law": ["fit-law", "s"], "allocate": ["allocate", "law.json", "--budget", "9"],
                "transfer": ["transfer"], "correlate": ["correlate", "r", "--scores", "s",
                                                        "--output", "o"],
                "transfer-compare": ["transfer-compare", "a", "b", "--output", "o"],
                "export-mexa": ["export-mexa", "r"], "patch": ["patch"]}
LOADS_A_MODEL = ("run", "lens", "neurons", "intervene", "mine", "train", "evaluate", "sweep",
                 "transfer", "patch")
RUN_WRITERS = ("run", "lens", "neurons", "intervene", "mine", "transfer", "patch")  # OUTPUT/NAME
STATISTICS = ("correlate", "transfer-compare")  # resampled, but load no model
SHARED = {  # flag: (dest, what "VALUE" parses to, or None for a switch; commands taking it)
    "--model": ("model", ("m", "m"), LOADS_A_MODEL),
    "--device": ("device", ("cuda:1", "cuda:1"), LOADS_A_MODEL),
    "--dtype": ("dtype", ("bfloat16", "bfloat16"), LOADS_A_MODEL),
    "--limit": ("limit", ("7", 7), ("run", "lens", "neurons", "evaluate", "transfer")),
    "--no-progress": ("no_progress", None, LOADS_A_MODEL),
    "--no-static": ("no_static", None, ("run", "report", "compare", "lens", "neurons",
                                        "intervene", "fit-law", "allocate", "patch")),
    "--output": ("output", ("o", Path("o")), tuple(c for c in ALL_COMMANDS if c != "report")),
    "--name": ("name", ("n", "n"), RUN_WRITERS),
    "--overwrite": ("overwrite", None, (*RUN_WRITERS, "compare", "fit-law", "allocate",
                                        "correlate")),
    "--adapter": ("adapter", ("a", "a"), RUN_WRITERS),
    "--batch-size": ("batch_size", ("3", 3), LOADS_A_MODEL),
    "--seed": ("seed", ("3", 3), ("run", "lens", "neurons", "intervene", "train", "sweep",
                                  "transfer", "patch", *STATISTICS)),
    "--bootstrap": ("bootstrap", ("3", 3), ("run", "lens", "neurons", "intervene", "transfer",
                                            "patch", *STATISTICS)),
    "--languages": ("languages", ("de,el", "de,el"), ("run", "lens", "neurons", "train",
                                                      "evaluate", "sweep", "transfer")),
}


def _options(command: str) -> dict[str, object]:
    from layer_analysis.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return {flag: action for action in sub._actions for flag in action.option_strings}


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_every_command_shares_one_vocabulary(command):
    """A shared flag means the same in every command that has it (same dest, same parsed
    value), and every command that could take it does."""
    from layer_analysis.cli import build_parser

    options = _options(command)
    parser = build_parser()
    for flag, (dest, parsed, commands) in SHARED.items():
        if command not in commands:
            assert flag not in options, f"{command} {flag} is not in the table of shared flags"
            continue
        assert flag in options, f"{command} lacks {flag}"
        assert options[flag].dest == dest, (command, flag)
        given = [flag] if parsed is None else [flag, parsed[0]]
        args = parser.parse_args([*ALL_COMMANDS[command], *given])
        assert getattr(args, dest) == (True if parsed is None else parsed[1]), (command, flag)
        if parsed is None:
            assert getattr(parser.parse_args(ALL_COMMANDS[command]), dest) is False


@pytest.mark.parametrize(("command", "old", "new", "value"), [
    ("lens", "--sentences", "limit", 7), ("neurons", "--sentences", "limit", 7)])
def test_old_spellings_still_work_with_a_notice(command, old, new, value, capsys):
    from layer_analysis.cli import build_parser

    args = build_parser().parse_args([*ALL_COMMANDS[command], old, str(value)])
    assert getattr(args, new) == value
    flag = "--" + new.replace("_", "-")
    assert f"note: {old} is deprecated; use {flag}" in capsys.readouterr().err
    assert old not in build_parser()._subparsers._group_actions[0].choices[command].format_help()


def test_lens_says_its_limit_changed_meaning(capsys):
    from layer_analysis.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["lens", "--limit", "5", "--concepts", "9"])
    assert (args.limit, args.concepts) == (5, 9)
    assert "lens --limit counts the running-text sentences" in capsys.readouterr().err
    assert parser.parse_args(["lens"]).limit == 50 and capsys.readouterr().err == ""


def test_the_library_check_is_the_one_the_options_use():
    from layer_analysis.probe.checks import COUNT, RATE, SHARE, check_number
    from layer_analysis.probe.errors import DataError

    assert check_number(3, "--limit", COUNT) == 3 and check_number(0.0, "dropout", SHARE) == 0.0
    for value, valid in ((0, COUNT), (2.5, COUNT), (True, COUNT), (float("nan"), RATE),
                         (float("inf"), SHARE), (1.0, SHARE), (0.0, RATE)):
        with pytest.raises(DataError, match=r"^x must be"):
            check_number(value, "x", valid)


def test_bad_data_file_through_the_console_script(tmp_path):
    (tmp_path / "eng_Latn.txt").write_bytes(b"fine\nbroken \xc3\x28\n")
    (tmp_path / "deu_Latn.txt").write_bytes(b"gut\nkaputt\n")
    result = subprocess.run(
        [sys.executable, "-m", "layer_analysis", "run", "--data", str(tmp_path), "--model", "unused"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "eng_Latn.txt, line 2: not valid UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_list_commands(capsys):
    assert main(["list-models"]) == 0
    assert "gemma3-270m (default)" in capsys.readouterr().out
    assert main(["list-data"]) == 0
    assert "flores-devtest" in capsys.readouterr().out


def test_two_processes_running_one_key_both_succeed(tiny_llama_dir, tmp_path):
    """Two identical runs at once: one extracts, the other waits for it and loads."""
    import os

    command = [sys.executable, "-m", "layer_analysis", "run", "--model", str(tiny_llama_dir),
               "--languages", "en,de", "--limit", "24", "--output", str(tmp_path), "--no-progress",
               "--device", "cpu", "--projection", "none", "--bootstrap", "50", "--no-static",
               "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*command, "--name", f"r{i}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum("loaded from cache" in out for out, _ in outputs) == 1
    tables = [pd.read_parquet(tmp_path / f"r{i}" / "results.parquet") for i in range(2)]
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_a_failed_write_leaves_no_run_that_looks_complete(run_args, out_dir, capsys, monkeypatch):
    import errno

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    assert main([*run_args, "--name", "full"]) == 2
    assert "could not write" in capsys.readouterr().err
    run = out_dir / "full"
    assert not (run / "manifest.json").exists() and not list(run.glob("*.tmp"))
    assert not list(run.glob(".*.tmp"))


def test_compare_says_when_the_runs_settings_differ():
    from pathlib import Path

    from layer_analysis.probe.runs import RunResults, setting_differences

    def run(name, sinks, dtype):
        manifest = {"extraction": {"poolings": ["mean"], "template": None, "span": "sentence",
                                   "max_length": 256, "sinks": {"mode": sinks}, "sink_ratio": 10.0},
                    "model": {"name": name, "dtype": dtype}}
        return RunResults(Path(name), manifest, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())

    assert setting_differences([run("a", "exclude", "float32"), run("b", "exclude", "float32")]) == []
    [line] = setting_differences([run("a", "exclude", "float32"), run("b", "keep", "float32"),
                                  run("c", "exclude", "float32")])
    assert "sinks 'keep' vs 'exclude'" in line and line.startswith("b vs a")
    [line] = setting_differences([run("a", "exclude", "float32"), run("b", "exclude", "bfloat16")])
    assert "dtype 'bfloat16' vs 'float32'" in line


def test_every_requested_pooling_is_analysed(run_args, out_dir, tmp_path, tiny_llama_dir,
                                             capsys):
    from peft import LoraConfig, get_peft_model

    from layer_analysis.probe.models import load_model

    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base.model, lora).save_pretrained(tmp_path / "x")
    poolings = ["mean", "last", "weighted"]
    for name, extra in (("pooled-a", []), ("pooled-b", ["--adapter", str(tmp_path / "x")])):
        assert main([*run_args, "--name", name, "--pooling", *poolings, "--bootstrap", "50",
                     *extra]) == 0
    printed = capsys.readouterr().out  # one printed table per pooling, never their average
    assert all(printed.count(f"[{p} pooling]") == 2 for p in poolings)
    run = out_dir / "pooled-a"
    table = pd.read_parquet(run / "results.parquet")
    assert sorted(set(table.pooling)) == sorted(poolings)
    # each pooling has its own numbers (last-token states differ from the mean's)
    p1 = table[(table.metric == "p@1") & (table.normalisation == "raw")]
    by_pooling = {p: rows.sort_values(["source", "target", "layer"]).value.to_numpy()
                  for p, rows in p1.groupby("pooling")}
    assert len({tuple(v) for v in by_pooling.values()}) > 1
    assert sorted(set(pd.read_csv(run / "mexa.csv").pooling)) == sorted(poolings)
    assert sorted(set(pd.read_csv(run / "cka.csv").pooling)) == sorted(poolings)
    assert sorted(set(pd.read_csv(run / "projection.csv").pooling)) == sorted(poolings)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["analysis"]["poolings"] == poolings
    html = (run / "report.html").read_text()
    assert "(last)" in html and "projection_weighted" in html and "cka_layers_last" in html
    assert main(["compare", str(run), str(out_dir / "pooled-b"), "--output",
                 str(tmp_path / "cmp"), "--no-static"]) == 0
    compared = tmp_path / "cmp"
    assert sorted(set(pd.read_parquet(compared / "results.parquet").pooling)) == sorted(poolings)
    assert sorted(set(pd.read_csv(compared / "paired.csv").pooling)) == sorted(poolings)
    assert sorted(set(pd.read_csv(compared / "cka.csv").pooling)) == sorted(poolings)


def test_two_runs_exports_carry_their_model_and_run(dashboard_runs, tmp_path, monkeypatch):
    """Figure titles, PNG/PDF names, the report's camera-button names and its peaks line name
    the model and the run: two runs' exports never share a title or a file name (the old
    figures/FIGURE.png stays for a release, the same file)."""
    import shutil

    import plotly.io as pio

    import layer_analysis as la
    from layer_analysis.probe import report

    titles: dict[str, str] = {}

    def write_images(fig, file, **_):  # kaleido's work, without a browser: the names and titles
        for figure, path in zip(fig, file, strict=True):
            titles[Path(path).name] = figure.layout.title.text
            Path(path).write_bytes(b"drawn")

    monkeypatch.setattr(pio, "write_images", write_images)
    monkeypatch.setattr(report, "_use_browser", lambda: None)
    models = {}
    for name in ("base", "x-de"):
        shutil.copytree(dashboard_runs / name, tmp_path / name)
        assert main(["report", str(tmp_path / name)]) == 0
        models[name] = la.load(tmp_path / name).model
        figures = tmp_path / name / "figures"
        new, old = figures / f"{name}-heatmap_p@1.png", figures / "heatmap_p@1.png"
        assert new.exists() and old.samefile(new)
        label = f"{models[name]} · run {name}"
        assert label in titles[new.name]
        html = (tmp_path / name / "report.html").read_text()
        assert f"Peak layer of centered P@1 ({label})" in html
        assert f'"filename": "{name}-heatmap_p@1"' in html
        assert label in la.load(tmp_path / name).figures()["heatmap_p@1"].layout.title.text
    assert models["base"] != models["x-de"]
    assert titles["base-heatmap_p@1.png"] != titles["x-de-heatmap_p@1.png"]
    for name in ("base", "x-de"):  # every figure, as PNG and PDF, under its run's name too
        files = {p.name for p in (tmp_path / name / "figures").iterdir()}
        assert {f"{name}-{f}" for f in files if not f.startswith(f"{name}-")} == \
            {f for f in files if f.startswith(f"{name}-")}


def test_export_names_and_identity():
    from layer_analysis.probe import report

    assert report.export_name(Path("runs/base"), "heatmap_p@1", "png") == "base-heatmap_p@1.png"
    assert report.export_name("x-de", "peaks", ".csv") == "x-de-peaks.csv"
    assert report.export_name(None, "curves", "pdf") == "curves.pdf"
    assert report.identity("gemma3-270m", Path("runs/g")) == "gemma3-270m · run g"
    assert report.identity("a vs b") == "a vs b"
    fig = report.labelled({"f": report.go.Figure(layout={"title": {"text": "T"}})}, "m · run r")
    assert fig["f"].layout.title.text == "T<br><sup>m · run r</sup>"
    again = report.labelled(fig, "m · run r")["f"].layout.title.text
    assert again.count("run r") == 1
    odd = report.label_figure(report.go.Figure(), "a<b & c", "name")
    assert odd.layout.title.text == "name<br><sup>a&lt;b &amp; c</sup>"
    assert report.label_figure(odd, "a<b & c").layout.title.text == odd.layout.title.text


def test_no_progress_hides_stage_lines_but_not_warnings(capsys):
    from layer_analysis.cli.options import stage_printer

    for progress in (True, False):
        say = stage_printer("lens", progress)
        say("translation -> German (1/2)")
        say("warning: the ridge chosen is the grid's largest")
        err = capsys.readouterr().err
        assert ("lens: translation -> German (1/2)" in err) == progress
        assert "lens: warning: the ridge chosen" in err


def test_run_prints_a_summary_not_a_table_for_many_languages(capsys):
    """At 205 languages the per-language table is unreadable: over 12 the run prints the spread
    per layer and the ranking at the mean's peak."""
    from layer_analysis.cli.probing import _print_table

    languages = [f"l{i:02d}_Latn" for i in range(15)]
    rows = [{"layer": layer, "source": "eng_Latn", "target": x, "metric": "p@1",
             "normalisation": "centered", "pooling": "mean",
             "value": (0.9 if layer == 2 else 0.1) * (i + 1) / 15}
            for layer in range(4) for i, x in enumerate(languages)]
    _print_table(pd.DataFrame(rows), "eng_Latn")
    out = capsys.readouterr().out
    assert "over 15 languages" in out and "l14_Latn" not in out.splitlines()[1]
    assert "at layer 2 (the mean's peak), highest: l14_Latn 0.900" in out
    assert "lowest: l00_Latn 0.060" in out
    _print_table(pd.DataFrame([r for r in rows if r["target"] in languages[:3]]), "eng_Latn")
    assert "l02_Latn" in capsys.readouterr().out.splitlines()[1]  # a few: the whole table
