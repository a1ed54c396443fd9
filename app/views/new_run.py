"""New run: start an analysis on a packaged (or local) model and a data set, with a progress
bar; the finished run is selected in the sidebar."""

from __future__ import annotations

import time

import streamlit as st

from layer_analysis.app.dashboard import guarded, run_label, runs_root
from layer_analysis.probe.analysis import AnalysisConfig
from layer_analysis.probe.data import load_parallel, named_datasets
from layer_analysis.probe.errors import ProbeError
from layer_analysis.probe.extract import POOLINGS, ExtractionConfig
from layer_analysis.probe.languages import ENGLISH
from layer_analysis.probe.metrics import NORMALISATIONS
from layer_analysis.probe.models import DEFAULT_MODEL, PACKAGED
from layer_analysis.probe.pipeline import RunRequest, execute
from layer_analysis.probe.projection import METHODS

OTHER = "other…"


@st.cache_data(show_spinner=False, max_entries=16)
def languages_of(data: str) -> list[str]:
    return load_parallel(data).languages


def page() -> None:
    st.title("New run")
    running = st.session_state.get("new-running", False)  # the form is read-only while it runs
    models = list(PACKAGED)
    model = st.selectbox("Model", [*models, OTHER], index=models.index(DEFAULT_MODEL),
                         key="new-model", disabled=running,
                         help="packaged models work offline; converted once")
    if model == OTHER:
        model = st.text_input("Model directory, .gguf file, Hub id or PEFT adapter directory",
                              key="new-model-path", disabled=running).strip()
    adapter = st.text_input("PEFT adapter directory (optional)", key="new-adapter",
                            disabled=running).strip() or None
    available = [name for name, (where, _) in named_datasets().items() if where is not None]
    data = st.selectbox("Data", [*available, OTHER], key="new-data", disabled=running)
    if data == OTHER:
        data = st.text_input("Directory of <language>.txt files, .tsv or .jsonl file",
                             key="new-data-path", disabled=running).strip()
    if not model or not data:
        st.info("Name a model and a data set.")
        return
    try:
        found = languages_of(data)
    except ProbeError as exc:
        st.error(str(exc))
        return
    default = ([ENGLISH] if ENGLISH in found else []) + [c for c in found if c != ENGLISH][:7]
    languages = st.multiselect("Languages", found, default=default, key="new-languages",
                               disabled=running)
    left, middle, right = st.columns(3)
    limit = left.number_input("Sentences per language (0 = all)", 0, 100_000, 100, step=50,
                              key="new-limit", disabled=running)
    pooling = middle.selectbox("Pooling", POOLINGS, key="new-pooling", disabled=running)
    projection = right.selectbox("Projection", [*METHODS, "none"], key="new-projection",
                                 disabled=running)
    all_pairs = left.checkbox("All language pairs", key="new-all-pairs", disabled=running)
    pivot = middle.selectbox("Pivot", languages or [ENGLISH], disabled=all_pairs or running,
                             index=languages.index(ENGLISH) if ENGLISH in languages else 0,
                             key="new-pivot")
    normalisations = right.multiselect("Normalisations", NORMALISATIONS,
                                       default=list(NORMALISATIONS), key="new-norms",
                                       disabled=running)
    name = st.text_input("Run name (optional)", key="new-name", disabled=running).strip() or None
    static = st.checkbox("Also export PNG and PDF figures", key="new-static", disabled=running)
    if st.button("Start", type="primary", key="new-start", disabled=running):
        if len(languages) < 2 or not normalisations:
            st.error("Choose at least two languages and one normalisation.")
            return
        st.session_state["new-running"] = True  # draw the form read-only, then run
        st.rerun()
    if not running:
        _show_last()
        return
    request = RunRequest(
        model=model, adapter=adapter, data=data, languages=languages, limit=limit or None,
        extraction=ExtractionConfig(poolings=(pooling,)),
        analysis=AnalysisConfig(pivot=None if all_pairs else pivot,
                                normalisations=tuple(normalisations)),
        projection=projection, output=runs_root(), name=name, static=static,
        progress_bars=False)
    bar = st.progress(0.0, text="starting")
    started = time.perf_counter()
    try:
        outcome = execute(request, ["dashboard", "new run"],
                          progress=lambda stage, done: bar.progress(min(done, 1.0), text=stage))
    finally:
        st.session_state["new-running"] = False
    path = str(outcome.results.directory)
    st.session_state["pending_select"] = path
    st.session_state["last_run"] = (path, time.perf_counter() - started)
    st.rerun()


def _show_last() -> None:
    last = st.session_state.get("last_run")
    if last:
        path, seconds = last
        st.success(f"Finished {run_label(path)} in {seconds:.0f} s; it is selected in the "
                   "sidebar — see **Overview**.")


guarded(page)
