"""Transfer: ``layer-analysis transfer`` runs (curves with ceiling and chance, targets ranked at
a layer), ``correlate`` outputs (the correlation curve, the labelled scatter), an alignment
run's languages ranked at a layer (readable at 205), and a new transfer run."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from layer_analysis.app.dashboard import (
    guarded,
    pick_outputs,
    pick_run,
    runs_root,
    show_figure,
    show_table,
)
from layer_analysis.probe.correlate import curve_figure, read_correlation, scatter_figure
from layer_analysis.probe.models import DEFAULT_MODEL
from layer_analysis.probe.ranking import ranking_figure
from layer_analysis.probe.runs import discover_kind
from layer_analysis.probe.transfer import ProbeConfig
from layer_analysis.probe.transfer_run import (
    TransferRequest,
    best_layers,
    curves_figure,
    execute_transfer,
    read_transfer,
    summarise,
    targets_figure,
)


def transfer_runs() -> None:
    runs = pick_outputs(
        discover_kind(runs_root(), "transfer"), read_transfer, "Transfer runs", "transfer-runs",
        empty=f"No transfer runs under `{runs_root()}`: run `layer-analysis transfer` (or start "
              "one below) and they appear here.")
    if not runs:
        return
    name = st.selectbox("Details of", list(runs), key="transfer-detail")
    table, manifest = runs[name]
    data = manifest["data"]
    st.caption(f"{manifest['model']['name']}: probe trained on {data['source']} "
               f"({data['splits']['train']} sentences), tested on {len(data['languages']) - 1} "
               f"targets ({data['splits']['test']} sentences each).")
    if manifest.get("nonconverged"):
        st.warning(f"{len(manifest['nonconverged'])} probe fit(s) did not converge (listed in "
                   "the manifest)")
    metric = st.radio("Score", ["accuracy", "macro_f1"], horizontal=True, key="transfer-metric")
    summary = summarise(table)
    show_figure(curves_figure(summary, metric), "transfer-curves")
    variant = st.radio("Variant", ["centered", "raw"], horizontal=True, key="transfer-variant")
    best = best_layers(summary, metric)
    layers = sorted(int(x) for x in table.layer.unique())
    layer = st.select_slider("Layer", layers, key="transfer-layer",
                             value=int(best[best.variant == variant].layer.iloc[0]))
    show_figure(targets_figure(table, layer, variant, metric), "transfer-targets")
    with st.expander("Table"):
        show_table(table, "transfer")


def correlations() -> None:
    found = pick_outputs(
        discover_kind(runs_root(), "correlation"), read_correlation, "Correlations",
        "correlation-runs",
        empty="No correlate outputs here: `layer-analysis correlate RUN --scores ... --output "
              f"{runs_root()}/NAME` writes one.")
    for name, (table, points, manifest) in found.items():
        st.subheader(name)
        show_figure(curve_figure(table), f"correlation-{name}")
        show_figure(scatter_figure(points, manifest["scatter_layer"]), f"scatter-{name}")
        with st.expander("Correlation table"):
            show_table(table, f"correlation-{name}")


def alignment_ranking() -> None:
    results = pick_run("transfer-alignment", "Alignment run")
    if results is None:
        return
    layers = sorted(int(x) for x in results.table.layer.unique())
    default = results.manifest.get("analysis", {}).get("projection_layer")
    layer = st.select_slider("Layer", layers, key="ranking-layer",
                             value=default if default in layers else layers[len(layers) // 2])
    show_figure(ranking_figure(results.table, layer), "alignment-ranking")


def new_transfer_run() -> None:
    with st.form("new-transfer"):
        model = st.text_input("Model", DEFAULT_MODEL, key="new-transfer-model")
        data = st.text_input("Data (sib200 or a directory in its layout)", "sib200",
                             key="new-transfer-data")
        languages = st.text_input("Languages (comma-separated, or all)", "en,de,zh",
                                  key="new-transfer-languages")
        source = st.text_input("Source", "en", key="new-transfer-source")
        limit = st.number_input("Rows per split (0: all)", 0, 10_000, 0, key="new-transfer-limit")
        name = st.text_input("Run name (optional)", key="new-transfer-name").strip() or None
        started = st.form_submit_button("Start transfer run")
    if not started:
        return
    request = TransferRequest(
        model=model.strip(), data=data.strip(), source=source.strip(),
        languages=None if languages.strip() == "all" else languages.split(","),
        limit=int(limit) or None, output=Path(runs_root()), name=name,
        probe=ProbeConfig(), progress_bars=False)
    with st.spinner("extracting and fitting the probes…"):
        run_dir = execute_transfer(request, ["dashboard", "transfer"])
    st.success(f"Finished: {run_dir}")


def page() -> None:
    st.title("Transfer")
    transfer_runs()
    st.header("Alignment and transfer across languages")
    correlations()
    st.header("Languages ranked")
    alignment_ranking()
    with st.expander("New transfer run"):
        new_transfer_run()


guarded(page)
