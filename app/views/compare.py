"""Compare: several models on the same data (base vs x-model vs m-model): curves side by side,
their difference from the first, layer x layer and model x model CKA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import (
    activations,
    guarded,
    load_run,
    run_label,
    selected_runs,
    show_figure,
    show_table,
)
from layer_analysis.probe import report
from layer_analysis.probe.report import METRIC_NAMES
from layer_analysis.probe.runs import RunResults, data_differences, model_cka


@st.cache_data(show_spinner="Computing model x model CKA…", max_entries=8)
def _model_cka(paths: tuple[str, ...], _runs: list[RunResults]) -> pd.DataFrame:
    return model_cka(_runs)


def difference(table: pd.DataFrame, base: str) -> tuple[pd.DataFrame, list[str]]:
    """Each other model's value minus the base model's, per model, pair and layer (tidy, no
    CIs). Models as deep as the base are subtracted layer by layer; a model of another depth at
    the same *relative* depth (its layer l against the base's l * L_base / L_model, linearly
    interpolated). Returns the differences and one note per model aligned by depth."""
    keys = ["source", "target", "metric", "normalisation"]
    reference = table[table.model == base]
    base_depth = int(reference.layer.max())
    references = {key: group.sort_values("layer")
                  for key, group in reference.groupby(keys, sort=False)}
    parts, notes = [], []
    for model, rows in table[table.model != base].groupby("model", sort=False):
        depth = int(rows.layer.max())
        if depth != base_depth:
            notes.append(f"{model} ({depth} layers) aligned with {base} ({base_depth} layers) by "
                         f"relative depth: layer l against {base}'s l × {base_depth}/{depth}")
        for key, group in rows.groupby(keys, sort=False):
            ref = references.get(key)
            if ref is None:
                continue
            at = group.layer.to_numpy() * base_depth / depth
            parts.append(group.assign(value=group.value.to_numpy()
                                      - np.interp(at, ref.layer.to_numpy(), ref.value.to_numpy())))
    diff = pd.concat(parts, ignore_index=True) if parts else table.iloc[:0]
    return diff.assign(ci_low=float("nan"), ci_high=float("nan"), null=0.0), notes


def page() -> None:
    st.title("Compare models")
    paths = selected_runs()
    runs = [r for r in (load_run(p) for p in paths) if r is not None and "model" in r.manifest]
    if len(runs) < 2:
        st.info("Select two or more runs in the sidebar (e.g. the base model and its adapters "
                "on the same data) to compare them.")
        if runs and not runs[0].cka.empty:
            show_figure(report.cka_heatmap(runs[0].cka), "cka-layers")
        return
    names = [r.manifest["model"]["name"] for r in runs]
    if len(set(names)) < len(names):
        names = [f"{n} ({run_label(r.directory)})" for n, r in zip(names, runs, strict=True)]
    table = pd.concat([r.table.assign(model=n) for r, n in zip(runs, names, strict=True)],
                      ignore_index=True)
    left, middle, right = st.columns(3)
    metrics = [m for m in METRIC_NAMES if m in set(table.metric)]
    metric = left.selectbox("Metric", metrics, format_func=METRIC_NAMES.get, key="compare-metric")
    normalisation = middle.selectbox(
        "Normalisation", sorted(set(table.normalisation), key=lambda n: (n != "centered", n)),
        key="compare-norm")
    base = right.selectbox("Base model", names, key="compare-base")

    show_figure(report.comparison(table, metric, normalisation),
                f"comparison-{metric}-{normalisation}")
    rows = table[(table.metric == metric) & (table.normalisation == normalisation)]
    diff, notes = difference(rows, base)
    for note in notes:
        st.caption(note)
    if diff.empty:
        st.info("The runs share no language pair and layer to subtract.")
    else:
        fig = report.curves(diff, metric, normalisation)
        aligned = "; aligned by relative depth" if notes else ""
        fig.update_layout(title=f"{METRIC_NAMES[metric]}: model minus {base} ({normalisation}; "
                                f"dashed: no difference{aligned})")
        show_figure(fig, f"difference-{metric}-{normalisation}")
        with st.expander("Differences as a table"):
            show_table(diff.drop(columns=["ci_low", "ci_high", "null"]), "differences")

    st.subheader("Representational similarity (linear CKA)")
    chosen = st.selectbox("Layer x layer CKA of", names, key="compare-cka-run")
    run = runs[names.index(chosen)]
    if not run.cka.empty:
        show_figure(report.cka_heatmap(run.cka, f"linear CKA between layers of {chosen}"),
                    "cka-layers")
    if data_differences(runs):
        st.info("Model x model CKA needs the same sentences; these runs used different data.")
    elif all(activations(r) is not None for r in runs):
        ordered = [runs[names.index(base)], *(r for r, n in zip(runs, names, strict=True)
                                              if n != base)]
        cka = _model_cka(tuple(str(r.directory) for r in ordered), ordered)
        show_figure(report.cka_heatmap(cka, f"linear CKA between {base} and the other models"),
                    "cka-models")


guarded(page)
