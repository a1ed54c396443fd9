"""Activation patching: ``layer-analysis patch`` runs — the four probabilities over the patched
layer with the switch layers, the controls, mean vs single latent; several runs (base, x-,
m-model) drawn together."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import guarded, pick_outputs, runs_root, show_figure, show_table
from layer_analysis.probe.patch_run import patch_figures, patch_summary, read_patch_run
from layer_analysis.probe.runs import discover_kind


def page() -> None:
    st.title("Activation patching")
    runs = pick_outputs(
        discover_kind(runs_root(), "patch"), read_patch_run, "Patch runs", "patch-runs",
        empty=f"No patch runs under `{runs_root()}`: run `layer-analysis patch` (base, x- and "
              "m-model) and they appear here.",
        help="several: drawn together, one curve set per model")
    if not runs:
        return
    names = [manifest["model"]["name"] for manifest, _, _ in runs.values()]
    if len(set(names)) < len(names):
        st.warning("two chosen runs share a model name; showing the first of each")
    kept = {n: r for n, r in zip(names, runs.values(), strict=True)}
    table = pd.concat([t.assign(model=n) for n, (_, t, _) in kept.items()], ignore_index=True)
    switch = pd.concat([s.assign(model=n) for n, (_, _, s) in kept.items()], ignore_index=True)
    for line in patch_summary(table, switch):
        st.markdown(f"- {line}")
    for manifest, _, _ in kept.values():
        bad = [s for s, c in manifest["patch"]["checks"].items() if not c["self_patch_identical"]]
        if bad:
            st.error(f"{manifest['model']['name']}: the self-patch changed the output in "
                     f"{', '.join(bad)}: those numbers are suspect")
    for name, figure in patch_figures(table, switch).items():
        show_figure(figure, f"patch-{name}")
    with st.expander("Switch layers"):
        show_table(switch, "patch-switch")
    with st.expander("Tidy table"):
        show_table(table, "patching")


guarded(page)
