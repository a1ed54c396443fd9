"""Interventions: ``layer-analysis intervene`` runs — each setting's effect against no
intervention, beside its control, with paired CIs, and the generations themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from layer_analysis.app.dashboard import guarded, pick_outputs, runs_root, show_figure, show_table
from layer_analysis.probe import report
from layer_analysis.probe.intervene_run import (
    GENERATIONS,
    NONE,
    read_intervention_run,
    summary_lines,
)
from layer_analysis.probe.languages import known_languages
from layer_analysis.probe.runs import discover_kind

CONTROLS = {"none": NONE, "vector": "language vector", "random": "random direction (control)",
            "map": "linear map", "shuffled": "map fitted on shuffled pairs (control)"}
MEASURES = {"empty": "empty outputs (share)", "chrf++": "chrF++", "xquad_f1": "XQuAD F1"}


def measure_name(measure: str) -> str:
    """``share_eng`` -> ``outputs in English (share)``, ``chrf++`` -> ``chrF++``."""
    if measure.startswith("share_"):
        code = measure.removeprefix("share_")
        name = next((name for c, name in known_languages().items() if c.startswith(f"{code}_")),
                    code)
        return f"outputs in {name} (share)"
    return MEASURES.get(measure, measure)


def effects(table: pd.DataFrame) -> go.Figure:
    """The library's effects figure, in readable names and with axis titles."""
    readable = table.assign(measure=table.measure.map(measure_name), control=table.control.map(
        lambda c: c if c == "none" else CONTROLS.get(c, c)))  # "none": the figure's baseline
    return report.intervention_effects(readable)


def generations(path: Path) -> None:
    """The generated texts, one sentence at a time, every setting's output wrapped in full."""
    lines = (path / GENERATIONS).read_text(encoding="utf-8").splitlines()
    frame = pd.DataFrame([json.loads(line) for line in lines if line])
    if frame.empty:
        return
    indices = sorted(set(frame["index"]))
    index = st.selectbox("Generations for sentence", indices, key=f"generations-{path}",
                         format_func=lambda i: f"{i + 1}. {_first(frame, i, 'source')[:90]}")
    rows = frame[frame["index"] == index]
    st.markdown(f"**Prompt sentence:** {_first(frame, index, 'source')}")
    if "reference" in rows:
        st.markdown(f"**Reference:** {_first(frame, index, 'reference')}")
    st.table(pd.DataFrame({
        "setting": [CONTROLS.get(c, c) for c in rows.control],
        "strength": [f"{s:g}" for s in rows.strength],
        "generated text": rows.output.tolist()}))
    st.download_button(
        "all generations (CSV)", frame.to_csv(index=False).encode(),
        f"generations-{path.name}.csv", "text/csv", key=f"csv-generations-{path}",
        on_click="ignore", icon=":material/download:")


def _first(frame: pd.DataFrame, index: int, column: str) -> str:
    return str(frame.loc[frame["index"] == index, column].iloc[0])


def page() -> None:
    st.title("Interventions")
    runs = pick_outputs(
        discover_kind(runs_root(), "intervention"),
        lambda path: (path, *read_intervention_run(path)), "Intervention runs",
        "intervention-runs",
        empty=f"No intervention runs under `{runs_root()}`: run `layer-analysis intervene "
              "steer|map --language X` and they appear here.")
    for name, (path, manifest, table) in runs.items():
        info = manifest["intervention"]
        st.subheader(name)
        st.caption(f"{info['kind']} {info['language']} at layer {info['layer']} (best aligned: "
                   f"{info['best_layer']}); fitted on {info['fit_sentences']} pairs of "
                   f"{info['fit_data']}, measured on {info['eval_sentences']} sentences of "
                   f"{info['eval_data']}.")
        for line in summary_lines(table):
            st.markdown(f"- {line}")
        show_figure(effects(table), f"effects-{name}")
        with st.expander("Generated text", expanded=True):
            generations(path)
        with st.expander("Table"):
            show_table(table, f"interventions-{name}")


guarded(page)
