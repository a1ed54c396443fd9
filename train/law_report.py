"""Figures of the scaling law and the allocation, in the project's report style."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from layer_analysis.probe.languages import display_name
from layer_analysis.probe.report import PALETTE

from .allocate import Allocation
from .law import FAMILIES, LawFit

DASH = {0: "solid", 1: "dot", 2: "dash"}


def law_curves(points: pd.DataFrame, fits: list[LawFit], metric: str = "chrf++") -> go.Figure:
    """Measured points per language and every fitted family's curve (best family solid)."""
    fig = go.Figure()
    top = max(float(points.pairs.max()), 1.0)
    grid = np.linspace(0, top * 1.25, 200)
    for i, (language, group) in enumerate(points.groupby("language", sort=True)):
        colour = PALETTE[i % len(PALETTE)]
        name = display_name(language)
        fig.add_trace(go.Scatter(x=group.pairs, y=group[metric], mode="markers", name=name,
                                 marker={"color": colour, "size": 9}, legendgroup=language))
        for j, fit in enumerate(fits):
            if language in fit.baselines:
                fig.add_trace(go.Scatter(
                    x=grid, y=fit.predict(language, grid), mode="lines",
                    line={"color": colour, "dash": DASH.get(j, "dashdot")},
                    name=f"{name}: {fit.family}", legendgroup=language,
                    hovertemplate=f"{fit.family} law<br>%{{x:.0f}} pairs: %{{y:.2f}}<extra>"
                                  f"{name}</extra>"))
    best = fits[0]
    fig.update_layout(
        title=f"{metric} against translation pairs; best law ({best.family}, AICc "
              f"{best.aicc:.1f}): {FAMILIES[best.family].formula}",
        xaxis_title="English → L translation pairs in training", yaxis_title=metric)
    return fig


def allocation_bars(allocated: Allocation, uniform: Allocation, budget: int) -> go.Figure:
    """Pairs per language, law-optimal against uniform, with the predicted scores."""
    languages = list(allocated.pairs)
    fig = go.Figure()
    for i, (label, alloc) in enumerate((("law-optimal", allocated), ("uniform", uniform))):
        fig.add_trace(go.Bar(
            x=[display_name(x) for x in languages], y=[alloc.pairs[x] for x in languages],
            name=f"{label} ({alloc.objective} of predictions {alloc.value:.2f})",
            marker_color=PALETTE[i], text=[f"pred. {alloc.predicted[x]:.1f}" for x in languages],
            textposition="outside"))
    fig.update_layout(barmode="group", yaxis_title="translation pairs",
                      title=f"Allocation of {budget} translation pairs "
                            f"(objective: {allocated.objective} of predicted scores)")
    return fig


def predicted_vs_measured(table: pd.DataFrame, metric: str = "chrf++") -> go.Figure:
    """One point per (model, language): the law's prediction against the measured score."""
    fig = go.Figure()
    for i, (label, group) in enumerate(table.groupby("model", sort=False)):
        fig.add_trace(go.Scatter(
            x=group.predicted, y=group.measured, mode="markers+text", name=label,
            text=[display_name(x) for x in group.language], textposition="top center",
            marker={"color": PALETTE[i % len(PALETTE)], "size": 10}))
    low = float(min(table.predicted.min(), table.measured.min()))
    high = float(max(table.predicted.max(), table.measured.max()))
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="measured = predicted",
                             line={"color": "#7f7f7f", "dash": "dot"}))
    fig.update_layout(title=f"Predicted vs measured {metric}", xaxis_title=f"predicted {metric}",
                      yaxis_title=f"measured {metric}")
    return fig
