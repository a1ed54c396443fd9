"""The Python API (``import layer_analysis as la``): the same tables as the CLI for the same
request, models and data as objects, ``la.load`` for every kind of run, the CLI's errors, and
the example script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

import layer_analysis as la
from layer_analysis.cli import build_parser, main
from layer_analysis.cli.options import DeprecatedOption
from layer_analysis.probe.data import REPO_ROOT, load_parallel
from layer_analysis.probe.errors import DataError, ModelError, ProbeError, StoreError

FAST = {"limit": 12, "bootstrap": 50, "device": "cpu", "static": False, "progress": False}
FAST_ARGS = ["--limit", "12", "--bootstrap", "50", "--device", "cpu", "--no-static",
             "--no-progress"]


@pytest.fixture(scope="module")
def sentences() -> dict[str, list[str]]:
    corpus = load_parallel("default").select(["en", "de", "zh"], 12)
    return {side.language: list(side.sentences) for side in corpus.sides.values()}


@pytest.fixture(scope="module")
def tsv(sentences, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "three.tsv"
    rows = zip(*sentences.values(), strict=True)
    path.write_text("\t".join(sentences) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api-runs")


@pytest.fixture(scope="module")
def cli_run(tiny_llama_dir, tsv, runs) -> Path:
    assert main(["run", "--model", str(tiny_llama_dir), "--data", str(tsv), *FAST_ARGS,
                 "--output", str(runs), "--name", "cli"]) == 0
    return runs / "cli"


def _loaded_pair(directory: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(str(directory)),
            AutoTokenizer.from_pretrained(str(directory)))


def test_import_stays_cheap_and_la_train_is_the_function():
    code = ("import sys, layer_analysis as la; print('torch' in sys.modules); "
            "import layer_analysis.train.loop; print(callable(la.train), la.train.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "layer_analysis.api"]
    assert {"align", "lens", "neurons", "intervene", "mine", "train", "evaluate", "fit_law",
            "allocate", "load"} <= set(dir(la))


def test_align_on_objects_equals_the_cli_on_files(tiny_llama_dir, sentences, tsv, runs, cli_run):
    """A loaded (model, tokenizer) pair with a dict, a DataFrame, and the model's path with
    the data file all give the CLI's table, to the last digit."""
    expected = pd.read_parquet(cli_run / "results.parquet")
    model, tokenizer = _loaded_pair(tiny_llama_dir)
    in_memory = la.align(sentences, model=model, tokenizer=tokenizer, output=runs,
                         name="objects", **FAST)
    pd.testing.assert_frame_equal(in_memory.table, expected)
    as_pair = la.align(pd.DataFrame(sentences), model=(model, tokenizer), output=runs,
                       name="frame", **FAST)
    pd.testing.assert_frame_equal(as_pair.table, expected)
    named = la.align(str(tsv), model=str(tiny_llama_dir), output=runs, name="named", **FAST)
    pd.testing.assert_frame_equal(named.table, expected)
    assert in_memory.manifest["model"]["identity"]["weights"]  # the store keys on the weights
    assert in_memory.manifest["command"][0] == "layer_analysis.align"
    assert in_memory.directory == runs / "objects" and in_memory.kind == "alignment"


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory) -> dict[str, Path]:
    """The smallest inputs of lens, intervene, mine and transfer, from the shipped sentences
    only: a word list, held-out sentences, two mining files, a SIB-200 layout."""
    from test_transfer import write_sib

    root = tmp_path_factory.mktemp("small-inputs")
    words = root / "words.tsv"
    words.write_text("eng_Latn\tdeu_Latn\n" + "".join(f"w{i}\tx{i}\n" for i in range(8)))
    corpus = load_parallel("default").select(["en", "de"])
    held_out = root / "held-out"
    held_out.mkdir()
    files = {"words": words, "held_out": held_out,
             "sib": write_sib(root / "sib", ("eng_Latn", "deu_Latn"), (12, 3, 6))}
    for side in corpus.sides.values():
        (held_out / f"{side.language}.txt").write_text("\n".join(side.sentences[-2:]) + "\n")
        files[side.language] = root / f"{side.language}.txt"
        files[side.language].write_text("\n".join(side.sentences[:8]) + "\n")
    return files


def _call(function, *args, **options):
    """``function`` with the options it takes (mine and transfer write no static figures)."""
    import inspect

    taken = inspect.signature(function).parameters
    return function(*args, **{k: v for k, v in options.items() if k in taken})


LOADED_MODEL_CALLS = {  # each command at its smallest, the model given by ``given``
    "lens": lambda given, files, common: _call(
        la.lens, **given, languages="de", source="en", task=["repetition"], words=files["words"],
        limit=0, bootstrap=10, **common),
    "patch": lambda given, files, common: _call(
        la.patch, **given, pair=[("de", "fr", "es", "en")], mean_languages="de,es", layers=[4],
        concepts=5, shots=1, bootstrap=10, **common),
    "neurons": lambda given, files, common: _call(
        la.neurons, **given, languages="en,de", data="default", limit=6, eval_sentences=0,
        bootstrap=10, **common),
    "intervene": lambda given, files, common: _call(
        la.intervene, "steer", **given, language="de", fit_data="default", fit_sentences=4,
        eval_data=str(files["held_out"]), eval_sentences=2, max_new_tokens=2, bootstrap=10,
        strengths=[1], **common),
    "mine": lambda given, files, common: _call(
        la.mine, files["deu_Latn"], files["eng_Latn"], source_language="de",
        target_language="en", **given, **common),
    "transfer": lambda given, files, common: _call(
        la.transfer, **given, data=str(files["sib"]), languages="de,en", layers="1,3",
        bootstrap=10, **common),
    "evaluate": lambda given, files, common: la.evaluate(  # writes no run: its scores only
        **given, languages="de", data=str(files["held_out"]), limit=2, max_new_tokens=2,
        device="cpu", progress=False),
}


@pytest.mark.parametrize("command", LOADED_MODEL_CALLS)
def test_every_command_takes_a_loaded_model_as_align_does(command, tiny_llama_dir, small_inputs,
                                                          tmp_path):
    """Each command (and ``evaluate``) on the loaded (model, tokenizer), as a pair or with
    ``tokenizer=``, gives the table it gives on the model's directory; the manifest records the
    model in memory by the fingerprints of its weights and tokenizer, and the caller's
    tokenizer is left as it was (generation pads on the left)."""
    model, tokenizer = _loaded_pair(tiny_llama_dir)
    call = LOADED_MODEL_CALLS[command]
    common = {"device": "cpu", "static": False, "progress": False, "output": tmp_path}
    as_pair = list(LOADED_MODEL_CALLS).index(command) % 2 == 0
    given = {"model": (model, tokenizer)} if as_pair else {"model": model, "tokenizer": tokenizer}
    in_memory = call(given, small_inputs, {**common, "name": "in-memory"})
    named = call({"model": str(tiny_llama_dir)}, small_inputs, {**common, "name": "named"})
    pd.testing.assert_frame_equal(in_memory.table, named.table)
    identity = in_memory.manifest["model"]["identity"]
    assert identity["in_memory"] == str(tiny_llama_dir) == in_memory.model
    assert len(identity["weights"]) == len(identity["tokenizer"]) == 64
    assert "directory" in named.manifest["model"]["identity"]
    if command != "evaluate":
        assert in_memory.manifest["command"][0] == f"layer_analysis.{command}"
    assert tokenizer.padding_side == "right"


def test_result_holds_tables_figures_and_a_short_repr(tiny_llama_dir, runs, cli_run):
    result = la.load(cli_run)
    assert set(result.tables) == {"results", "cka", "projection", "mexa"}
    assert sorted(result.languages) == ["deu_Latn", "eng_Latn", "zho_Hans"]
    figures = result.figures()
    assert figures and all(isinstance(f, go.Figure) for f in figures.values())
    assert {"heatmap_p@1", "curves_p@1", "projection"} <= set(figures)
    peak = result.peak_layer
    table = result.table
    rows = table[(table.metric == "p@1") & (table.normalisation == "centered")]
    assert peak in set(rows.layer)
    text = repr(result)
    assert text.startswith("<Result alignment") and f"peak layer {peak}" in text
    assert str(tiny_llama_dir) in text and "zho_Hans" in text and len(text) < 500


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: la.align({"en": ["a", "b"], "de": ["x"]}), DataError, "line-aligned"),
    (lambda: la.align({"en": ["a", "b"], "klingon": ["x", "y"]}), DataError,
     "unknown language 'klingon'"),
    (lambda: la.align({"en": ["a", "b"], "eng": ["x", "y"]}), DataError,
     "more than one column for eng_Latn"),
    (lambda: la.align({"en": "a b", "de": "x y"}), DataError, "a list of sentences"),
    (lambda: la.align(pd.DataFrame({"en": ["a", " "], "de": ["x", "y"]})), DataError,
     "dataframe, en, sentence 1: empty"),
    (lambda: la.align(42), DataError, "data must be a data set name or path"),
    (lambda: la.align(projection="tsne"), DataError, "unknown projection 'tsne'"),
    (lambda: la.evaluate(languages="de", task="summary"), DataError,
     "unknown evaluation task 'summary'"),
    (lambda: la.align(pivot="xx"), DataError, r"unknown language 'xx' \(--pivot\)"),
    (lambda: la.align(name="../up"), DataError, "must be a plain name"),
    (lambda: la.align(normalisations=["nope"]), DataError, "unknown normalisation"),
    (lambda: la.align(model="/no/such/model"), ModelError, "does not exist"),
    (lambda: la.lens(languages="en"), DataError, "English is the reference"),
    (lambda: la.neurons(languages="en"), DataError, "at least two different languages"),
    (lambda: la.intervene("steer", language="en"), DataError, "choose another --language"),
    (lambda: la.train(output="x"), DataError, "pass either --recipe"),
    (lambda: la.fit_law("sweep", metric="bleu"), DataError, "unknown metric 'bleu'"),
    (lambda: la.allocate("law.json", budget=-1), DataError, "--budget must be at least 0"),
    (lambda: la.allocate("law.json", budget=10, step=0), DataError, "--step must be at least 1"),
    (lambda: la.load("/no/such/run"), StoreError, "does not exist"),
])
def test_bad_input_raises_the_cli_s_typed_error_before_any_model(call, error, message,
                                                                  monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("layer_analysis.probe.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(error, match=message):
        call()


def test_the_cli_says_the_same(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--pivot", "xx"]) == 2
    assert "unknown language 'xx' (--pivot)" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"unknown language 'xx' \(--pivot\)"):
        la.align(pivot="xx")


def test_a_loaded_model_with_contradicting_options_is_refused(tiny_llama_dir, sentences):
    model, tokenizer = _loaded_pair(tiny_llama_dir)  # float32 on the CPU
    with pytest.raises(ModelError, match="dtype='bfloat16' was asked for"):
        la.align(sentences, model=model, tokenizer=tokenizer, dtype="bfloat16")
    with pytest.raises(ModelError, match="quantize='8bit' cannot apply"):
        la.align(sentences, model=(model, tokenizer), quantize="8bit")
    with pytest.raises(ModelError, match="needs its tokenizer"):
        la.align(sentences, model=model)
    with pytest.raises(ModelError, match="adapter='x-de' cannot apply"):
        la.lens(model=(model, tokenizer), adapter="x-de")
    with pytest.raises(ModelError, match=r"device=.cuda. was asked for|CUDA is not available"):
        la.neurons(model=(model, tokenizer), device="cuda")
    with pytest.raises(DataError, match=r"layers \[9\] out of range"):  # counted in memory
        la.patch(model=(model, tokenizer), layers=[9], pair=[("de", "fr", "es", "en")])
    with pytest.raises(ModelError, match=r"la\.train takes the model by name or path"):
        la.train(model=model, output="x", recipe="coit", languages="de")


def test_same_option_names_and_defaults_as_the_commands():
    """Every option of each command is a parameter of its function, with the same default
    (``--no-X`` is ``X=True``; comma-separated lists are sequences)."""
    import inspect

    from layer_analysis.probe.languages import canonical

    renamed = {"no_static": "static", "no_progress": "progress"}
    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    commands = {"run": la.align, "lens": la.lens, "neurons": la.neurons,
                "intervene": la.intervene, "mine": la.mine, "train": la.train,
                "evaluate": la.evaluate, "transfer": la.transfer, "correlate": la.correlate,
                "patch": la.patch, "fit-law": la.fit_law, "allocate": la.allocate}
    for command, function in commands.items():
        parameters = inspect.signature(function).parameters
        for action in subparsers[command]._actions:
            if action.dest in ("help", "resume") or action.dest == "kind" \
                    or isinstance(action, DeprecatedOption):  # an old spelling of another
                continue
            name = renamed.get(action.dest, action.dest)
            assert name in parameters, f"{command} --{action.dest} has no parameter {name}"
            default, ours = action.default, parameters[name].default
            if action.dest in renamed:
                default = not default
            if isinstance(default, str) and "," in default:  # neurons' languages, strengths
                default = tuple(default.split(","))
                ours = tuple(str(x).split("_")[0] if command == "neurons" else str(x)
                             for x in ours)
                if command == "intervene":
                    default = tuple(float(x) for x in default)
                    ours = tuple(float(x) for x in ours)
            if isinstance(default, list):
                default = tuple(default)
            if action.dest == "pivot":
                default, ours = canonical(default), canonical(ours)
            if ours is inspect.Parameter.empty:
                assert action.required or action.option_strings == [], (command, name)
                continue
            assert ours == default, (command, name, ours, default)


def test_load_reads_every_kind(dashboard_runs, tiny_llama_dir, tmp_path, shared_data):
    """Each function on the tiny model (and its x-de adapter for the comparisons) at the
    smallest sizes; every run directory reads back with tables and figures."""
    from layer_analysis.probe.lens_run import compare_lens_runs

    models = {"base": str(tiny_llama_dir), "x-de": str(dashboard_runs.parent / "x-de")}
    common = {"device": "cpu", "static": False, "progress": False, "output": tmp_path / "runs"}
    kinds = {"alignment": la.load(dashboard_runs / "base")}
    assert main(["compare", str(dashboard_runs / "base"), str(dashboard_runs / "x-de"),
                 "--output", str(tmp_path / "cmp"), "--no-static"]) == 0
    kinds["comparison"] = la.load(tmp_path / "cmp")

    neuron_runs = [la.neurons(model=model, languages="en,de", data="default", limit=6,
                              eval_data="flores-devtest", eval_sentences=2, bootstrap=10,
                              name=f"neurons-{key}", **common) for key, model in models.items()]
    kinds["neurons"] = neuron_runs[0]
    assert main(["compare", *(str(r.directory) for r in neuron_runs), "--output",
                 str(tmp_path / "ncmp"), "--no-static"]) == 0
    kinds["neuron-comparison"] = la.load(tmp_path / "ncmp")

    words = tmp_path / "words.tsv"
    words.write_text("eng_Latn\tdeu_Latn\n" + "".join(f"w{i}\tx{i}\n" for i in range(8)))
    lens_runs = [la.lens(model=model, languages="de", source="en", task=["repetition"],
                         words=words, limit=0, bootstrap=10, name=f"lens-{key}", **common)
                 for key, model in models.items()]
    kinds["lens"] = lens_runs[0]
    compare_lens_runs([r.directory for r in lens_runs], tmp_path / "lcmp", static=False)
    kinds["lens-comparison"] = la.load(tmp_path / "lcmp")

    kinds["intervention"] = la.intervene(
        "steer", language="de", model=models["base"], fit_data="default", fit_sentences=4,
        eval_sentences=2, max_new_tokens=2, bootstrap=10, strengths=[1], name="steer", **common)

    corpus = load_parallel("default").select(["en", "de"], 8)
    files = {}
    for side in corpus.sides.values():
        files[side.language] = tmp_path / f"{side.language}.txt"
        files[side.language].write_text("\n".join(side.sentences) + "\n")
    kinds["mining"] = la.mine(files["deu_Latn"], files["eng_Latn"], source_language="de",
                              target_language="en", model=models["base"], name="mine",
                              **{k: v for k, v in common.items() if k != "static"})

    alpaca = tmp_path / "tiny.jsonl"
    alpaca.write_text(json.dumps({"instruction": "Name a fruit.", "input": "",
                                  "output": "apple"}) + "\n")
    kinds["training"] = la.train(mixture=str(alpaca), model=models["base"],
                                 output=tmp_path / "trained", max_steps=2, batch_size=1,
                                 device="cpu", progress=False)
    scores = tmp_path / "eval" / "scores.json"
    evaluated = la.evaluate(models["base"], languages="de", limit=2, max_new_tokens=2,
                            device="cpu", output=scores, progress=False)
    kinds["evaluation"] = la.load(scores)

    for expected, result in kinds.items():
        assert result.kind == ("lens" if expected == "lens-comparison" else expected)
        assert not result.table.empty, expected
        figures = result.figures()
        assert all(isinstance(f, go.Figure) for f in figures.values()), expected
        assert bool(figures) == (expected not in ("mining", "evaluation")), expected
        assert repr(result).startswith(f"<Result {result.kind}"), expected
        if result.directory is not None and expected != "evaluation":  # read back: the same
            again = la.load(result.directory)
            assert again.kind == result.kind and again.table.equals(result.table), expected
    assert kinds["neurons"].languages == ["eng_Latn", "deu_Latn"]
    assert set(kinds["neurons"].tables) == {"counts", "overlap", "deactivation"}
    assert kinds["mining"].tables["scores"].candidates.iloc[0] == len(kinds["mining"].table)
    assert kinds["training"].manifest["steps"] == 2 and "loss" in kinds["training"].table
    pd.testing.assert_frame_equal(evaluated.table, kinds["evaluation"].table)
    assert list(kinds["evaluation"].tables["predictions"].target) == ["deu_Latn"] * 2


def test_fit_law_and_allocate_write_what_the_commands_write(tmp_path, capsys):
    """la.fit_law and la.allocate on the commands' inputs: the same files (caps as a dict or
    the command line's string), read back by la.load with the allocation's figure."""
    rows = [{"language": x, "pairs": n, "similarity": s, "chrf++": 20 + s * 10 + 3 * (n > 0)
             + 0.004 * n} for x, s in (("deu_Latn", 0.8), ("zho_Hans", 0.4), ("ell_Grek", 0.6))
            for n in (0, 250, 500, 1000, 2000)]
    pd.DataFrame(rows).to_csv(tmp_path / "sweep.csv", index=False)
    assert main(["fit-law", str(tmp_path / "sweep.csv"), "--no-static", "--output",
                 str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    law = la.fit_law(tmp_path / "sweep.csv", static=False)
    assert law.directory == tmp_path / "law" and law.kind == "law"
    for name in ("law.json", "law.csv"):
        assert (tmp_path / "law" / name).read_text() == (tmp_path / "cli" / name).read_text()
    assert law.manifest["best"] in printed and law.table.equals(la.load(tmp_path / "cli").table)
    assert law.manifest["verdict"] and all(line in printed for line in law.manifest["verdict"])
    assert set(law.table.family) == {"power", "log", "saturating", "no size effect"}
    with pytest.raises(StoreError, match="pass --overwrite"):
        la.fit_law(tmp_path / "sweep.csv")
    assert main(["allocate", str(tmp_path / "cli" / "law.json"), "--budget", "1000", "--caps",
                 "de=500,zh=500,el=500", "--no-static"]) == 0
    capsys.readouterr()
    alloc = la.allocate(law.directory / "law.json", budget=1000, static=False,
                        caps={"de": 500, "zh": 500, "el": 500})
    assert alloc.directory == tmp_path / "law" / "allocation" and alloc.kind == "allocation"
    cli = tmp_path / "cli" / "allocation"
    for name in ("allocated.spec", "uniform.spec"):
        assert (alloc.directory / name).read_text() == (cli / name).read_text()
    saved = json.loads((cli / "allocation.json").read_text())
    assert {**alloc.manifest, "law": saved["law"]} == saved  # the law's path is another
    assert set(alloc.table.allocation) == {"allocated", "uniform"}
    assert alloc.table.groupby("allocation").pairs.sum().le(1000).all()
    assert alloc.table.cap.eq(500).all()
    assert set(alloc.figures()) == {"allocation"} and not law.figures()
    for written, result in (("law.json", law), ("allocation/allocation.json", alloc)):
        again = la.load(tmp_path / "law" / written)  # the JSON written last names its directory
        assert (again.kind, again.directory) == (result.kind, result.directory)
        assert again.table.equals(result.table)
    assert repr(alloc).startswith(f"<Result allocation; model {alloc.manifest['family']} law of")
    same = la.allocate(law.directory / "law.json", budget=1000, static=False, overwrite=True,
                       caps="de=500,zh=500,el=500")
    assert same.table.equals(alloc.table)


def test_a_run_from_an_older_engine_says_so(dashboard_runs, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(dashboard_runs / "base", old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["engine"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    result = la.load(old)
    assert result.warnings and "engine version 1" in result.warnings[0]
    assert "engine version 1" in repr(result)
    assert not la.load(dashboard_runs / "base").warnings


def test_not_a_run_is_one_store_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a finished layer-analysis run"):
        la.load(tmp_path / "empty")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ProbeError, match="not an evaluation's scores file"):
        la.load(tmp_path / "x.json")


def test_quickstart_example_runs(tiny_llama_dir, tmp_path):
    env = {**os.environ, "LAYER_ANALYSIS_EXAMPLE_MODEL": str(tiny_llama_dir)}
    out = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "quickstart.py"),
                          "--output", str(tmp_path), "--device", "cpu", "--limit", "12"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "peak layer" in out.stdout
    assert (tmp_path / "quickstart" / "manifest.json").exists()


def test_the_command_line_s_spellings_are_accepted(tiny_llama_dir, sentences, runs):
    """A notebook user may write what the docs' commands write: one pooling or normalisation
    as a string, ``limit="all"``, ``layers="0-2"``; a wrong string is one typed error."""
    fast = {**FAST, "limit": "all"}
    result = la.align(sentences, model=str(tiny_llama_dir), output=runs, name="spellings",
                      pooling="last", normalisations="centered", layers="0-2", **fast)
    assert set(result.table.pooling) == {"last"} and set(result.table.normalisation) == {"centered"}
    assert sorted(set(result.table.layer)) == [0, 1, 2]
    assert result.manifest["data"]["sides"]["eng_Latn"] == len(sentences["eng_Latn"])
    both = la.align(sentences, model=str(tiny_llama_dir), output=runs, name="two-poolings",
                    pooling="mean,last", **FAST)
    assert set(both.table.pooling) == {"mean", "last"}
    assert "mean pooling" in repr(both)  # the peak layer says which pooling it is of
    with pytest.raises(DataError, match="a count must be a whole number or 'all'"):
        la.align(sentences, model=str(tiny_llama_dir), limit="some")
    with pytest.raises(DataError, match="layers must look like"):
        la.align(sentences, model=str(tiny_llama_dir), layers="first")


def test_a_tokenizer_s_fingerprint_ignores_the_truncation_and_padding_a_call_left(tokenizer):
    """A call with truncation and fixed padding leaves them set on the fast tokenizer's backend:
    the same tokenizer keeps its identity (and a run its store key) whatever ran before; a
    tokenizer that tokenizes differently does not share it."""
    import copy

    from tokenizers import Tokenizer, normalizers
    from transformers import PreTrainedTokenizerFast

    from layer_analysis.api import tokenizer_fingerprint

    tok = copy.deepcopy(tokenizer)
    before = tokenizer_fingerprint(tok)
    tok(["a sentence", "another"], truncation=True, max_length=16, padding="max_length")
    assert tok.backend_tokenizer.truncation is not None  # the state the fingerprint must skip
    assert tokenizer_fingerprint(tok) == before
    assert tok.backend_tokenizer.truncation is not None  # the caller's tokenizer is untouched
    lowercased = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    lowercased.normalizer = normalizers.Lowercase()
    other = PreTrainedTokenizerFast(tokenizer_object=lowercased, bos_token="<bos>",
                                    eos_token="<eos>", pad_token="<pad>")
    assert tokenizer_fingerprint(other) != before


def test_evaluate_s_scores_file_records_the_model(tiny_llama_dir, small_inputs, tmp_path):
    """The scores file carries the model's record (name and identity: for a loaded model the
    fingerprints of its weights and tokenizer), which la.load gives back; correlate still reads
    the file, and a scores file written before (no model) still loads."""
    from layer_analysis.probe.correlate import read_scores

    model, tokenizer = _loaded_pair(tiny_llama_dir)
    scores = tmp_path / "eval" / "scores.json"
    evaluated = la.evaluate(model, tokenizer=tokenizer, languages="de",
                            data=str(small_inputs["held_out"]), limit=2, max_new_tokens=2,
                            device="cpu", output=scores, progress=False)
    loaded = la.load(scores)
    assert loaded.model == evaluated.model == str(tiny_llama_dir)
    assert loaded.manifest["model"]["identity"] == evaluated.manifest["model"]["identity"]
    assert len(loaded.manifest["model"]["identity"]["weights"]) == 64
    pd.testing.assert_frame_equal(loaded.table, evaluated.table)  # the model is no column
    [table] = read_scores(scores)
    assert list(table.values) == ["deu_Latn"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps([{k: v for k, v in record.items() if k != "model"}
                               for record in json.loads(scores.read_text())]))
    assert la.load(old).model is None and la.load(old).table.equals(loaded.table)


class _Captured(Exception):
    """Raised in place of a run: the request the function built."""


def _capture(monkeypatch, module: str, function: str) -> list:
    """Replace ``module.function`` (imported by the API at call time) by one that keeps its
    arguments and stops."""
    import importlib

    seen: list = []

    def stop(*args, **kwargs):
        seen.append(args)
        raise _Captured

    monkeypatch.setattr(importlib.import_module(module), function, stop)
    return seen


def test_list_parameters_take_one_item_or_the_command_line_s_string(monkeypatch, tmp_path):
    """What align, neurons and transfer already take: ``"a,b"`` and one item, in patch's
    layers and pair (one flat setting of four languages is one setting), lens's task,
    intervene's strengths, correlate's scores and train's lora_targets and align_layers."""
    patched = _capture(monkeypatch, "layer_analysis.probe.patch_run", "execute_patch")
    one = ("de", "fr", "es", "en")
    for layers, pair, expected_layers, settings in (
            ("2,3", one, (2, 3), [one]), (2, list(one), (2,), [one]),
            ("1-2", "de,fr,es,en", (1, 2), [one]),
            ([3], [one, "de,en,fr,es"], (3,), [one, ("de", "en", "fr", "es")])):
        with pytest.raises(_Captured):
            la.patch(layers=layers, pair=pair)
        request = patched[-1][0]
        assert request.layers == expected_layers and request.settings == settings
    with pytest.raises(DataError, match="layers must look like"):
        la.patch(layers="first")

    lensed = _capture(monkeypatch, "layer_analysis.probe.lens_run", "execute_lens")
    with pytest.raises(_Captured):
        la.lens(task="repetition")
    assert lensed[-1][0].tasks == ("repetition",)

    steered = _capture(monkeypatch, "layer_analysis.probe.intervene_run", "execute_intervention")
    for strengths, expected in (("1,2", (1.0, 2.0)), (2, (2.0,)), ([0.5, "3"], (0.5, 3.0))):
        with pytest.raises(_Captured):
            la.intervene("steer", language="de", strengths=strengths)
        assert steered[-1][0].strengths == expected
    with pytest.raises(DataError, match="expected a number, got 'x'"):
        la.intervene("steer", language="de", strengths="1,x")
    with pytest.raises(DataError, match="--strengths must be numbers"):
        la.intervene("steer", language="de", strengths=[None])

    correlated = _capture(monkeypatch, "layer_analysis.probe.correlate", "correlate_files")
    for scores, expected in (("runs/x", [Path("runs/x")]), (Path("runs/x"), [Path("runs/x")]),
                             (["runs/x", "runs/y"], [Path("runs/x"), Path("runs/y")])):
        with pytest.raises(_Captured):
            la.correlate("runs/a", scores=scores, output=tmp_path / "corr")
        assert correlated[-1][1] == expected

    trained = _capture(monkeypatch, "layer_analysis.train.loop", "train")
    alpaca = tmp_path / "tiny.jsonl"
    alpaca.write_text(json.dumps({"instruction": "Name a fruit.", "input": "",
                                  "output": "apple"}) + "\n")
    for targets, layers, expected_layers in (("q_proj,v_proj", "2", (2,)),
                                             (["q_proj", "v_proj"], 2, (2,)),
                                             ("q_proj,v_proj", [1, 2], (1, 2))):
        with pytest.raises(_Captured):
            la.train(mixture=str(alpaca), output=tmp_path / "out", lora_targets=targets,
                     align_layers=layers)
        config = trained[-1][0]
        assert config.lora_targets == ("q_proj", "v_proj")
        assert config.alignment.layers == expected_layers


def test_a_projection_layer_the_model_lacks_fails_before_it_loads(tiny_llama_dir, sentences,
                                                                   monkeypatch, capsys):
    """The tiny model has layers 0..4: --projection-layer 9 (or one that --layers does not
    keep) is refused from the config, before the weights load, in the API and the CLI."""
    monkeypatch.setattr("layer_analysis.probe.models.load_model",
                        lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(DataError, match=r"--projection-layer \[9\] out of range: this model "
                                        r"has layers 0\.\.4"):
        la.align(sentences, model=str(tiny_llama_dir), projection_layer=9, **FAST)
    with pytest.raises(DataError, match=r"--projection-layer 3 is not among the layers kept "
                                        r"\(--layers 0,1,2\)"):
        la.align(sentences, model=str(tiny_llama_dir), projection_layer=3, layers="0-2", **FAST)
    assert main(["run", "--model", str(tiny_llama_dir), "--projection-layer", "9",
                 *FAST_ARGS]) == 2
    assert "--projection-layer [9] out of range" in capsys.readouterr().err


def test_sentences_may_come_from_any_iterable(sentences):
    """A generator or an iterator per language is read once into the corpus (it was a raw
    TypeError); a number is one DataError."""
    from layer_analysis.api import as_corpus

    english, german = sentences["eng_Latn"], sentences["deu_Latn"]
    lazy = as_corpus({"en": (s for s in english), "de": iter(german),
                      "zh": pd.Series(sentences["zho_Hans"])})
    eager = as_corpus({"en": english, "de": german, "zh": sentences["zho_Hans"]})
    assert {k: s.sentences for k, s in lazy.sides.items()} == \
        {k: s.sentences for k, s in eager.sides.items()}
    with pytest.raises(DataError, match="each language maps to a list of sentences; 'de' maps "
                                        "to int"):
        la.align({"en": english, "de": 5})


def test_fit_law_takes_the_points_as_a_dataframe(tmp_path):
    """The sweep's table as a DataFrame: the law the CSV gives, its rows checked as the CSV's
    lines are; it needs output=; anything else is one DataError (it was pathlib's
    TypeError)."""
    rows = pd.DataFrame([{"language": x, "pairs": n, "similarity": s,
                          "chrf++": 20 + s * 10 + 3 * (n > 0) + 0.004 * n}
                         for x, s in (("deu_Latn", 0.8), ("zho_Hans", 0.4), ("ell_Grek", 0.6))
                         for n in (0, 250, 500, 1000, 2000)])
    rows.to_csv(tmp_path / "sweep.csv", index=False)
    from_csv = la.fit_law(tmp_path / "sweep.csv", static=False)
    from_frame = la.fit_law(rows, output=tmp_path / "frame-law", static=False)
    assert (tmp_path / "frame-law" / "law.json").read_text() == \
        (tmp_path / "law" / "law.json").read_text()
    assert from_frame.table.equals(from_csv.table)
    with pytest.raises(DataError, match="pass output="):
        la.fit_law(rows)
    with pytest.raises(DataError, match=r"unknown language 'xx' \(dataframe, row 2\)"):
        la.fit_law(rows.assign(language=["de", "zh", "xx"] * 5), output=tmp_path / "bad")
    gaps = rows.astype({"chrf++": object})
    gaps.loc[0, "chrf++"] = None  # an empty cell: the row is left out, as in a CSV
    assert la.fit_law(gaps, output=tmp_path / "gaps", static=False).kind == "law"
    with pytest.raises(DataError, match="sweep must be a sweep directory, a CSV or a "
                                        "DataFrame of points, got dict"):
        la.fit_law({"language": ["de"]})


def test_the_recorded_command_shows_objects_by_their_type(tiny_llama_dir):
    """A loaded model in the manifest's command is ``<ClassName>``, also inside the pair
    ``(model, tokenizer)`` (it was the model's module repr); plain values stay as they are."""
    from layer_analysis.api import _command

    model, tokenizer = _loaded_pair(tiny_llama_dir)
    command = _command(la.align, {"data": pd.DataFrame({"en": ["a"]}),
                                  "model": (model, tokenizer), "layers": [0, 2],
                                  "pooling": ("mean",), "tokenizer": None})
    assert command == ["layer_analysis.align", "data=<DataFrame>",
                       f"model=(<LlamaForCausalLM>, <{type(tokenizer).__name__}>)", "layers=[0, 2]"]
    assert _command(la.align, {"model": [model, tokenizer]})[1] == \
        f"model=[<LlamaForCausalLM>, <{type(tokenizer).__name__}>]"


def test_a_model_given_wrongly_is_told_precisely(tiny_llama_dir, sentences, monkeypatch):
    """model=None, a tuple of three, and (model, tokenizer) with tokenizer= again each get their
    own message (they said "needs its tokenizer" or "got tuple"); a list [model, tokenizer] is
    taken as the pair is."""
    from layer_analysis.api import _model
    from layer_analysis.probe.models import LoadedModel

    monkeypatch.setattr("layer_analysis.probe.models.load_model",
                        lambda *a, **k: pytest.fail("model loaded"))
    model, tokenizer = _loaded_pair(tiny_llama_dir)
    with pytest.raises(ModelError, match="model=None names no model: pass a name or path"):
        la.align(sentences, model=None)
    with pytest.raises(ModelError, match=r"model= as a tuple is the pair \(model, tokenizer\); "
                                         r"this one has 3 item\(s\)"):
        la.lens(model=(model, tokenizer, "extra"))
    with pytest.raises(ModelError, match="the tokenizer is given twice"):
        la.neurons(model=(model, tokenizer), tokenizer=tokenizer)
    with pytest.raises(ModelError, match="the tokenizer is given twice"):
        la.evaluate([model, tokenizer], tokenizer=tokenizer, languages="de", data="default")
    loaded = _model([model, tokenizer], None, "auto", "auto")
    assert isinstance(loaded, LoadedModel) and loaded.model is model


def test_la_gives_the_api_module_its_names_and_the_errors_in_a_fresh_session():
    """``la.DataError`` (without importing torch) and ``la.api.adopt_model`` (the docstring's
    example) work before any other use of the API; ``api.__all__`` holds every name ``la``
    gives (the API reference lists ``__all__``)."""
    from layer_analysis import API, api

    code = ("import sys, layer_analysis as la; from layer_analysis.probe import errors; "
            "print(la.DataError is errors.DataError, issubclass(la.StoreError, la.ProbeError), "
            "'torch' in sys.modules, callable(la.api.adopt_model))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False", "True"]
    assert set(API) | {"patch", "transfer", "correlate", "weights_fingerprint",
                       "tokenizer_fingerprint"} <= set(api.__all__)
    assert all(hasattr(api, name) for name in api.__all__)
    assert {"api", "DataError", "ModelError", "StoreError"} <= set(dir(la))
