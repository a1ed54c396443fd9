"""Many languages at once (SIB-200: 205): a ranked per-language view at one layer, and the
spread of the per-language curves instead of one legend entry per language."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .analysis import paired_with_english
from .errors import DataError
from .languages import display_name

RANKED_ABOVE = 20
"""More languages than this: the report draws the spread of the curves, not one per language."""


def language_ranking(table: pd.DataFrame, layer: int, metric: str = "p@1",
                     normalisation: str = "centered") -> pd.DataFrame:
    """Per language paired with English, ``metric`` at ``layer`` (both directions averaged, and
    their CIs), best first: columns language, name, value, ci_low, ci_high, null."""
    rows = table[(table.metric == metric) & (table.normalisation == normalisation)
                 & (table.layer == layer)]
    rows = paired_with_english(rows)
    if rows.empty:
        raise DataError(f"no {metric} ({normalisation}) with English at layer {layer}")
    out = (rows.groupby("language")[["value", "ci_low", "ci_high", "null"]].mean()
           .sort_values("value", ascending=False).reset_index())
    out.insert(1, "name", [display_name(code) for code in out.language])
    return out


def ranking_figure(table: pd.DataFrame, layer: int, metric: str = "p@1",
                   normalisation: str = "centered") -> Any:
    """Horizontal bars, best language on top, with CI whiskers and the chance level."""
    import plotly.graph_objects as go

    ranked = language_ranking(table, layer, metric, normalisation)
    fig = go.Figure(go.Bar(
        x=ranked.value, y=ranked.language, orientation="h", name=metric,
        error_x={"type": "data", "symmetric": False, "array": ranked.ci_high - ranked.value,
                 "arrayminus": ranked.value - ranked.ci_low},
        hovertext=ranked.name))
    fig.add_vline(x=float(ranked.null.mean()), line={"color": "black", "dash": "dash"},
                  annotation_text="chance")
    fig.update_layout(title=f"{metric} ({normalisation}) with English at layer {layer}, "
                            f"{len(ranked)} languages ranked (both directions averaged; 95 % CI)",
                      xaxis_title=metric, yaxis_autorange="reversed", yaxis_automargin=True,
                      height=max(360, 16 * len(ranked) + 160))
    return fig


def spread_figure(table: pd.DataFrame, metric: str = "p@1", normalisation: str = "centered"
                  ) -> Any:
    """Per layer, the median over languages (with English) and the 10–90 % and 25–75 % ranges."""
    import plotly.graph_objects as go

    rows = paired_with_english(table[(table.metric == metric)
                                     & (table.normalisation == normalisation)])
    if rows.empty:
        raise DataError(f"no {metric} ({normalisation}) with English")
    per = rows.groupby(["language", "layer"]).value.mean().unstack("language")
    fig = go.Figure()
    for low, high, opacity in ((0.1, 0.9, 0.15), (0.25, 0.75, 0.3)):
        q = per.quantile([low, high], axis=1)
        fig.add_trace(go.Scatter(x=list(per.index) + list(per.index[::-1]),
                                 y=list(q.loc[high]) + list(q.loc[low][::-1]), fill="toself",
                                 fillcolor="#4c78a8", opacity=opacity, line={"width": 0},
                                 name=f"{int(low * 100)}–{int(high * 100)} % of languages"))
    fig.add_trace(go.Scatter(x=per.index, y=per.median(axis=1), mode="lines+markers",
                             name="median language", line={"color": "#4c78a8"}))
    fig.update_layout(title=f"{metric} ({normalisation}) with English per layer over "
                            f"{per.shape[1]} languages", xaxis_title="layer", yaxis_title=metric)
    return fig


def many_language_figures(figures: dict[str, Any], table: pd.DataFrame, manifest: dict,
                          metric: str = "p@1", normalisation: str = "centered") -> dict[str, Any]:
    """A run's figures, readable above ``RANKED_ABOVE`` languages: the per-language curves
    become their spread, the heatmap shows English -> X only, and a ranking at the run's layer
    (its projection layer: the most common peak) is added. Fewer languages: unchanged."""
    from . import report
    from .analysis import peak_layer

    rows = table[(table.metric == metric) & (table.normalisation == normalisation)]
    english = paired_with_english(rows)
    if english.language.nunique() <= RANKED_ABOVE:
        return figures
    layer = manifest.get("analysis", {}).get("projection_layer")
    if layer is None:
        layer = peak_layer(table, metric, normalisation)
    out = dict(figures)
    out[f"heatmap_{metric}"] = report.heatmap(
        table[table.source.str.split("@").str[0] == "eng_Latn"], metric, normalisation)
    out[f"curves_{metric}"] = spread_figure(table, metric, normalisation)
    if (table.metric == "cosine_adjusted").any():
        out["curves_cosine_adjusted"] = spread_figure(table, "cosine_adjusted", normalisation)
    out[f"ranking_{metric}_layer_{layer}"] = ranking_figure(table, int(layer), metric,
                                                            normalisation)
    return out
