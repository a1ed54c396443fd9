"""Counts asked for beyond what the data holds are said, and a score over nothing is refused."""

from __future__ import annotations

import json

import pytest

from layer_analysis.cli import main
from layer_analysis.probe.checks import capped
from layer_analysis.probe.errors import DataError


@pytest.fixture
def three_pairs(tmp_path):
    directory = tmp_path / "three"
    directory.mkdir()
    (directory / "eng_Latn.txt").write_text("The house is red.\nI like water.\nThe dog runs.\n")
    (directory / "deu_Latn.txt").write_text("Das Haus ist rot.\nIch mag Wasser.\nDer Hund läuft.\n")
    return directory


def test_capped_says_a_cap_and_refuses_nothing(capsys):
    assert capped(None, 7, "sentences", "X") == 7 and capped(5, 7, "sentences", "X") == 5
    assert capped(5000, 7, "sentences", "X") == 7
    assert capsys.readouterr().err == "note: only 7 sentences in X; using 7\n"
    with pytest.raises(DataError, match="no questions in X"):
        capped(10, 0, "questions", "X")


def test_run_says_when_its_limit_is_more_than_the_data_holds(three_pairs, tmp_path, capsys,
                                                             monkeypatch):

    def load_model(*args, **kwargs):
        raise DataError("stopped before the model")

    monkeypatch.setattr("layer_analysis.probe.models.load_model", load_model)
    assert main(["run", "--model", "unused", "--data", str(three_pairs), "--limit", "500",
                 "--output", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "note: only 3 sentences per language in three; using 3" in err


def test_evaluate_says_its_cap_and_counts_what_it_scored(three_pairs, tmp_path, tiny_llama_dir,
                                                         capsys):
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--model", str(tiny_llama_dir), "--languages", "de", "--data",
                 str(three_pairs), "--limit", "5000", "--max-new-tokens", "2", "--device", "cpu",
                 "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "note: only 3 sentences per language in three; using 3" in captured.err
    assert "(3 sentences)" in captured.out and json.loads(out.read_text())[0]["sentences"] == 3


def test_xquad_questions_are_capped_aloud_and_none_is_an_error(tmp_path, monkeypatch, capsys):
    from layer_analysis.probe import generation

    (tmp_path / "xquad").mkdir()
    article = {"paragraphs": [{"context": "Athens is in Greece.", "qas": [
        {"id": str(i), "question": "Where is Athens?", "answers": [{"text": "Greece"}]}
        for i in range(2)]}]}
    (tmp_path / "xquad" / "xquad.el.json").write_text(json.dumps({"data": [article]}))
    (tmp_path / "xquad" / "xquad.de.json").write_text(json.dumps({"data": []}))
    monkeypatch.setattr(generation, "shared_data_root", lambda: tmp_path)
    assert len(generation.read_xquad("el", 100)) == 2
    assert "only 2 questions in" in capsys.readouterr().err
    with pytest.raises(DataError, match="no questions in"):  # never "EM 0.0 (0 questions)"
        generation.read_xquad("de", 100)


def test_library_requests_use_the_same_check():
    from layer_analysis.probe.extract import ExtractionConfig
    from layer_analysis.probe.generation import generate
    from layer_analysis.probe.tuned_lens import TuningConfig

    with pytest.raises(DataError, match=r"tuned-lens learning rate must be a finite number in \(0, 1\]"):
        TuningConfig(lr=float("inf"))
    with pytest.raises(DataError, match="tuned-lens steps must be at least 0, got -1"):
        TuningConfig(steps=-1)
    with pytest.raises(DataError, match="max_length must be at least 2, got 1"):
        ExtractionConfig(max_length=1)
    with pytest.raises(DataError, match="batch size must be at least 1, got 0"):
        generate(None, ["a prompt"], batch_size=0)  # before the model is touched
