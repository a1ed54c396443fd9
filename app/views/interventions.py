"""Interventions: ``layer-analysis intervene`` runs — each setting's effect against no
intervention, beside its control, with paired CIs, and the generations themselves."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import guarded, pick_outputs, runs_root, show_figure, show_table
from layer_analysis.probe import report
from layer_analysis.probe.runs import discover_kind
from layer_analysis.train.intervene import GENERATIONS, read_intervention_run, summary_lines


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
        show_figure(report.intervention_effects(table), f"effects-{name}")
        with st.expander("Table and generations"):
            show_table(table, f"interventions-{name}")
            lines = (path / GENERATIONS).read_text(encoding="utf-8").splitlines()
            generations = pd.DataFrame([json.loads(line) for line in lines if line])
            show_table(generations, f"generations-{name}")


guarded(page)
