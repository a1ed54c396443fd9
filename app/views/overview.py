"""Overview: languages x layers heatmap, curves with CI bands and chance, peak layers."""

from __future__ import annotations

import streamlit as st

from layer_analysis.app.dashboard import (
    guarded,
    of_pooling,
    pick_pooling,
    pick_run,
    short,
    show_figure,
    show_table,
)
from layer_analysis.probe import report
from layer_analysis.probe.analysis import peak_layers
from layer_analysis.probe.report import METRIC_NAMES


def page() -> None:
    st.title("Overview")
    results = pick_run("overview-run")
    if results is None:
        return
    table = results.table
    pooling = pick_pooling(table, "overview-pooling")
    table = of_pooling(table, pooling)
    metrics = [m for m in METRIC_NAMES if m in set(table.metric)]
    metrics += sorted(m for m in set(table.metric) if m.startswith("mutual_knn"))
    left, middle, right = st.columns(3)
    metric = left.selectbox("Metric", metrics, format_func=report.metric_label,
                            key="overview-metric")
    normalisations = sorted(set(table[table.metric == metric].normalisation),
                            key=lambda n: (n != "centered", n))
    normalisation = middle.selectbox("Normalisation", normalisations, key="overview-norm")
    pivot = results.manifest.get("analysis", {}).get("pivot")
    rows = table[(table.metric == metric) & (table.normalisation == normalisation)]
    directed = bool(pivot) and rows.source.str.startswith(pivot).any() \
        and rows.target.str.startswith(pivot).any()
    if directed:  # retrieval ranks queries of one side among the other's: two directions
        direction = right.selectbox("Direction", [f"{pivot[:3]} → X", f"X → {pivot[:3]}", "both"],
                                    key="overview-direction",
                                    help="one curve per direction and language")
        if direction.endswith("→ X"):
            rows = rows[rows.source.str.startswith(pivot)]
        elif direction.startswith("X →"):
            rows = rows[rows.target.str.startswith(pivot)]
    else:  # cosine, MEXA, mutual kNN: one value per pair
        right.selectbox("Direction", ["none: symmetric" if pivot else "all pairs"],
                        key="overview-no-direction", disabled=True,
                        help="this metric is the same both ways: one curve per language pair"
                        if pivot else "every pair of languages, no pivot")
    if pivot:  # pick languages, which every direction shares
        other = rows.target.where(rows.source.str.startswith(pivot), rows.source).map(short)
    else:
        other = rows.source.map(short) + " → " + rows.target.map(short)
    shown = list(dict.fromkeys(other))
    chosen = st.multiselect("Languages" if pivot else "Language pairs", shown, default=shown,
                            key="overview-pairs",
                            help="fewer curves, a readable plot; the chance line stays")
    rows = rows[other.isin(chosen or shown)]

    run, model = results.directory, results.manifest.get("model", {}).get("name")
    show_figure(report.heatmap(rows, metric, normalisation), f"heatmap-{metric}-{normalisation}",
                run, model)
    curves = report.curves(rows, metric, normalisation)
    if rows.ci_low.isna().all():  # e.g. mutual kNN: no per-sentence values to resample
        curves.update_layout(title=f"{report.metric_label(metric)} per layer ({normalisation}; "
                                   "no CI: one value per layer, not resampled)")
    show_figure(curves, f"curves-{metric}-{normalisation}", run, model)

    st.subheader("Peak layer per language pair")
    peaks = peak_layers(rows, metric, normalisation)
    peaks = peaks.assign(source=peaks.source.map(short), target=peaks.target.map(short))
    show_table(peaks.drop(columns="model").round(3), f"peaks-{metric}-{normalisation}", run)
    with st.expander("All values of this metric"):
        show_table(rows, f"values-{metric}-{normalisation}", run)


guarded(page)
