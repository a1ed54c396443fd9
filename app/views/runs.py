"""Runs: the finished runs, their manifests, and uploading a run archive."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from layer_analysis.app.dashboard import (
    discover_runs,
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


def summary(path: str) -> dict:
    results = load_run(path)
    if results is None:
        return {"run": run_label(path), "model": "(unreadable)"}
    m = results.manifest
    if "compare" in m:
        return {"run": run_label(path), "model": " vs ".join(m.get("models", [])),
                "data": "(comparison)"}
    extraction = m.get("extraction", {})
    return {"run": run_label(path), "model": m["model"]["name"],
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
    found = discover_runs(root)
    if not root.is_dir():
        st.warning(f"The runs directory `{root}` does not exist. Start a run on **New run**, "
                   "or run `layer-analysis run` in a terminal.")
    elif not found:
        st.info(f"`{root}` holds no finished runs yet. Start one on **New run**.")
    else:
        st.caption(f"{len(found)} finished runs under `{root}`; choose the ones to look at in "
                   "the sidebar.")
        show_table(pd.DataFrame([summary(str(p)) for p in found]), "runs")

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
