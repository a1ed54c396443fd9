"""Language neurons: ``layer-analysis neurons`` runs — LAPE neurons per layer, their overlap,
the deactivation check, and (several runs) which neurons appear or vanish after training."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import guarded, pick_outputs, runs_root, show_figure, show_table
from layer_analysis.probe import report
from layer_analysis.probe.neuron_run import (
    COUNTS_TABLE,
    DEACTIVATION_TABLE,
    OVERLAP_TABLE,
    deactivation_summary,
    read_neuron_run,
)
from layer_analysis.probe.neurons import compare_masks
from layer_analysis.probe.runs import discover_kind


def page() -> None:
    st.title("Language neurons")
    runs = pick_outputs(
        discover_kind(runs_root(), "neurons"), lambda path: (path, *read_neuron_run(path)),
        "Neurons runs", "neurons-runs",
        empty=f"No neurons runs under `{runs_root()}`: run `layer-analysis neurons` (base, x- "
              "and m-model) and they appear here.",
        help="several: which neurons appear or vanish against the first")
    if not runs:
        return
    name = st.selectbox("Details of", list(runs), key="neurons-detail")
    path, manifest, masks, _ = runs[name]
    info = manifest["neurons"]
    st.caption(f"{int(masks.any(0).sum())} language-specific neurons of "
               f"{info['blocks'] * info['neurons_per_block']}; LAPE on {info['sentences']} "
               f"sentences per language of {info['data']}; thresholds {info['thresholds']}.")
    show_figure(report.neuron_counts(pd.read_csv(path / COUNTS_TABLE)), "neuron-counts")
    show_figure(report.neuron_overlap(pd.read_csv(path / OVERLAP_TABLE)), "neuron-overlap")
    if (path / DEACTIVATION_TABLE).exists():
        table = pd.read_csv(path / DEACTIVATION_TABLE)
        for line in deactivation_summary(table):
            st.markdown(f"- {line}")
        show_figure(report.deactivation(table), "neuron-deactivation")
        with st.expander("Deactivation table"):
            show_table(table, "deactivation")
    if len(runs) > 1:
        first_name, (_, first, reference, _) = next(iter(runs.items()))
        frames = []
        for other, (other_path, other_manifest, other_masks, _) in list(runs.items())[1:]:
            if (other_manifest["neurons"]["languages"] != first["neurons"]["languages"]
                    or other_masks.shape != reference.shape):
                st.warning(f"{other} has other languages or another architecture than "
                           f"{first_name}; left out of the comparison")
                continue
            frames.append(compare_masks(reference, other_masks, first["neurons"]["languages"])
                          .assign(after_run=str(other_path)))
        if frames:
            changes = pd.concat(frames, ignore_index=True)
            st.subheader(f"Against {first_name}")
            show_figure(report.neuron_changes(changes), "neuron-changes")
            show_table(changes, "neuron-changes")


guarded(page)
