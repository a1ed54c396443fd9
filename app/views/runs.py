"""Runs: every finished output under the runs directory with its kind, the manifests of the
selected runs, and uploading a run archive."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import (
    ALIGNMENT,
    UNREADABLE,
    discover_outputs,
    extract_archive,
    guarded,
    load_run,
    run_label,
    runs_root,
    selected_runs,
    short,
    show_table,
)
from layer_analysis.probe.errors import ProbeError
from layer_analysis.probe.files import MANIFEST


def summary(path: Path, kind: str) -> dict:
    """One row of the runs table: what the output is, of which model and data."""
    row = {"run": run_label(path), "kind": kind}
    if kind not in (ALIGNMENT, UNREADABLE):  # another command's output: what its manifest names
        try:
            m = json.loads((path / MANIFEST).read_text()) if (path / MANIFEST).exists() else {}
        except (OSError, ValueError):
            m = {}
        model = m.get("model") if isinstance(m.get("model"), dict) else {}
        return {**row, "model": model.get("name") or " vs ".join(map(str, m.get("models", [])))}
    results = load_run(path)
    if results is None:
        return {**row, "model": "(unreadable)"}
    m = results.manifest
    extraction = m.get("extraction", {})
    return {**row, "model": m["model"]["name"],
            "adapter": m["model"].get("adapter") or "",
            "data": m["data"]["name"],
            "languages": ", ".join(short(s) for s in m["data"].get("sides", {})),
            "sentences": max(m["data"].get("sides", {"": 0}).values()),
            "layers": len(extraction.get("layers", [])),
            "pooling": ", ".join(extraction.get("poolings", [])),
            "pivot": m.get("analysis", {}).get("pivot") or "all pairs",
            "extract s": m.get("timings_s", {}).get("extract"),
            "cached": m.get("cached")}


def page() -> None:
    st.title("Runs")
    root = runs_root()
    found = discover_outputs(root)
    if not root.is_dir():
        st.warning(f"The runs directory `{root}` does not exist. Start a run on **New run**, "
                   "or run `layer-analysis run` in a terminal.")
    elif not found:
        st.info(f"`{root}` holds no finished runs yet. Start one on **New run**.")
    else:
        kinds = pd.Series([kind for _, kind in found]).value_counts()
        st.caption(f"{len(found)} finished outputs under `{root}` ("
                   + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
                   + "). The sidebar picks the alignment runs that Overview, Compare, Neighbours "
                   "and Projection show; the other kinds have their own pages.")
        show_table(pd.DataFrame([summary(p, kind) for p, kind in found]), "runs")

    for path in selected_runs():
        results = load_run(path)
        if results is None:
            continue
        with st.expander(f"Manifest of {run_label(path)}", expanded=len(selected_runs()) == 1):
            timings = results.manifest.get("timings_s", {})
            if timings:
                st.write("Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
            st.json(results.manifest, expanded=1)
            st.download_button("results.csv", results.table.to_csv(index=False).encode(),
                               f"{results.directory.name}-results.csv", "text/csv",
                               key=f"results-{path}", on_click="ignore",
                               icon=":material/download:")

    st.subheader("Upload a run")
    added = st.session_state.pop("uploaded_run", None)
    if added:
        st.success(f"Added {run_label(added)}; it is now listed and selected in the sidebar.")
    archive = st.file_uploader("A run directory packed as .zip or .tar.gz",
                               type=["zip", "gz", "tgz", "tar"])
    if archive is not None and st.button("Add this run"):
        try:
            run = extract_archive(archive.getvalue(), archive.name, root)
        except ProbeError as exc:
            st.error(str(exc))
        else:  # rerun, so the sidebar (built before this page) lists and selects it
            st.session_state["pending_select"] = st.session_state["uploaded_run"] = str(run)
            st.rerun()


guarded(page)
