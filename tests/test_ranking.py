"""Reports stay readable with many languages (SIB-200: 205): ranking, spread, one-way heatmap;
``--languages all`` keeps every language."""

from __future__ import annotations

import pandas as pd
import pytest

from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.ranking import RANKED_ABOVE, language_ranking
from layer_analysis.probe.runs import RunResults, run_figures


def many(languages: int) -> pd.DataFrame:
    codes = [f"{chr(97 + i // 26)}{chr(97 + i % 26)}a_Latn" for i in range(languages)]
    rows = []
    for i, code in enumerate(codes):
        for layer in range(3):
            for a, b, shift in (("eng_Latn", code, 0.0), (code, "eng_Latn", 0.1)):
                for metric in ("p@1", "cosine_adjusted"):
                    value = (i / languages + layer / 10 + shift) / 2
                    rows.append({"model": "m", "layer": layer, "source": a, "target": b,
                                 "pooling": "mean", "normalisation": "centered", "metric": metric,
                                 "value": value, "ci_low": value - 0.05, "ci_high": value + 0.05,
                                 "null": 0.01, "null_high": 0.01})
    return pd.DataFrame(rows)


def test_ranking_orders_languages_with_both_directions_averaged():
    ranked = language_ranking(many(5), 2)
    assert list(ranked.language) == ["aea_Latn", "ada_Latn", "aca_Latn", "aba_Latn", "aaa_Latn"]
    assert ranked.value.iloc[0] == pytest.approx((4 / 5 + 0.2 + 0.05) / 2)
    assert ranked.name.iloc[0] == "aea_Latn"  # a FLORES code outside the named table


def test_many_languages_get_a_ranking_and_spread_instead_of_a_legend_each():
    few = run_figures(RunResults(None, {"analysis": {"pivot": "eng_Latn"}}, many(RANKED_ABOVE),
                                 pd.DataFrame(), pd.DataFrame()))
    assert not any(name.startswith("ranking") for name in few)
    assert len(few["curves_p@1"].data) > RANKED_ABOVE  # one line (and band) per language
    results = RunResults(None, {"analysis": {"pivot": "eng_Latn", "projection_layer": 1}},
                         many(RANKED_ABOVE + 5), pd.DataFrame(), pd.DataFrame())
    figures = run_figures(results)
    bars = figures["ranking_p@1_layer_1"].data[0]
    assert len(bars.y) == RANKED_ABOVE + 5 and bars.y[0] == language_ranking(
        results.table, 1).language.iloc[0]
    assert len(figures["curves_p@1"].data) == 3  # two ranges and the median
    assert len(figures["heatmap_p@1"].data[0].y) == RANKED_ABOVE + 5  # English -> X only


def test_languages_all_keeps_every_language():
    corpus = load_parallel("default")
    assert corpus.select(["all"], 3).languages == corpus.languages


def test_the_runs_layer_is_where_the_mean_peaks_not_the_most_common_peak():
    """With 20 sentences P@1 ties at 1.0 across layers and a lexical high at layer 0 wins a
    count of per-pair peaks (a 205-language run got layer 0 so); the run's layer is where the
    mean over pairs peaks."""
    from layer_analysis.probe.analysis import peak_layer, peak_layers

    curves = {f"l{i}_Latn": [1.0, 0.2, 0.9, 1.0, 0.8] for i in range(6)}
    curves |= {f"m{i}_Latn": [0.3, 0.2, 0.6, 0.9, 0.5] for i in range(4)}
    rows = [{"model": "m", "pooling": "mean", "source": "eng_Latn", "target": lang,
             "layer": layer, "metric": "p@1", "normalisation": "centered", "value": v,
             "ci_low": v, "ci_high": v}
            for lang, values in curves.items() for layer, v in enumerate(values)]
    table = pd.DataFrame(rows)
    assert int(peak_layers(table).groupby("layer").size().idxmax()) == 0  # the count's answer
    assert peak_layer(table) == 3
    other = table.assign(pooling="last", value=table.value[::-1].to_numpy())
    assert peak_layer(pd.concat([table, other])) == 3  # the first pooling's
