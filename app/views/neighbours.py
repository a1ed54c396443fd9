"""Neighbours: for one layer and language pair, the sentences whose translation was not
retrieved first — the query, its translation, what was retrieved instead, and the scores."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import (
    activations,
    guarded,
    of_pooling,
    pick_pooling,
    pick_run,
    short,
    show_table,
)
from layer_analysis.probe.analysis import retrieval_failures
from layer_analysis.probe.runs import RunResults


@st.cache_data(show_spinner="Scoring…", max_entries=64)
def failures(directory: str, _results: RunResults, layer: int, source: str, target: str,
             normalisation: str, pooling: str | None = None) -> pd.DataFrame:
    acts = activations(_results)
    return retrieval_failures(acts, layer, source, target, normalisation, pooling)


def page() -> None:
    st.title("Retrieval failures")
    results = pick_run("neighbours-run")
    if results is None:
        return
    table = results.table
    pooling = pick_pooling(table, "neighbours-pooling")
    table = of_pooling(table, pooling)
    pairs = (table[table.metric == "p@1"][["source", "target"]].drop_duplicates()
             .itertuples(index=False))
    pairs = [(p.source, p.target) for p in pairs]
    if not pairs:
        st.info("This run has no retrieval results.")
        return
    layers = sorted(set(table.layer))
    left, right = st.columns(2)
    source, target = left.selectbox("Queries → candidates", pairs, key="neighbours-pair",
                                    format_func=lambda p: f"{short(p[0])} → {short(p[1])}")
    normalisation = right.selectbox(
        "Normalisation", sorted(set(table.normalisation), key=lambda n: (n != "centered", n)),
        key="neighbours-norm")
    peak = table[(table.metric == "p@1") & (table.normalisation == normalisation)
                 & (table.source == source) & (table.target == target)]
    default = int(peak.loc[peak.value.idxmax(), "layer"]) if not peak.empty else layers[-1]
    layer = st.select_slider("Layer", layers, value=default, key="neighbours-layer")
    if activations(results) is None:
        return
    found = failures(str(results.directory), results, layer, source, target, normalisation,
                     pooling)
    at_layer = peak[peak.layer == layer]
    n = results.manifest["data"]["sides"].get(source) or "?"
    p1 = f", P@1 {at_layer.value.iloc[0]:.3f}" if not at_layer.empty else ""
    st.write(f"**{len(found)}** of {n} queries miss their translation at layer {layer} "
             f"({normalisation}{p1}). *Gap* = retrieved score − translation score: large gaps "
             "are confident mistakes, gaps near 0 near-ties (ties count as misses).")
    if found.empty:
        st.success("Every translation is retrieved first at this layer.")
        return
    text = st.column_config.TextColumn(width="medium")
    show_table(found.round(4), f"failures-{short(source)}-{short(target)}-L{layer}",
               results.directory,
               column_config={"query": text, "translation": text, "retrieved": text})
    labels = [f"{i + 1}. {query[:90]}" for i, query in enumerate(found["query"])]
    # the queries themselves as options: another pair or layer never keeps a stale label
    chosen = st.selectbox("Inspect one", labels, key="neighbours-row")
    failure = found.loc[labels.index(chosen)]
    st.markdown(f"**Query** ({short(source)}): {failure['query']}\n\n"
                f"**Translation** ({short(target)}, score {failure.translation_score:.4f}, "
                f"rank {failure['rank']}): {failure.translation}\n\n"
                f"**Retrieved instead** (score {failure.retrieved_score:.4f}, gap "
                f"{failure.gap:+.4f}): {failure.retrieved}")


guarded(page)
