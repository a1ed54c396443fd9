"""The dashboard's Transfer page: transfer runs, correlate outputs, the ranking, a new run."""

from __future__ import annotations

import pandas as pd
from test_app import app, charts, goto
from test_correlate import LANGS, write_alignment_run
from test_transfer import write_sib


def test_transfer_page_shows_runs_correlations_ranking_and_starts_a_run(
        tiny_llama_dir, tmp_path, monkeypatch):
    import numpy as np

    from layer_analysis.cli import main

    at = goto(app(tmp_path / "empty", monkeypatch), "transfer")
    assert "No transfer runs" in at.info[0].value
    root = tmp_path / "runs"
    sib = write_sib(tmp_path / "sib")
    assert main(["transfer", "--model", str(tiny_llama_dir), "--data", str(sib), "--output",
                 str(root), "--name", "t", "--device", "cpu", "--no-progress", "--bootstrap",
                 "50", "--layers", "1,3"]) == 0
    grid = np.random.default_rng(0).random((6, 3))
    run = write_alignment_run(root / "align", dict(zip(LANGS[:6], grid.tolist(), strict=True)))
    scores = tmp_path / "s.csv"
    pd.DataFrame({"language": LANGS[:6], "score": grid[:, 2]}).to_csv(scores, index=False)
    assert main(["correlate", str(run), "--scores", str(scores), "--output", str(root / "corr"),
                 "--bootstrap", "50", "--permutations", "50", "--covariates", "none"]) == 0
    at = goto(app(root, monkeypatch), "transfer")
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert titles[0].startswith("accuracy per layer, mean over targets")
    assert titles[1].startswith("accuracy at layer") and "2 targets ranked" in titles[1]
    assert titles[2].startswith("correlation across languages")
    assert titles[3].startswith("alignment at layer")
    assert "6 languages ranked" in titles[4]
    at.radio(key="transfer-metric").set_value("macro_f1").run()
    at.select_slider(key="transfer-layer").set_value(1).run()
    assert not at.exception and not at.error
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert titles[1].startswith("macro_f1 at layer 1")
    at.text_input(key="new-transfer-model").set_value(str(tiny_llama_dir))
    at.text_input(key="new-transfer-data").set_value(str(sib))
    at.text_input(key="new-transfer-languages").set_value("en,zh")
    at.text_input(key="new-transfer-name").set_value("from-page")
    next(b for b in at.button if b.label == "Start transfer run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert (root / "from-page" / "manifest.json").exists()
