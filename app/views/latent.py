"""Latent language: logit-lens runs (``layer-analysis lens``) side by side — the answer's first
token vs its English translation's per layer, the running-text shares, entropy."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import guarded, pick_outputs, runs_root, show_figure, show_table
from layer_analysis.probe import report
from layer_analysis.probe.lens_run import discover_lens_runs, english_summary, read_lens_run


def page() -> None:
    st.title("Latent language")
    read = pick_outputs(
        discover_lens_runs(runs_root()), lambda path: read_lens_run(path)[1], "Lens runs",
        "latent-runs",
        empty=f"No lens runs under `{runs_root()}`: run `layer-analysis lens` (e.g. base, x- and "
              "m-model) and they appear here.",
        help="several models: their curves side by side")
    tables = list(read.values())
    if not tables:
        return
    table = pd.concat(tables, ignore_index=True)
    if table.duplicated(["model", "task", "target", "layer", "measure"]).any():
        st.warning("Two chosen runs are of the same model; their curves are drawn over each other.")
    left, right = st.columns(2)
    task = left.selectbox("Probe", list(dict.fromkeys(table.task)), key="latent-task",
                          help="translation / repetition: word probes; sentences: running text")
    rows = table[table.task == task]
    if "lens" in rows and rows["lens"].nunique() > 1:
        kind = st.radio("Lens", list(dict.fromkeys(rows["lens"])), horizontal=True,
                        key="latent-lens", help="logit lens, or the run's tuned lens")
        rows = rows[rows["lens"] == kind]
    targets = list(dict.fromkeys(rows.target))
    shown = right.multiselect("Languages", targets, default=targets, key="latent-targets")
    rows = rows[rows.target.isin(shown or targets)]
    st.caption(english_summary(rows))
    show_figure(report.latent_language(rows), f"latent-{task}")
    show_figure(report.latent_entropy(rows), f"entropy-{task}")
    with st.expander("All values"):
        show_table(rows, f"lens-{task}")


guarded(page)
