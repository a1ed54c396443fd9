"""Who may write a directory, and what a run directory may make us read (issue 24, items 4-6):
one writer per directory, never into another kind, never over a finished run without
--overwrite, a file as --output refused before anything loads; activations verified against
the manifest's key, data and model; held-out sentences checked by content."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from layer_analysis.cli import main
from layer_analysis.probe.data import DATA_ROOT
from layer_analysis.probe.errors import StoreError
from layer_analysis.probe.files import writer_lock
from layer_analysis.probe.runs import (
    check_run_directory,
    directory_owner,
    load_activations,
    read_run,
    run_writer,
)

MISSING_MODEL = "/nonexistent/model"  # an error about it means the directory check came too late
MINE = ["mine", str(DATA_ROOT / "parallel" / "eng_Latn.txt"),
        str(DATA_ROOT / "parallel" / "deu_Latn.txt"), "--source-language", "en",
        "--target-language", "de", "--model", MISSING_MODEL]


def _tiny_run(model, output, name, *extra):
    return ["run", "--model", str(model), "--languages", "en,de", "--limit", "8", "--output",
            str(output), "--name", name, "--no-progress", "--device", "cpu", "--projection",
            "none", "--bootstrap", "20", "--no-static", *extra]


# ---------------------------------------------------------------- item 4: one writer, one kind


def test_compare_onto_an_existing_run_or_comparison_is_refused(dashboard_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    for name in ("base", "x-de"):
        shutil.copytree(dashboard_runs / name, runs / name)
    pair = [str(runs / "base"), str(runs / "x-de")]
    before = (runs / "base" / "results.parquet").read_bytes()
    # before: the comparison replaced base's results, exit 0
    assert main(["compare", *pair, "--output", str(runs / "base"), "--no-static"]) == 2
    assert "holds an alignment run" in capsys.readouterr().err
    assert (runs / "base" / "results.parquet").read_bytes() == before
    assert main(["compare", *pair, "--output", str(runs / "cmp"), "--no-static"]) == 0
    assert main(["compare", *pair, "--output", str(runs / "cmp"), "--no-static"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["compare", *pair, "--output", str(runs / "cmp"), "--no-static",
                 "--overwrite"]) == 0
    assert directory_owner(runs / "cmp") == ("compare", True)


def test_a_file_as_output_is_refused_before_anything_loads(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("not a directory\n")
    other = tmp_path / "other-sentences"  # held out from the shipped set
    other.mkdir()
    (other / "eng_Latn.txt").write_text("One.\nTwo.\nThree.\nFour.\n")
    (other / "deu_Latn.txt").write_text("Eins.\nZwei.\nDrei.\nVier.\n")
    # fit-law and allocate read their input first (a missing one is "no such file"): real ones
    pd.DataFrame([{"language": x, "pairs": n, "similarity": s, "chrf++": 20 + s * 10 + 0.004 * n}
                  for x, s in (("deu_Latn", 0.8), ("zho_Hans", 0.4), ("ell_Grek", 0.6))
                  for n in (0, 250, 500, 1000, 2000)]).to_csv(tmp_path / "sweep.csv", index=False)
    assert main(["fit-law", str(tmp_path / "sweep.csv"), "--no-static", "--output",
                 str(tmp_path / "law")]) == 0
    capsys.readouterr()
    commands = {
        "run": _tiny_run(MISSING_MODEL, file, "x"),
        "run unnamed": ["run", "--model", MISSING_MODEL, "--languages", "en,de", "--output",
                        str(file)],
        "run below a file": _tiny_run(MISSING_MODEL, file / "deeper", "x"),
        "lens": ["lens", "--model", MISSING_MODEL, "--languages", "de", "--output", str(file)],
        "neurons": ["neurons", "--model", MISSING_MODEL, "--data", "default", "--languages",
                    "en,de", "--eval-sentences", "0", "--output", str(file)],
        "intervene": ["intervene", "steer", "--language", "de", "--model", MISSING_MODEL,
                      "--fit-data", "default", "--fit-sentences", "10", "--eval-data",
                      str(other), "--eval-sentences", "4", "--output", str(file), "--name", "x"],
        "mine": [*MINE, "--output", str(file), "--name", "x"],
        "run --store": [*_tiny_run(MISSING_MODEL, tmp_path / "runs", "x"), "--store", str(file)],
        "transfer --store": ["transfer", "--model", MISSING_MODEL, "--languages", "en,de",
                             "--store", str(file), "--output", str(tmp_path / "runs")],
        "mine --store": [*MINE, "--store", str(file), "--output", str(tmp_path / "runs")],
        "compare": ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(file)],
        "fit-law": ["fit-law", str(tmp_path / "sweep.csv"), "--output", str(file)],
        "allocate": ["allocate", str(tmp_path / "law" / "law.json"), "--budget", "10",
                     "--output", str(file)],
    }
    for what, argv in commands.items():
        assert main(argv) == 2, what
        err = capsys.readouterr().err
        assert "is a file, not a directory" in err, (what, err)
    assert file.read_text() == "not a directory\n"


def test_no_command_writes_into_a_directory_of_another_kind(dashboard_runs, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(dashboard_runs / "base", root / "alignment")
    (root / "training").mkdir()
    (root / "training" / "train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (root / "notes").mkdir()
    (root / "notes" / "thesis.tex").write_text("\\documentclass{article}\n")
    expected = {"alignment": "holds an alignment run", "training": "holds an unfinished "
                "training output", "notes": "not a layer-analysis run"}
    for name, message in expected.items():
        before = sorted(p.name for p in (root / name).iterdir())
        for argv in (
                ["lens", "--model", MISSING_MODEL, "--languages", "de", "--name", name],
                ["neurons", "--model", MISSING_MODEL, "--data", "default", "--languages",
                 "en,de", "--eval-sentences", "0", "--name", name, "--overwrite"],
                [*MINE, "--name", name, "--overwrite"]):
            assert main([*argv, "--output", str(root)]) == 2, (name, argv[0])
            err = capsys.readouterr().err
            assert message in err and "/nonexistent" not in err, (name, argv[0], err)
        assert sorted(p.name for p in (root / name).iterdir()) == before
    # its own kind: refused without --overwrite (before the model loads)
    assert main(_tiny_run(MISSING_MODEL, root, "alignment")) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_fit_law_and_allocate_do_not_replace_their_outputs_without_overwrite(tmp_path, capsys):
    rows = [{"language": x, "pairs": n, "similarity": s, "chrf++": 20 + s * 10 + 3 * (n > 0)
             + 0.004 * n} for x, s in (("deu_Latn", 0.8), ("zho_Hans", 0.4), ("ell_Grek", 0.6))
            for n in (0, 250, 500, 1000, 2000)]
    pd.DataFrame(rows).to_csv(tmp_path / "sweep.csv", index=False)
    fit = ["fit-law", str(tmp_path / "sweep.csv"), "--no-static"]
    assert main(fit) == 0
    law = tmp_path / "law" / "law.json"
    before = law.read_text()
    assert main(fit) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*fit, "--overwrite"]) == 0 and law.read_text() == before
    alloc = ["allocate", str(law), "--budget", "1000", "--caps", "de=500,zh=500,el=500",
             "--no-static"]
    assert main(alloc) == 0
    assert main(alloc) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*alloc, "--overwrite"]) == 0
    # a law is not written over an allocation, nor over a run
    assert main([*fit, "--output", str(tmp_path / "law" / "allocation"), "--overwrite"]) == 2
    assert "holds an allocation" in capsys.readouterr().err


def test_a_second_writer_of_one_run_directory_fails_with_the_locks_message(tiny_llama_dir,
                                                                          tmp_path, capsys):
    run = tmp_path / "runs" / "same"
    with writer_lock(run):  # another process writing runs/same (a second FileLock holder)
        assert main(_tiny_run(tiny_llama_dir, tmp_path / "runs", "same")) == 2
        assert "another layer-analysis process is writing" in capsys.readouterr().err
    assert main(_tiny_run(tiny_llama_dir, tmp_path / "runs", "same")) == 0
    assert directory_owner(run) == ("alignment", True)
    assert not (run / ".unfinished").exists()


def test_an_interrupted_write_resumes_without_overwrite_and_a_failed_claim_leaves_nothing(
        tmp_path):
    run = tmp_path / "lens-run"
    with pytest.raises(KeyboardInterrupt), run_writer(run, "lens"):
        (run / "tuned_lens.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt
    assert directory_owner(run) == ("lens", False)
    check_run_directory(run, "lens")  # a rerun resumes it
    with pytest.raises(StoreError, match="holds an unfinished lens run"):
        check_run_directory(run, "neurons", overwrite=True)
    fresh = tmp_path / "runs" / "never-written"
    with pytest.raises(RuntimeError), run_writer(fresh, "neurons"):
        raise RuntimeError("the model failed to load")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------- item 5: verified, not trusted


def _forge(run, **fields):
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest))


def test_a_manifest_cannot_point_compare_at_other_activations(dashboard_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    for name in ("base", "x-de"):
        shutil.copytree(dashboard_runs / name, runs / name)
    other = json.loads((runs / "x-de" / "manifest.json").read_text())
    pair = [str(runs / "base"), str(runs / "x-de")]
    assert main(["compare", *pair, "--output", str(tmp_path / "ok"), "--no-static"]) == 0
    honest = pd.read_csv(tmp_path / "ok" / "cka.csv").value

    # base's manifest names x-de's activations: before, model x model CKA 1.0 with exit 0
    _forge(runs / "base", activations=other["activations"],
           activations_key=other["activations_key"])
    assert main(["compare", *pair, "--output", str(tmp_path / "c1"), "--no-static"]) == 2
    err = capsys.readouterr().err
    assert "are not those of" in err and str(runs / "base") in err
    assert other["activations"] in err and "model identity differs" in err
    with pytest.raises(StoreError, match="model identity differs"):
        load_activations(read_run(runs / "base"))

    # a copy of its own activations outside the runs root and its store: not read
    shutil.copytree(dashboard_runs / "base", runs / "base", dirs_exist_ok=True)
    own = json.loads((runs / "base" / "manifest.json").read_text())["activations"]
    elsewhere = tmp_path / "elsewhere" / own.rsplit("/", 1)[1]
    shutil.copytree(own, elsewhere)
    for target in (elsewhere, tmp_path):
        _forge(runs / "base", activations=str(target))
        assert main(["compare", *pair, "--output", str(tmp_path / "c2"), "--no-static"]) == 2
        err = capsys.readouterr().err
        assert "not the entry of its key in its store" in err and str(target) in err
    assert not (honest == 1.0).all()


def test_a_store_entry_whose_inputs_were_edited_is_refused(dashboard_runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(dashboard_runs / "base", root / "base")
    manifest = json.loads((root / "base" / "manifest.json").read_text())
    store = root / "store"
    entry = store / manifest["activations"].rsplit("/", 1)[1]
    shutil.copytree(manifest["activations"], entry)
    _forge(root / "base", activations=str(entry), store=str(store))
    assert load_activations(read_run(root / "base")).key == manifest["activations_key"]
    older = {k: v for k, v in json.loads((root / "base" / "manifest.json").read_text()).items()
             if k not in ("activations_key", "store")}  # a run written before they were recorded
    (root / "base" / "manifest.json").write_text(json.dumps(older))
    assert load_activations(read_run(root / "base")).key == manifest["activations_key"]
    stored = json.loads((entry / "manifest.json").read_text())
    stored["inputs"]["data"] = "0" * 64  # another data set's fingerprint, key left as it was
    (entry / "manifest.json").write_text(json.dumps(stored))
    with pytest.raises(StoreError, match=r"do not hash to its key.*data fingerprint"):
        load_activations(read_run(root / "base"))


# ------------------------------------------------------------- item 6: data identity by content


def test_held_out_checks_compare_sentences_not_names(capsys):
    same = str(DATA_ROOT / "parallel")  # the named set "default", given as a path
    neurons = ["neurons", "--model", MISSING_MODEL, "--languages", "en,de", "--data", "default",
               "--sentences", "10", "--eval-data", same, "--eval-sentences", "5"]
    assert main(neurons) == 2
    err = capsys.readouterr().err
    assert "repeats sentences of --data" in err and "German 5 of 5" in err
    intervene = ["intervene", "steer", "--language", "de", "--model", MISSING_MODEL,
                 "--fit-data", same, "--fit-sentences", "10", "--eval-data", "default",
                 "--eval-sentences", "4"]
    assert main(intervene) == 2
    err = capsys.readouterr().err
    assert "repeats sentences of --fit-data" in err and "German 4 of 4" in err


def test_a_few_shared_held_out_sentences_are_said_and_more_are_refused(capsys):
    from layer_analysis.probe.errors import DataError
    from layer_analysis.probe.runs import check_held_out

    fitted = {"deu_Latn": [f"Satz {i}." for i in range(100)]}
    held = {"deu_Latn": ["Satz 0.", "Satz 1."] + [f"Anderer {i}." for i in range(48)]}
    check_held_out(fitted, held, "--data", "--eval-data")  # 2 of 50: within 5 %
    assert "German 2 of 50" in capsys.readouterr().err
    held["deu_Latn"][2] = "Satz 2."
    with pytest.raises(DataError, match="German 3 of 50"):
        check_held_out(fitted, held, "--data", "--eval-data")
    check_held_out(fitted, {"eng_Latn": ["Satz 0."]}, "--data", "--eval-data")  # per language


def test_a_run_directory_that_is_a_symbolic_link_is_refused(tmp_path):
    """A run named through a link would be written elsewhere (a hostile test overwrote a run
    outside --output so); it is refused before anything loads."""
    from layer_analysis.probe.errors import StoreError
    from layer_analysis.probe.runs import check_run_directory

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "link").symlink_to(elsewhere)
    with pytest.raises(StoreError, match="is a symbolic link"):
        check_run_directory(tmp_path / "runs" / "link", "alignment", overwrite=True)


def test_a_foreign_manifest_is_no_alignment_run(tmp_path, capsys):
    """A directory with some other program's manifest.json (a web app's) is not taken for an
    alignment run, so even --overwrite does not write into it."""
    app = tmp_path / "runs" / "webapp"
    app.mkdir(parents=True)
    (app / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    assert directory_owner(app) == ("other", True)
    with pytest.raises(StoreError, match="files that are not a layer-analysis run"):
        check_run_directory(app, "alignment", overwrite=True)
    (app / "manifest.json").write_text('{"extraction": {}, "analysis": {}}')  # an older run's
    assert directory_owner(app) == ("alignment", True)


def test_long_default_names_of_two_models_stay_two_runs():
    """Default run names are cut to 60 characters; two names that differ only after the cut
    (two models in one deep directory) keep a hash of the whole, so neither replaces the
    other's run."""
    from layer_analysis.probe.runs import check_run_name, slug

    stem = "tmp/audit/models/a-rather-long-experiment-directory-name-for-model-"
    a, b = slug(stem + "A-flores-1234abcd"), slug(stem + "B-flores-1234abcd")
    assert a != b and len(a) <= 60 and len(b) <= 60 and a[:40] == b[:40]
    assert check_run_name(a) == a and slug(stem + "A-flores-1234abcd") == a  # stable
    assert slug("gemma3-270m-flores-devtest-1234abcd") == "gemma3-270m-flores-devtest-1234abcd"


def test_a_rewritten_run_keeps_nothing_of_the_earlier_one(tmp_path):
    """Overwriting (or finishing an interrupted run) removes the earlier run's files, also
    those only some settings write (a neurons run's deactivation.csv, an old MEXA export), so
    no old table sits beside the new manifest; the lock, the marker, what the writer keeps and
    other sub-directories (an activation store) stay. Outputs are readable as plain files."""
    import os

    from layer_analysis.probe.files import atomic_write_text, start_run_directory

    run = tmp_path / "run"
    for name in ("manifest.json", "results.parquet", "deactivation.csv", ".writer.lock",
                 ".unfinished", "tuned_lens.safetensors", "figures/run-curves.png",
                 "mexa_export/strict/deu_Latn.json", "store/abcd/manifest.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("old")
    start_run_directory(run, keep=["tuned_lens.safetensors"])
    assert sorted(p.name for p in run.iterdir()) == [".unfinished", ".writer.lock", "store",
                                                      "tuned_lens.safetensors"]
    atomic_write_text(run / "table.csv", "a\n")
    mask = os.umask(0)
    os.umask(mask)
    assert (run / "table.csv").stat().st_mode & 0o777 == 0o666 & ~mask
