"""Projection: sentences of one layer in 2-D (UMAP or PCA), coloured by language, the sentence
on hover."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import activations, guarded, pick_run, short, show_figure, show_table
from layer_analysis.probe import report
from layer_analysis.probe.projection import METHODS, project
from layer_analysis.probe.runs import RunResults


@st.cache_data(show_spinner="Projecting…", max_entries=32)
def projection(directory: str, _results: RunResults, layer: int, method: str, per_side: int
               ) -> pd.DataFrame:
    stored = _results.projection
    if (not stored.empty and int(stored.layer.iloc[0]) == layer and stored.method.iloc[0] == method
            and stored.groupby("side").size().max() >= per_side):
        return stored.groupby("side").head(per_side)
    acts = activations(_results)
    if acts is None:
        return pd.DataFrame()
    return project(acts, layer, method, per_side=per_side)


def page() -> None:
    st.title("Projection")
    results = pick_run("projection-run")
    if results is None:
        return
    layers = sorted(set(results.table.layer))
    stored = results.projection
    default_layer = int(stored.layer.iloc[0]) if not stored.empty else layers[len(layers) // 2]
    default_method = stored.method.iloc[0] if not stored.empty else "pca"
    default_n = int(stored.groupby("side").size().max()) if not stored.empty else 200  # reuse it
    left, middle, right = st.columns(3)
    layer = left.select_slider("Layer", layers, value=default_layer, key="projection-layer")
    method = middle.radio("Method", METHODS, index=METHODS.index(default_method),
                          format_func=str.upper, horizontal=True, key="projection-method")
    per_side = right.number_input("Sentences per language", 1, 2000, default_n, step=50,
                                  key="projection-n")
    coords = projection(str(results.directory), results, layer, method, int(per_side))
    if coords.empty:
        return
    languages = sorted(set(coords.language))
    shown = st.multiselect("Languages", languages, default=languages, key="projection-languages")
    coords = coords[coords.language.isin(shown)]
    if coords.empty:
        st.info("Choose at least one language.")
        return
    show_figure(report.scatter(coords), f"projection-L{layer}-{method}")
    with st.expander("Coordinates"):
        show_table(coords.assign(side=coords.side.map(short)), f"projection-L{layer}-{method}")


guarded(page)
