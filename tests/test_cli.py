"""The layer-analysis command: outputs, summaries and one clear error per bad input."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from probe.cli import main


@pytest.fixture
def run_args(tiny_llama_dir, tmp_path):
    return ["run", "--model", str(tiny_llama_dir), "--languages", "en,de,zh", "--limit", "16",
            "--output", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]


def test_run_writes_activations_and_summary(run_args, capsys, tmp_path):
    assert main(run_args) == 0
    out = capsys.readouterr().out
    assert "activations:" in out and "eng-deu" in out
    run_dir = next((tmp_path / "out" / "store").iterdir())
    assert (run_dir / "manifest.json").exists()
    assert sorted(p.name for p in run_dir.glob("side.*")) == [
        "side.deu_Latn.safetensors", "side.eng_Latn.safetensors", "side.zho_Hans.safetensors"]
    rows = list(csv.reader((run_dir / "p_at_1_centered.csv").open()))
    assert rows[0] == ["layer", "eng-deu", "eng-zho"] and len(rows) == 1 + 5
    assert main(run_args) == 0
    assert "loaded from cache" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--languages", "en,xx"], "unknown language 'xx'"),
        (["--languages", "de,zh"], "pivot eng_Latn is not among the selected languages"),
        (["--layers", "0,99"], "out of range"),
        (["--data", "nowhere"], "no data set, directory or file named 'nowhere'"),
        (["--template", "no slot"], "must contain {sentence}"),
        (["--limit", "0"], "at least 1"),
    ],
)
def test_bad_inputs_give_one_message_and_exit_2(run_args, capsys, extra, message):
    assert main(run_args + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("error:") == 1


def test_bad_data_file_through_the_console_script(tmp_path):
    (tmp_path / "eng_Latn.txt").write_bytes(b"fine\nbroken \xc3\x28\n")
    (tmp_path / "deu_Latn.txt").write_bytes(b"gut\nkaputt\n")
    result = subprocess.run(
        [sys.executable, "-m", "probe.cli", "run", "--data", str(tmp_path), "--model", "unused"],
        capture_output=True, text=True)
    assert result.returncode == 2
    assert "eng_Latn.txt, line 2: not valid UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_list_commands(capsys):
    assert main(["list-models"]) == 0
    assert "gemma3-270m (default)" in capsys.readouterr().out
    assert main(["list-data"]) == 0
    assert "flores-devtest" in capsys.readouterr().out
