"""Compare: several models on the same data (base vs x-model vs m-model): curves side by side,
their paired difference from the base with CIs (or, for runs that cannot be paired, the plain
difference of the curves), layer x layer and model x model CKA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import (
    activations,
    guarded,
    load_run,
    of_pooling,
    pick_pooling,
    run_label,
    selected_runs,
    show_figure,
    show_table,
)
from layer_analysis.probe import report
from layer_analysis.probe.report import METRIC_NAMES
from layer_analysis.probe.runs import (
    RunResults,
    data_differences,
    model_cka,
    paired_table,
    setting_differences,
)


@st.cache_data(show_spinner="Computing model x model CKA…", max_entries=8)
def _model_cka(paths: tuple[str, ...], _runs: list[RunResults]) -> pd.DataFrame:
    return model_cka(_runs)


@st.cache_data(show_spinner="Pairing the models sentence by sentence…", max_entries=8)
def _paired(paths: tuple[str, ...], names: tuple[str, ...], _runs: list[RunResults]
            ) -> tuple[pd.DataFrame, list[str]]:
    return paired_table(_runs, [activations(r) for r in _runs], list(names))


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


def paired_difference(runs: list[RunResults], names: list[str], metric: str, normalisation: str,
                      pooling: str | None = None) -> list[str]:
    """Each model minus the first (the base), sentence by sentence, with CIs and q-values;
    returns the models that cannot be paired with the base (another depth, say)."""
    paired, why = _paired(tuple(str(r.directory) for r in runs), tuple(names), runs)
    for line in why:
        st.caption(line)
    if paired.empty:
        return names[1:]
    chosen = paired[(paired.metric == metric) & (paired.normalisation == normalisation)]
    chosen = of_pooling(chosen, pooling)
    if not chosen.empty:
        show_figure(report.paired_curves(chosen, metric, normalisation),
                    f"paired-{metric}-{normalisation}")
        with st.expander("Paired differences as a table (p: sign-flip test; q: "
                         "Benjamini-Hochberg over layers)"):
            show_table(chosen, "paired")
    return [n for n in names[1:] if n not in set(paired.model)]


def plain_difference(rows: pd.DataFrame, base: str, metric: str, normalisation: str) -> None:
    """Curves minus the base's, without CIs: for runs that cannot be paired sentence by sentence."""
    diff, notes = difference(rows, base)
    for note in notes:
        st.caption(note)
    if diff.empty:
        st.info("The runs share no language pair and layer to subtract.")
        return
    fig = report.curves(diff, metric, normalisation)  # its dashed line: 0 (the null set above)
    fig.update_traces(name="no difference", selector={"name": "chance (random pairs)"})
    fig.update_layout(yaxis_title=f"Δ {report.metric_label(metric)} (model − {base})")
    aligned = "; aligned by relative depth" if notes else ""
    fig.update_layout(title=f"{METRIC_NAMES[metric]}: model minus {base} ({normalisation}; "
                            f"dashed: no difference; not paired, no CIs{aligned})")
    show_figure(fig, f"difference-{metric}-{normalisation}")
    with st.expander("Differences as a table"):
        show_table(diff.drop(columns=["ci_low", "ci_high", "null"]), "differences")


def page() -> None:
    st.title("Compare models")
    paths = selected_runs()
    runs = [r for r in (load_run(p) for p in paths) if r is not None and "model" in r.manifest]
    if len(runs) < 2:
        st.info("Select two or more runs in the sidebar (e.g. the base model and its adapters "
                "on the same data) to compare them.")
        if runs and not runs[0].cka.empty:
            cka = runs[0].cka
            show_figure(report.cka_heatmap(of_pooling(cka, pick_pooling(cka, "compare-pooling"))),
                        "cka-layers")
        return
    names = [r.manifest["model"]["name"] for r in runs]
    if len(set(names)) < len(names):
        names = [f"{n} ({run_label(r.directory)})" for n, r in zip(names, runs, strict=True)]
    table = pd.concat([r.table.assign(model=n) for r, n in zip(runs, names, strict=True)],
                      ignore_index=True)
    pooling = pick_pooling(table, "compare-pooling")
    table = of_pooling(table, pooling)
    left, middle, right = st.columns(3)
    metrics = [m for m in METRIC_NAMES if m in set(table.metric)]
    metric = left.selectbox("Metric", metrics, format_func=METRIC_NAMES.get, key="compare-metric")
    normalisation = middle.selectbox(
        "Normalisation", sorted(set(table.normalisation), key=lambda n: (n != "centered", n)),
        key="compare-norm")
    base = right.selectbox("Base model", names, key="compare-base")
    for line in setting_differences(runs):
        st.warning(line)

    show_figure(report.comparison(table, metric, normalisation),
                f"comparison-{metric}-{normalisation}")
    rows = table[(table.metric == metric) & (table.normalisation == normalisation)]
    stored = not data_differences(runs) and all(activations(r) is not None for r in runs)
    ordered = [names.index(base), *(i for i, n in enumerate(names) if n != base)]
    unpaired = [n for n in names if n != base]
    if stored:
        unpaired = paired_difference([runs[i] for i in ordered], [names[i] for i in ordered],
                                     metric, normalisation, pooling)
    if unpaired:
        plain_difference(rows[rows.model.isin([base, *unpaired])], base, metric, normalisation)

    st.subheader("Representational similarity (linear CKA)")
    chosen = st.selectbox("Layer x layer CKA of", names, key="compare-cka-run")
    run = runs[names.index(chosen)]
    if not run.cka.empty:
        show_figure(report.cka_heatmap(of_pooling(run.cka, pooling),
                                       f"linear CKA between layers of {chosen}"), "cka-layers")
    if data_differences(runs):
        st.info("Model x model CKA needs the same sentences; these runs used different data.")
    elif stored:
        cka = _model_cka(tuple(str(runs[i].directory) for i in ordered), [runs[i] for i in ordered])
        show_figure(report.cka_heatmap(of_pooling(cka, pooling),
                                       f"linear CKA between {base} and the other models"),
                    "cka-models")


guarded(page)
