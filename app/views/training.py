"""Alignment through training: outputs of ``layer-analysis train --track-every N`` — centered
P@1 per layer against the step, before vs after, the peak per step, and the loss."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from layer_analysis.app.dashboard import guarded, pick_outputs, runs_root, show_figure, show_table
from layer_analysis.probe import report
from layer_analysis.train.tracking import discover_tracked, peak_alignment, read_tracked


def peaks_by_step(logs: dict[str, pd.DataFrame]) -> go.Figure:
    """Per training output and language, the peak-layer P@1 (both directions) against step."""
    fig = go.Figure()
    for i, (name, log) in enumerate(logs.items()):
        rows = pd.concat([peak_alignment(log, int(s)).assign(step=s)
                          for s in sorted(log.step.unique())])
        for j, (language, part) in enumerate(rows.groupby("language", sort=False)):
            fig.add_trace(go.Scatter(
                x=part.step, y=part.value, mode="lines+markers", name=f"{name}: {language}",
                line={"color": report.PALETTE[(i * 3 + j) % len(report.PALETTE)]},
                customdata=part.layer, hovertemplate="step %{x}: %{y:.3f} (layer %{customdata})"))
    fig.update_layout(title="Alignment at the best layer against the step (centered P@1, both "
                            "directions averaged)", xaxis_title="step", yaxis_title="P@1",
                      yaxis_range=[0, 1], legend={"orientation": "h", "y": -0.2})
    return fig


def page() -> None:
    st.title("Alignment through training")
    read = pick_outputs(
        discover_tracked(runs_root()), read_tracked, "Training outputs", "training-runs",
        empty=f"No tracked training outputs under `{runs_root()}`: train with `layer-analysis "
              "train --track-every N --output RUNS/NAME` and they appear here.",
        help="several: their peaks side by side")
    if not read:
        return
    logs = {name: log for name, (log, _) in read.items()}
    losses = {name: loss for name, (_, loss) in read.items()}
    show_figure(peaks_by_step(logs), "training-peaks")
    name = st.selectbox("Details of", list(logs), key="training-detail")
    log = logs[name]
    st.caption(f"{log.step.nunique()} probes of {int(log.sentences.iloc[0])} held-out sentences "
               f"per language; {log.groupby('step').seconds.first().mean():.1f} s per probe.")
    show_figure(report.training_heatmap(log), "training-heatmap")
    show_figure(report.training_curves(log), "training-curves")
    if not losses[name].empty:
        show_figure(report.training_loss(losses[name]), "training-loss")
    with st.expander("All values"):
        show_table(log, "alignment-log")


guarded(page)
