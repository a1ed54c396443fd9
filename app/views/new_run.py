"""New run: start an analysis on a packaged (or local) model and a data set, with a progress
bar and a Cancel button (the run works in a thread; cancelled, it writes no run); the finished
run is selected in the sidebar."""

from __future__ import annotations

import time

import streamlit as st

from layer_analysis.app.dashboard import Job, guarded, run_label, runs_root
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
    job: Job | None = st.session_state.get(JOB)
    running = job is not None and job.running  # the form is read-only while it runs
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
        request = RunRequest(
            model=model, adapter=adapter, data=data, languages=languages, limit=limit or None,
            extraction=ExtractionConfig(poolings=(pooling,)),
            analysis=AnalysisConfig(pivot=None if all_pairs else pivot,
                                    normalisations=tuple(normalisations)),
            projection=projection, output=runs_root(), name=name, static=static,
            progress_bars=False)
        started = time.perf_counter()
        st.session_state[JOB] = Job(
            lambda progress: (execute(request, ["dashboard", "new run"], progress=progress),
                              time.perf_counter() - started),
            stoppable=lambda stage: stage not in WRITTEN).start()
        st.rerun()  # draw the form read-only, with the progress
    if job is None:
        _show_last()
    elif running:
        _progress()
    else:
        _finish(job)


# The run's manifest is written before these stages: stopping there would leave a run without
# its report, so a Cancel that comes this late lets it finish.
WRITTEN = ("writing the report", "done")
JOB = "new-job"


@st.fragment(run_every=2)
def _progress() -> None:
    """The running job's progress and its Cancel button, redrawn every 2 s (more often slows
    the job: each redraw competes with it for the interpreter)."""
    job: Job = st.session_state[JOB]
    if not job.running:
        st.rerun()  # the whole page: the outcome, the sidebar's selection
    st.progress(job.done, text=job.stage)
    if st.button("Cancel", key="new-cancel", disabled=job.stopping,
                 help="stops the run at its next step; it then writes nothing"):
        job.cancel()
    if job.stopping:
        st.caption("Cancelling: the run stops at its next step and writes nothing.")


def _finish(job: Job) -> None:
    """The job's outcome: the finished run selected, or why there is none."""
    del st.session_state[JOB]
    if job.cancelled:
        st.warning(f"Cancelled while {job.error}: no run was written.")
    elif isinstance(job.error, ProbeError):
        st.error(str(job.error))
    elif job.error is not None:
        st.error(f"Unexpected error ({type(job.error).__name__}): {job.error}")
    else:
        outcome, seconds = job.result
        path = str(outcome.results.directory)
        st.session_state["pending_select"] = path
        st.session_state["last_run"] = (path, seconds)
        st.rerun()


def _show_last() -> None:
    last = st.session_state.get("last_run")
    if last:
        path, seconds = last
        st.success(f"Finished {run_label(path)} in {seconds:.0f} s; it is selected in the "
                   "sidebar — see **Overview**.")


guarded(page)
