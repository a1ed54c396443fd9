"""Plotly figures of an analysis and their export: one self-contained HTML, PNG and PDF files.

Every figure title names its metric and normalisation; an exported figure's title also names the
model and the run (``identity``), and its file is ``RUN-FIGURE.png`` (``export_name``), so the
exports of two runs never share a title or a name. Static exports go through one
``plotly.io.write_images`` call, so one browser start serves them all.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from .analysis import paired_with_english
from .errors import DataError
from .files import atomic_write_text

METRIC_NAMES = {"p@1": "P@1", "r@5": "recall@5", "r@10": "recall@10", "mrr": "MRR",
                "mexa": "MEXA (top in row and column)",
                "cosine": "cosine of translations",
                "cosine_adjusted": "baseline-adjusted cosine"}
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6",
           "#9d755d", "#bab0ac", "#eeca3b", "#17becf", "#7f7f7f", "#393b79", "#8c6d31"]


BOUNDED = ("p@1", "r@5", "r@10", "mrr", "mexa", "mutual_knn")  # shares in [0, 1]


def metric_label(metric: str) -> str:
    """A metric's readable name (``mutual_knn@10`` -> ``mutual kNN overlap (k = 10)``)."""
    if metric.startswith("mutual_knn@"):
        return f"mutual kNN overlap (k = {metric.partition('@')[2]})"
    return METRIC_NAMES.get(metric, metric)


def _select(table: pd.DataFrame, metric: str, normalisation: str) -> pd.DataFrame:
    rows = table[(table.metric == metric) & (table.normalisation == normalisation)]
    if rows.empty:
        raise DataError(f"no {metric} values with normalisation {normalisation!r} in the results")
    pair = rows.source.str.split("@").str[0] + " → " + rows.target.str.split("@").str[0]
    if "pooling" in rows and rows.pooling.nunique() > 1:  # one line per pooling, never merged
        pair = pair + " (" + rows.pooling + ")"
    if "model" in rows and rows.model.nunique() > 1:  # one line per model and pair, never merged
        pair = rows.model + ": " + pair
    return rows.assign(pair=pair)


def poolings_of(table: pd.DataFrame) -> list[str]:
    """The poolings a table holds, in order (one, unnamed, for tables without the column)."""
    return list(dict.fromkeys(table.pooling)) if "pooling" in table and not table.empty else [""]


def heatmap(table: pd.DataFrame, metric: str = "p@1", normalisation: str = "centered") -> go.Figure:
    """Language pairs × layers, one cell per value."""
    rows = _select(table, metric, normalisation)
    grid = rows.pivot_table(index="pair", columns="layer", values="value", sort=False)
    scale = {"zmin": 0, "zmax": 1} if metric.startswith(BOUNDED) else {}  # comparable across runs
    fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), **scale,
                               colorscale="Viridis", colorbar={"title": metric_label(metric)},
                               hovertemplate="%{y}<br>layer %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"{metric_label(metric)} per layer ({normalisation})",
                      xaxis_title="layer", yaxis_title="source → target", yaxis_autorange="reversed",
                      yaxis_automargin=True,  # long pair names are not clipped in PNG/PDF
                      height=max(320, 28 * len(grid) + 160))
    return fig


def band(rows: pd.DataFrame, color: str, opacity: float = 0.18, **extra: Any) -> go.Scatter:
    """The shaded CI band (``ci_low``..``ci_high`` over ``layer``) under a curve, rows sorted by
    layer; not in the legend."""
    return go.Scatter(x=list(rows.layer) + list(rows.layer[::-1]),
                      y=list(rows.ci_high) + list(rows.ci_low[::-1]), fill="toself",
                      fillcolor=color, opacity=opacity, line={"width": 0}, hoverinfo="skip",
                      showlegend=False, **extra)


LEGEND_ROWS = 10  # more curves than this: the legend goes under the plot


def curves(table: pd.DataFrame, metric: str = "p@1", normalisation: str = "centered",
           by: str = "pair") -> go.Figure:
    """One line per language pair (or per model), a 95 % bootstrap band each, and chance level."""
    rows = _select(table, metric, normalisation)
    fig = go.Figure()
    null = rows.groupby("layer").null.mean()  # first, so the legend always shows it
    fig.add_trace(go.Scatter(x=null.index, y=null.values, mode="lines", name="chance (random pairs)",
                             line={"color": "black", "dash": "dash", "width": 1}))
    for i, (name, group) in enumerate(rows.groupby(by, sort=False)):
        color = PALETTE[i % len(PALETTE)]
        group = group.sort_values("layer")
        if group.ci_low.notna().any():
            fig.add_trace(band(group, color, legendgroup=str(name)))
        fig.add_trace(go.Scatter(x=group.layer, y=group.value, mode="lines+markers", name=str(name),
                                 line={"color": color}, legendgroup=str(name)))
    bands = "; bands: 95 % bootstrap CI" if rows.ci_low.notna().any() else ""
    fig.update_layout(title=f"{metric_label(metric)} per layer ({normalisation}{bands})",
                      xaxis_title="layer", yaxis_title=metric_label(metric), hovermode="x unified")
    if rows[by].nunique() > LEGEND_ROWS:  # a side legend would be cut off: put it below, wrapped
        fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.15, "x": 0})
    return fig


def paired_curves(paired: pd.DataFrame, metric: str = "p@1", normalisation: str = "centered"
                  ) -> go.Figure:
    """Paired differences (model − reference) per layer and directed pair, with 95 % bootstrap
    bands; filled markers where the layer moved (BH q < 0.05), hollow where not."""
    rows = _select(paired, metric, normalisation)
    fig = go.Figure()
    fig.add_hline(y=0, line={"color": "black", "dash": "dash", "width": 1})
    for i, (name, group) in enumerate(rows.groupby("pair", sort=False)):
        color = PALETTE[i % len(PALETTE)]
        group = group.sort_values("layer")
        fig.add_trace(band(group, color, legendgroup=str(name)))
        fig.add_trace(go.Scatter(
            x=group.layer, y=group.difference, mode="lines+markers", name=str(name),
            line={"color": color}, legendgroup=str(name),
            marker={"symbol": ["circle" if q < 0.05 else "circle-open" for q in group.q_value]}))
    reference = ", ".join(dict.fromkeys(rows.reference))
    fig.update_layout(title=f"paired difference in {metric_label(metric)} per layer vs {reference} "
                            f"({normalisation}; bands: 95 % bootstrap CI; filled: q < 0.05)",
                      xaxis_title="layer", yaxis_title=f"Δ {metric_label(metric)}",
                      hovermode="x unified")
    if rows.pair.nunique() > LEGEND_ROWS:
        fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.15, "x": 0})
    return fig


def cka_heatmap(cka: pd.DataFrame, title: str = "linear CKA between layers") -> go.Figure:
    """Layer × layer (or model × model) linear CKA."""
    grid = cka.pivot_table(index="layer_a", columns="layer_b", values="value", sort=False)
    fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index),
                               zmin=0, zmax=1, colorscale="Viridis", colorbar={"title": "CKA"}))
    fig.update_layout(title=title, xaxis_title=cka.attrs.get("x", "layer"),
                      yaxis_title=cka.attrs.get("y", "layer"), yaxis_autorange="reversed")
    return fig


def comparison(table: pd.DataFrame, metric: str = "p@1", normalisation: str = "centered"
               ) -> go.Figure:
    """Per model, the metric averaged over its language pairs, with the mean CI band."""
    rows = _select(table, metric, normalisation)
    if "pooling" in rows and rows.pooling.nunique() > 1:  # never averaged over poolings
        rows = rows.assign(model=rows.model + " (" + rows.pooling + ")")
    mean = rows.groupby(["model", "layer"], sort=False)[["value", "ci_low", "ci_high", "null"]]
    mean = mean.mean().reset_index()
    mean["metric"], mean["normalisation"] = metric, normalisation
    mean["source"], mean["target"] = "mean", "pairs"
    fig = curves(mean, metric, normalisation, by="model")
    fig.update_layout(title=f"{metric_label(metric)} per layer, mean over language pairs "
                            f"({normalisation}), by model")
    return fig


def latent_language(table: pd.DataFrame, columns: int = 4) -> go.Figure:
    """Word probes through the logit lens: per target language, the probability of the answer's
    first token (solid) and of its English translation's (dashed) per layer, with 95 % bands;
    one panel per target (and one line pair per model when several)."""
    from plotly.subplots import make_subplots

    targets = list(dict.fromkeys(table.target))
    models = list(dict.fromkeys(table.model))
    rows = -(-len(targets) // columns)
    fig = make_subplots(rows=rows, cols=min(columns, len(targets)), shared_yaxes=True,
                        subplot_titles=[f"→ {t.split('_')[0]}" for t in targets],
                        horizontal_spacing=0.04, vertical_spacing=0.12)
    for i, target in enumerate(targets):
        row, col = i // columns + 1, i % columns + 1
        for m, model in enumerate(models):
            own = "own language" if "sentences" in set(table.task) else "answer"
            for measure, dash, label in (("p_target", "solid", own),
                                         ("p_english", "dash", "English")):
                part = table[(table.target == target) & (table.model == model)
                             & (table.measure == measure)].sort_values("layer")
                color = PALETTE[(2 * m + (measure == "p_english")) % len(PALETTE)]
                name = f"{model}: {label}" if len(models) > 1 else label
                fig.add_trace(band(part, color), row=row, col=col)
                fig.add_trace(go.Scatter(x=part.layer, y=part.value, mode="lines", name=name,
                                         line={"color": color, "dash": dash}, legendgroup=name,
                                         showlegend=i == 0), row=row, col=col)
    task = ", ".join(dict.fromkeys(table.task))
    kind = "Tuned lens" if "lens" in table and set(table["lens"]) == {"tuned"} else "Logit lens"
    title = (f"{kind}, {task}: the answer's first token vs its English translation's<br>"
             "<sup>mean probability over concepts; bands: 95 % bootstrap CI</sup>")
    if task == "sentences":
        title = (f"{kind} over running text: share of the top next-token mass in the text's "
                 "own language vs English<br><sup>mean over sampled positions; bands: 95 % "
                 "bootstrap CI</sup>")
    fig.update_layout(title=title,
                      height=max(420, 330 * rows), legend={"orientation": "h", "y": -0.12})
    top = float(table[table.measure.isin(["p_target", "p_english"])].ci_high.max())
    fig.update_yaxes(range=[0, min(1.0, 1.1 * top) if top > 0 else 1], col=None)  # shared
    fig.update_yaxes(title_text="probability", col=1)
    fig.update_xaxes(title_text="layer", row=rows)
    return fig


def latent_entropy(table: pd.DataFrame) -> go.Figure:
    """Entropy (nats) of the logit lens's next-token distribution per layer, one line per target
    (and model), with 95 % bands over concepts."""
    fig = go.Figure()
    rows = table[table.measure == "entropy"]
    for i, ((model, target), part) in enumerate(rows.groupby(["model", "target"], sort=False)):
        part, color = part.sort_values("layer"), PALETTE[i % len(PALETTE)]
        name = f"{model}: {target}" if rows.model.nunique() > 1 else target
        fig.add_trace(band(part, color))
        fig.add_trace(go.Scatter(x=part.layer, y=part.value, mode="lines", name=name,
                                 line={"color": color}))
    fig.update_layout(title="Entropy of the logit lens's next-token distribution (nats)",
                      xaxis_title="layer", yaxis_title="entropy (nats)")
    return fig


def lens_kl(table: pd.DataFrame) -> go.Figure:
    """KL(final || lens) per layer, logit lens (dashed) vs tuned lens (solid), one colour per
    language, with 95 % bands over positions."""
    fig = go.Figure()
    for i, (language, rows) in enumerate(table.groupby("language", sort=False)):
        color = PALETTE[i % len(PALETTE)]
        for name, dash in (("logit", "dash"), ("tuned", "solid")):
            part = rows[rows.lens == name].sort_values("layer")
            fig.add_trace(band(part, color, opacity=0.12))
            fig.add_trace(go.Scatter(x=part.layer, y=part.kl, mode="lines",
                                     name=f"{language.split('_')[0]}, {name} lens",
                                     line={"color": color, "dash": dash}))
    fig.update_layout(title="KL(final distribution || lens) per layer: logit lens (dashed) vs "
                            "multilingual tuned lens (solid)", xaxis_title="layer",
                      yaxis_title="KL (nats)", legend={"orientation": "h", "y": -0.15})
    return fig


def training_heatmap(log: pd.DataFrame, columns: int = 3) -> go.Figure:
    """Alignment through training: per language, centered P@1 (both directions averaged) per
    layer (rows) against the optimizer step (columns)."""
    from plotly.subplots import make_subplots

    log = paired_with_english(log)
    log = log.assign(language=log.language.str.split("_").str[0])
    languages = list(dict.fromkeys(log.language))
    rows = -(-len(languages) // columns)
    fig = make_subplots(rows=rows, cols=min(columns, len(languages)), shared_yaxes=True,
                        subplot_titles=[f"English ↔ {x}" for x in languages],
                        horizontal_spacing=0.05, vertical_spacing=0.12)
    for i, language in enumerate(languages):
        grid = log[log.language == language].pivot_table(index="layer", columns="step",
                                                         values="value")
        fig.add_trace(go.Heatmap(z=grid.values, x=[str(s) for s in grid.columns],
                                 y=list(grid.index), zmin=0, zmax=1, colorscale="Viridis",
                                 showscale=i == 0, colorbar={"title": "P@1"},
                                 hovertemplate="step %{x}, layer %{y}: %{z:.3f}<extra></extra>"),
                      row=i // columns + 1, col=i % columns + 1)
    fig.update_layout(title="Alignment through training: centered P@1 per layer and step "
                            "(both directions averaged)", height=max(420, 380 * rows))
    fig.update_xaxes(title_text="step", type="category")
    fig.update_yaxes(title_text="layer", col=1)
    return fig


def training_curves(log: pd.DataFrame) -> go.Figure:
    """Per layer, centered P@1 before training (dashed) and at the last step (solid), one colour
    per language and direction, with 95 % bootstrap bands."""
    fig = go.Figure()
    first, last = int(log.step.min()), int(log.step.max())
    pairs = log.source.str.split("_").str[0] + " → " + log.target.str.split("_").str[0]
    log = log.assign(pair=pairs)
    for i, (pair, rows) in enumerate(log.groupby("pair", sort=False)):
        color = PALETTE[i % len(PALETTE)]
        for step, dash in ((first, "dash"), (last, "solid")):
            part = rows[rows.step == step].sort_values("layer")
            fig.add_trace(band(part, color, opacity=0.12))
            fig.add_trace(go.Scatter(x=part.layer, y=part.value, mode="lines",
                                     name=f"{pair}, step {step}", legendgroup=pair,
                                     line={"color": color, "dash": dash}))
    fig.update_layout(title=f"Centered P@1 per layer: step {first} (dashed) vs step {last} "
                            "(solid)<br><sup>bands: 95 % bootstrap CI over sentences</sup>",
                      xaxis_title="layer", yaxis_title="P@1", yaxis_range=[0, 1],
                      legend={"orientation": "h", "y": -0.15})
    return fig


def training_loss(log: pd.DataFrame) -> go.Figure:
    """The LM loss (and the alignment loss, when trained with it) against the step."""
    fig = go.Figure()
    for i, column in enumerate(c for c in ("loss", "alignment_loss") if c in log):
        fig.add_trace(go.Scatter(x=log.step, y=log[column], mode="lines",
                                 name="LM loss (responses)" if column == "loss"
                                 else "alignment loss (InfoNCE)", line={"color": PALETTE[i]}))
    fig.update_layout(title="Training loss", xaxis_title="step", yaxis_title="loss")
    return fig


def neuron_counts(counts: pd.DataFrame) -> go.Figure:
    """Language-specific neurons per layer, one line per language."""
    fig = go.Figure()
    for i, (language, rows) in enumerate(counts.groupby("language", sort=False)):
        fig.add_trace(go.Scatter(x=rows.layer, y=rows.neurons, mode="lines+markers",
                                 name=language, line={"color": PALETTE[i % len(PALETTE)]}))
    fig.update_layout(title="Language-specific neurons per layer (LAPE)", xaxis_title="layer",
                      yaxis_title="neurons")
    return fig


def neuron_overlap(table: pd.DataFrame) -> go.Figure:
    """Neurons specific to both languages of a pair (the diagonal: each language's total)."""
    grid = table.pivot_table(index="language_a", columns="language_b", values="shared",
                             sort=False).astype(int)
    fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index),
                               colorscale="Viridis", colorbar={"title": "neurons"},
                               texttemplate="%{z}",
                               hovertemplate="%{y} & %{x}: %{z}<extra></extra>"))
    fig.update_layout(title="Language neurons shared between languages (all layers)",
                      xaxis_title="language", yaxis_title="language")
    return fig


def deactivation(table: pd.DataFrame) -> go.Figure:
    """Per deactivated language: every language's NLL rise (nats/token) with the language's
    neurons zeroed and with as many random ones, with 95 % CIs."""
    from plotly.subplots import make_subplots

    table = table[table.control != "language - random"]
    languages = list(dict.fromkeys(table.deactivated))
    fig = make_subplots(rows=1, cols=len(languages), shared_yaxes=True,
                        subplot_titles=[f"{x} zeroed" for x in languages])
    for col, language in enumerate(languages, 1):
        rows = table[table.deactivated == language]
        for i, kind in enumerate(("language", "random")):
            part = rows[rows.control == kind]
            fig.add_trace(go.Bar(x=part.evaluated, y=part.delta_nll, name=f"{kind} neurons",
                                 marker_color=PALETTE[i], showlegend=col == 1,
                                 legendgroup=kind, error_y={
                                     "type": "data", "symmetric": False,
                                     "array": part.ci_high - part.delta_nll,
                                     "arrayminus": part.delta_nll - part.ci_low}),
                          row=1, col=col)
    fig.update_layout(title="Deactivation: rise in NLL (nats/token) per evaluated language",
                      barmode="group", yaxis_title="Δ NLL")
    fig.update_xaxes(title_text="evaluated language")
    return fig


def neuron_changes(changes: pd.DataFrame) -> go.Figure:
    """Per later run and language: language neurons that appeared and vanished, per layer."""
    fig = go.Figure()
    groups = changes.groupby(["after_run", "language"], sort=False)
    for i, ((run, language), rows) in enumerate(groups):
        color = PALETTE[i % len(PALETTE)]
        label = f"{Path(run).name}: {language}"
        fig.add_trace(go.Scatter(x=rows.layer, y=rows.appeared, name=f"{label} appeared",
                                 line={"color": color}, legendgroup=label))
        fig.add_trace(go.Scatter(x=rows.layer, y=-rows.vanished, name=f"{label} vanished",
                                 line={"color": color, "dash": "dot"}, legendgroup=label))
    fig.update_layout(title="Language neurons appeared (up) and vanished (down) against the "
                            "first run", xaxis_title="layer", yaxis_title="neurons")
    return fig


def intervention_effects(table: pd.DataFrame) -> go.Figure:
    """Per measure: the change against no intervention (paired 95 % CI) at every strength, the
    intervention beside its control."""
    from plotly.subplots import make_subplots

    table = table[table.control != "none"]
    measures = list(dict.fromkeys(table.measure))
    fig = make_subplots(rows=1, cols=len(measures), subplot_titles=measures)
    for col, measure in enumerate(measures, 1):
        rows = table[table.measure == measure]
        for i, (control, part) in enumerate(rows.groupby("control", sort=False)):
            fig.add_trace(go.Bar(x=[f"{s:g}" for s in part.strength], y=part.delta, name=control,
                                 marker_color=PALETTE[i % len(PALETTE)], showlegend=col == 1,
                                 legendgroup=control, error_y={
                                     "type": "data", "symmetric": False,
                                     "array": part.delta_ci_high - part.delta,
                                     "arrayminus": part.delta - part.delta_ci_low}),
                          row=1, col=col)
    first = table.iloc[0] if len(table) else None
    where = f" at layer {first.layer}" if first is not None else ""
    fig.update_layout(title=f"Effect of the intervention{where} vs none (paired 95 % CI)",
                      barmode="group")
    fig.update_xaxes(title_text="strength")
    fig.update_yaxes(title_text="change vs no intervention", col=1)
    return fig


def scatter(projection: pd.DataFrame, pooling: str | None = None) -> go.Figure:
    """Sentences of one layer and pooling (default: the first) in 2-D, coloured by language, the
    sentence on hover."""
    if "pooling" in projection:
        projection = projection[projection.pooling == (pooling or projection.pooling.iloc[0])]
    fig = go.Figure()
    for i, (language, group) in enumerate(projection.groupby("language", sort=False)):
        fig.add_trace(go.Scattergl(
            x=group.x, y=group.y, mode="markers", name=language,
            marker={"color": PALETTE[i % len(PALETTE)], "size": 6, "opacity": 0.8},
            text=[html.escape(t[:120]) for t in group.text],
            hovertemplate="%{text}<extra>" + language + "</extra>"))
    first = projection.iloc[0]
    pooled = f", {first.pooling} pooling" if "pooling" in projection else ""
    x_title, y_title = projection_axes(projection)
    fig.update_layout(title=f"{first.method.upper()} of layer {first.layer}{pooled} (each "
                            "language mean-centered)",
                      xaxis={"title": x_title, "showticklabels": False},
                      yaxis={"title": y_title, "showticklabels": False},
                      height=650, yaxis_scaleanchor="x")  # tall, and distances true in 2-D
    return fig


def projection_axes(projection: pd.DataFrame) -> tuple[str, str]:
    """Axis titles of a projection: for PCA each component's share of the variance, where the
    projection records it (``explained_x``, ``explained_y``); UMAP's axes have no such share."""
    method = str(projection.method.iloc[0])
    if method != "pca":
        return f"{method.upper()} 1", f"{method.upper()} 2"
    shares = [float(projection[c].iloc[0]) if c in projection else float("nan")
              for c in ("explained_x", "explained_y")]
    return tuple(f"PC {i} ({share:.1%} of the variance)" if share == share else f"PC {i}"
                 for i, share in enumerate(shares, 1))


def identity(model: str | None, run: str | Path | None = None) -> str:
    """Which run an export is from, as its titles say it: ``MODEL · run NAME`` (``run``: the
    run's name or directory; a comparison's ``model`` is ``A vs B``)."""
    name = None if run is None else Path(run).name
    return " · ".join(part for part in (model, name and f"run {name}") if part)


def export_name(run: str | Path | None, figure: str, ext: str) -> str:
    """The file name of a figure or table exported from a run: ``RUN-FIGURE.EXT`` (``run``: the
    run's name or directory; without one, ``FIGURE.EXT``), so two runs' exports never share a
    name. The dashboard's downloads and ``figures/`` both use it."""
    stem = figure if run is None else f"{Path(run).name}-{figure}"
    return f"{stem}.{ext.lstrip('.')}" if ext else stem


def label_figure(fig: go.Figure, label: str, name: str = "") -> go.Figure:
    """A copy of ``fig`` whose title carries ``label`` (``identity``) on a last, smaller line
    (unchanged when it already does); ``name`` stands in for a missing title."""
    copy, shown = go.Figure(fig), html.escape(label)
    text = copy.layout.title.text or name
    if shown and shown not in text:
        copy.update_layout(title_text=f"{text}<br><sup>{shown}</sup>")
    return copy


def labelled(figures: dict[str, go.Figure], label: str) -> dict[str, go.Figure]:
    """``label_figure`` of every figure."""
    return {name: label_figure(fig, label, name) for name, fig in figures.items()}


def export(figures: dict[str, go.Figure], directory: Path, title: str,
           intro: Sequence[str] = (), static: bool = True, model: str | None = None
           ) -> list[Path]:
    """A run's figures as ``DIRECTORY/report.html`` and, when ``static``,
    ``DIRECTORY/figures/RUN-FIGURE.png|pdf``; every figure's title names ``model`` and the run
    (the directory's name)."""
    figures = labelled(figures, identity(model, directory))
    write_html(figures, directory / "report.html", title, intro, run=directory.name)
    paths = [directory / "report.html"]
    if static:
        paths += write_static(figures, directory / "figures", run=directory.name)
    return paths


def write_html(figures: dict[str, go.Figure], path: Path, title: str,
               intro: Sequence[str] = (), run: str | None = None) -> None:
    """One self-contained HTML page (plotly.js embedded once), written atomically; each line of
    ``intro`` is a paragraph above the figures. A figure's camera button saves
    ``export_name(run, figure)``."""
    from plotly.offline import get_plotlyjs

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}</style>"
             f"<script>{get_plotlyjs()}</script></head><body><h1>{html.escape(title)}</h1>"
             + "".join(f"<p>{html.escape(line)}</p>" for line in intro)]
    for name, fig in figures.items():
        parts.append(f"<h2 id='{name}'>{html.escape(name)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, config={
            "toImageButtonOptions": {"filename": export_name(run, name, "")}}))
    parts.append("</body></html>")
    atomic_write_text(path, "".join(parts))


def find_browser() -> str | None:
    """A Chrome/Chromium for kaleido: $BROWSER_PATH, else Debian's chromium on PATH."""
    for candidate in (os.environ.get("BROWSER_PATH"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _use_browser() -> None:
    browser = find_browser()
    if browser is None:
        raise DataError("PNG/PDF export needs Chrome or Chromium (Debian: apt-get install "
                        "chromium; or set BROWSER_PATH); the HTML report was written")
    os.environ.setdefault("BROWSER_PATH", browser)


def figure_image(fig: go.Figure, fmt: str = "png") -> bytes:
    """One figure as PNG/PDF/SVG bytes (starts the browser once: batch with write_static)."""
    import plotly.io as pio

    _use_browser()
    return pio.to_image(fig, format=fmt, width=1000, height=600)


def write_static(figures: dict[str, go.Figure], directory: Path,
                 formats: Sequence[str] = ("png", "pdf"), run: str | None = None) -> list[Path]:
    """PNG/PDF of every figure in one batched kaleido call (one browser start), named
    ``export_name(run, figure, format)``. With ``run``, the old name ``FIGURE.FORMAT`` stays
    for this release as a second link to the same file (not in the returned paths)."""
    import plotly.io as pio

    _use_browser()
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".export-"))
    try:
        names = [(name, fmt) for fmt in formats for name in figures]
        files = {(name, fmt): export_name(run, name, fmt) for name, fmt in names}
        pio.write_images(fig=[figures[name] for name, _ in names],
                         file=[tmp / files[key] for key in names], width=1000, height=600)
        paths = []
        for key in names:
            final = directory / files[key]
            os.replace(tmp / files[key], final)
            paths.append(final)
            if run is not None:  # readers of the old figures/FIGURE.png: one more release
                _link(final, directory / export_name(None, *key))
        return paths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link(source: Path, alias: Path) -> None:
    """``alias`` as a hard link to ``source`` (a copy where links are not possible)."""
    alias.unlink(missing_ok=True)
    try:
        os.link(source, alias)
    except OSError:
        shutil.copyfile(source, alias)
