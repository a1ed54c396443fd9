"""Correlation across languages: hand bootstraps, hand partial correlations, synthetic cases,
bad score tables, and the ``correlate`` command on a run written here."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from layer_analysis.probe.correlate import (
    Alignment,
    CorrelationConfig,
    Scores,
    correlate,
    correlation_rows,
    partial_correlation,
    read_score_csv,
)
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.metrics import _resample_counts

LANGS = ["arb_Arab", "deu_Latn", "ell_Grek", "hin_Deva", "tur_Latn", "vie_Latn", "zho_Hans",
         "fra_Latn", "spa_Latn", "rus_Cyrl", "jpn_Jpan", "swh_Latn"]


def test_bootstrap_cis_equal_a_hand_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = 0.6 * x + rng.normal(size=12)
    y[3] = y[4]  # a tie: Spearman's average ranks per resample
    config = CorrelationConfig(bootstrap=200, permutations=100, seed=5)
    rows = {r["method"]: r for r in correlation_rows(x, y, None, config)}
    counts = _resample_counts(12, 200, 5).numpy().astype(int)
    index = [np.repeat(np.arange(12), c) for c in counts]
    for method, function in (("pearson", pearsonr), ("spearman", spearmanr)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant resamples: NaN, left out as ours are
            hand = np.array([function(x[i], y[i]).statistic for i in index])
        low, high = np.quantile(hand[np.isfinite(hand)], [0.025, 0.975])
        assert rows[method]["ci_low"] == pytest.approx(low)
        assert rows[method]["ci_high"] == pytest.approx(high)
        assert rows[method]["r"] == pytest.approx(function(x, y).statistic)


def test_partial_correlation_equals_hand_residuals():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(30, 2))
    x = z @ [1.0, -0.5] + rng.normal(size=30)
    y = z @ [0.3, 2.0] + 0.4 * x + rng.normal(size=30)
    design = np.column_stack([np.ones(30), z])
    hat = design @ np.linalg.inv(design.T @ design) @ design.T
    ex, ey = x - hat @ x, y - hat @ y
    assert partial_correlation(x, y, z) == pytest.approx(pearsonr(ex, ey).statistic)
    rz = np.column_stack([pd.Series(c).rank().to_numpy() for c in z.T])
    design = np.column_stack([np.ones(30), rz])
    hat = design @ np.linalg.inv(design.T @ design) @ design.T
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    assert partial_correlation(x, y, z, rank=True) == pytest.approx(
        pearsonr(rx - hat @ rx, ry - hat @ ry).statistic)


def alignment_of(values: dict[str, list[float]], tokenization: pd.DataFrame | None = None):
    return Alignment("toy", {k: dict(enumerate(v)) for k, v in values.items()}, tokenization)


def test_scores_built_from_alignment_give_r_1_and_shuffled_ones_r_0():
    rng = np.random.default_rng(2)
    langs = [f"l{i:02d}_Latn" for i in range(60)]
    layers = rng.random((60, 4))
    alignment = alignment_of(dict(zip(langs, layers.tolist(), strict=True)))
    config = CorrelationConfig(bootstrap=200, permutations=500, covariates=())
    built = correlate(alignment, Scores("built", dict(zip(langs, 3 * layers[:, 2] + 1,
                                                          strict=True))), config)
    at2 = built[(built.layer == 2)].set_index("method")
    assert at2.r["pearson"] == pytest.approx(1.0) and at2.r["spearman"] == pytest.approx(1.0)
    assert at2.p["pearson"] == pytest.approx(1 / 501)  # no permutation reaches it
    assert at2.ci_low["pearson"] > 0.999
    shuffled = correlate(alignment, Scores("shuffled", dict(zip(
        langs, rng.permutation(3 * layers[:, 2] + 1), strict=True))), config)
    at2 = shuffled[(shuffled.layer == 2)].set_index("method")
    assert abs(at2.r["pearson"]) < 0.3 and at2.p["pearson"] > 0.05
    assert at2.ci_low["pearson"] < 0 < at2.ci_high["pearson"]
    assert set(built.aggregation) == {"layer", "mean", "max"}
    mean = built[(built.aggregation == "mean") & (built.method == "pearson")].r.item()
    assert mean == pytest.approx(pearsonr(layers.mean(1), 3 * layers[:, 2] + 1).statistic)


def test_partial_rows_use_the_tokenization_covariates():
    rng = np.random.default_rng(3)
    fertility = rng.random(12) * 2 + 1
    align = 1 - fertility / 4 + 0.05 * rng.normal(size=12)
    score = 2 - fertility + 0.05 * rng.normal(size=12)
    tokenization = pd.DataFrame({"language": LANGS, "fertility": fertility, "script": "Latn"})
    alignment = alignment_of({k: [v] for k, v in zip(LANGS, align, strict=True)}, tokenization)
    table = correlate(alignment, Scores("s", dict(zip(LANGS, score, strict=True))),
                      CorrelationConfig(bootstrap=100, permutations=100,
                                        covariates=("fertility",)))
    rows = table[table.aggregation == "layer"].set_index("method")
    assert rows.r["pearson"] > 0.9  # both follow fertility
    assert rows.r["partial_pearson"] == pytest.approx(
        partial_correlation(align, score, fertility[:, None]))
    assert abs(rows.r["partial_pearson"]) < rows.r["pearson"]
    assert rows.covariates["partial_pearson"] == "fertility"


def test_too_few_languages_is_an_error():
    alignment = alignment_of({"deu_Latn": [0.1], "fra_Latn": [0.2], "spa_Latn": [0.3]})
    with pytest.raises(DataError, match=r"2 language.* in common .* at least 3"):
        correlate(alignment, Scores("s", {"deu_Latn": 1.0, "fra_Latn": 2.0, "ita_Latn": 3.0}),
                  CorrelationConfig(covariates=()))


@pytest.mark.parametrize("text, message", [
    ("language,score\nde,1\nklingon,2\n", r"unknown language 'klingon' \(.*s.csv, line 3\)"),
    ("language,score\nde,1\nfr,2\ndeu_Latn,3\n", r"s.csv, line 4: deu_Latn again \(line 2\)"),
    ("language,score\nde,1\nfr,nan\n", r"s.csv, line 3: score 'nan' is not finite"),
    ("language,score\nde,1\nfr,inf\n", r"s.csv, line 3: score 'inf' is not finite"),
    ("language,score\nde,1\nfr,\n", r"s.csv, line 3: score '' is not a number"),
    ("lang,value\nde,1\n", r"s.csv, line 1: no column language, score"),
])
def test_bad_score_csvs_name_file_and_line(tmp_path, text, message):
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_score_csv(tmp_path / "s.csv")


def write_alignment_run(root, values: dict[str, list[float]]):
    """An alignment run directory with a p@1 (centered) table and a tokenization table."""
    from layer_analysis.probe.runs import write_run

    rows = [{"model": "m", "layer": layer, "source": a, "target": b, "pooling": "mean",
             "normalisation": "centered", "metric": "p@1", "value": v + (0.02 if a != "eng_Latn"
                                                                          else 0.0),
             "ci_low": 0, "ci_high": 1, "null": 0.1, "null_high": 0.1}
            for lang, per in values.items() for layer, v in enumerate(per)
            for a, b in (("eng_Latn", lang), (lang, "eng_Latn"))]
    write_run(root, {"model": {"name": "m"}, "data": {"name": "d"}}, pd.DataFrame(rows),
              pd.DataFrame(), pd.DataFrame(), {"tokenization.csv": pd.DataFrame({
                  "language": ["eng_Latn", *values], "script": "Latn",
                  "fertility": np.linspace(1, 2, len(values) + 1),
                  "chars_per_token": 3.0, "byte_fallback_share": 0.0,
                  "type_overlap_english": np.linspace(1, 0.5, len(values) + 1)})})
    return root


def test_correlate_command_writes_tables_and_report(tmp_path, capsys):
    from layer_analysis.cli import main

    rng = np.random.default_rng(4)
    grid = rng.random((8, 3))
    run = write_alignment_run(tmp_path / "run", dict(zip(LANGS[:8], grid.tolist(), strict=True)))
    csv = tmp_path / "xquad.csv"
    pd.DataFrame({"language": [*LANGS[:8], "ita_Latn"],
                  "score": [*(10 * grid[:, 1]), 5.0]}).to_csv(csv, index=False)
    out = tmp_path / "corr"
    args = ["correlate", str(run), "--scores", str(csv), "--output", str(out), "--bootstrap",
            "100", "--permutations", "100", "--covariates", "fertility,byte_fallback_share"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "ita_Latn" in captured.err and "left out" in captured.err
    assert "Pearson r peaks at layer 1 (+1.00" in captured.out
    table = pd.read_csv(out / "correlation.csv")
    at1 = table[(table.layer == 1) & (table.method == "pearson")]
    assert at1.r.item() == pytest.approx(1.0) and at1.n.item() == 8
    assert set(table.method) == {"pearson", "spearman", "partial_pearson", "partial_spearman"}
    assert "scatter_layer_" in (out / "correlation.html").read_text()
    assert (out / "manifest.json").exists() and (out / "scores.csv").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("language,score\nde,1\nde,2\n")
    assert main([*args[:3], str(bad), *args[4:]]) == 2
    assert re.search(r"bad.csv, line 3: deu_Latn again", capsys.readouterr().err)
    # never over a finished correlation without --overwrite, never into another kind of run
    manifest = (run / "manifest.json").read_bytes()
    assert main([*args[:5], str(run), *args[6:]]) == 2  # --output: the alignment run
    assert "alignment" in capsys.readouterr().err
    assert (run / "manifest.json").read_bytes() == manifest
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    import layer_analysis as la

    result = la.load(out)  # the API reads it back, figures and all
    assert result.kind == "correlation" and len(result.table) == len(table)
    assert "correlation_curve" in result.figures() and len(result.figures()) == 2


def test_evaluate_outputs_and_transfer_runs_are_score_tables(tmp_path):
    import json

    from layer_analysis.probe.correlate import read_scores

    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps([
        {"task": "translation", "source": "eng_Latn", "target": "deu_Latn", "chrf++": 41.5},
        {"task": "translation", "source": "eng_Latn", "target": "zho_Hans", "chrf++": 12.0},
        {"task": "xquad", "language": "de", "f1": 30.25}]))
    tables = {t.name: t.values for t in read_scores(evaluation)}
    assert tables == {"eval translation chrf++": {"deu_Latn": 41.5, "zho_Hans": 12.0},
                      "eval xquad f1": {"deu_Latn": 30.25}}
    evaluation.write_text(json.dumps([{"task": "xquad", "language": "de", "f1": None}]))
    with pytest.raises(DataError, match=r"eval.json, record 1: score None is not a number"):
        read_scores(evaluation)
    run = tmp_path / "transfer"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"kind": "transfer"}))
    rows = [{"model": "m", "layer": layer, "variant": variant, "source": "eng_Latn",
             "target": target, "setting": "transfer", "metric": "accuracy",
             "value": value + layer / 10 + (variant == "centered") / 100, "ci_low": 0,
             "ci_high": 1, "chance": 0.25, "n": 10}
            for layer in (1, 2) for variant in ("raw", "centered")
            for target, value in (("eng_Latn", 0.9), ("deu_Latn", 0.5), ("zho_Hans", 0.3))]
    pd.DataFrame(rows).to_csv(run / "transfer.csv", index=False)
    (scores,) = read_scores(run)
    assert scores.name == "transfer accuracy (centered, layer 2)"
    assert scores.values == pytest.approx({"deu_Latn": 0.71, "zho_Hans": 0.51})
    (scores,) = read_scores(run, variant="raw", layer=1)
    assert scores.values == pytest.approx({"deu_Latn": 0.6, "zho_Hans": 0.4})


def test_batched_partial_bootstrap_equals_the_loop_over_resamples():
    from layer_analysis.probe.correlate import weighted_partial

    rng = np.random.default_rng(6)
    z = np.column_stack([rng.normal(size=15), np.full(15, 2.0), rng.integers(0, 3, 15)])
    x = z[:, 0] + rng.normal(size=15)
    y = 0.5 * x - z[:, 2] + rng.normal(size=15)
    x[2] = x[7]  # ties
    counts = _resample_counts(15, 60, 1).numpy()
    index = [np.repeat(np.arange(15), c.astype(int)) for c in counts]
    for rank in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hand = np.array([partial_correlation(x[i], y[i], z[i], rank) for i in index])
        batched = weighted_partial(x, y, z, counts, rank)
        finite = np.isfinite(hand)
        np.testing.assert_allclose(batched[finite], hand[finite], atol=1e-8)
