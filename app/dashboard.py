"""What the dashboard's pages share: where runs live, cached loading, the run picker, and
figures and tables with download buttons. The work itself is done by the ``probe`` package."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from layer_analysis.probe import report
from layer_analysis.probe.errors import DataError, ProbeError, StoreError
from layer_analysis.probe.files import MANIFEST, atomic_directory
from layer_analysis.probe.runs import RESULTS, RunResults, load_activations, read_run, run_kind
from layer_analysis.probe.store import Activations
from layer_analysis.train.tracking import discover_tracked

RUNS_ENV = "LAYER_ANALYSIS_RUNS"
T = TypeVar("T")
UPLOADS = "uploaded"


# ----------------------------------------------------------------------------------- runs


def default_root() -> Path:
    """$LAYER_ANALYSIS_RUNS, else ./runs."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def runs_root() -> Path:
    """The directory of runs: the sidebar's choice, else $LAYER_ANALYSIS_RUNS, else ./runs."""
    return Path(st.session_state.get("runs_root") or default_root())


ALIGNMENT, COMPARISON, TRAINING = "alignment", "comparison", "training"
UNREADABLE = "unreadable"


def output_kind(directory: Path) -> str | None:
    """A finished output's kind (``probe.runs.run_kind``: alignment, lens, neurons,
    intervention, mining, ...), ``comparison`` (or ``lens comparison``, ...) for the output of
    a ``compare``, ``unreadable`` for a broken manifest; None when ``directory`` is no finished
    output (an activation store, say)."""
    kind = run_kind(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except OSError:
        return None
    except ValueError:
        return UNREADABLE
    if not isinstance(manifest, dict):
        return UNREADABLE
    if kind is None:
        return None  # another manifest: an activation store's, another program's
    if "compare" in manifest:
        compared = manifest.get("kind", ALIGNMENT)
        return COMPARISON if compared == ALIGNMENT else f"{compared} {COMPARISON}"
    if kind == ALIGNMENT and not (directory / RESULTS).exists():
        return None  # a run's manifest without its results: not a finished run
    return kind


def discover_outputs(root: Path) -> list[tuple[Path, str]]:
    """Every finished output under ``root`` (and one level below, e.g. uploads) with its kind,
    newest first: runs of every command, comparisons, and tracked training outputs."""
    if not root.is_dir():
        return []
    manifests = {*root.glob(f"*/{MANIFEST}"), *root.glob(f"*/*/{MANIFEST}"),
                 *root.glob(f"{UPLOADS}/*/*/{MANIFEST}")}
    found = [(m.parent, kind) for m in manifests if (kind := output_kind(m.parent))]
    found += [(p, TRAINING) for p in discover_tracked(root)]
    return sorted(found, key=lambda pk: _stamp(pk[0]), reverse=True)


def _stamp(directory: Path) -> float:
    marker = directory / MANIFEST
    return (marker if marker.exists() else directory).stat().st_mtime


def discover_runs(root: Path) -> list[Path]:
    """The alignment runs (``layer-analysis run``; not comparisons) under ``root``, newest
    first: what the sidebar offers to the pages that show one model's run."""
    return [path for path, kind in discover_outputs(root) if kind == ALIGNMENT]


def run_label(path: Path | str) -> str:
    path = Path(path)
    try:
        return str(path.relative_to(runs_root()))
    except ValueError:
        return str(path)


@st.cache_data(show_spinner=False, max_entries=32)
def _read_run(path: str, stamp: float) -> RunResults:
    return read_run(Path(path))


def load_run(path: Path | str) -> RunResults | None:
    """A run read back (cached until its manifest changes), or None after an error message."""
    path = Path(path)
    try:
        stamp = (path / MANIFEST).stat().st_mtime if (path / MANIFEST).exists() else 0.0
        return _read_run(str(path), stamp)
    except ProbeError as exc:
        st.error(f"Cannot read run {run_label(path)}: {exc}")
        return None


@st.cache_resource(show_spinner="Loading activations…", max_entries=4)
def _activations(path: str, stamp: float) -> Activations:
    return load_activations(read_run(Path(path)))


def activations(results: RunResults) -> Activations | None:
    """The run's stored activations (cached), or None after a message saying why not."""
    try:
        return _activations(str(results.directory),
                            (results.directory / MANIFEST).stat().st_mtime)
    except ProbeError as exc:
        st.warning(f"This needs the run's stored activations, which cannot be read here: {exc}")
        return None


def selected_runs() -> list[str]:
    return list(st.session_state.get("selected_runs") or [])


def pick_run(key: str, label: str = "Run") -> RunResults | None:
    """A selectbox over the runs chosen in the sidebar; the chosen run loaded, or None."""
    choices = selected_runs()
    if not choices:
        st.info("No run selected: choose runs in the sidebar (or start one on **New run**).")
        return None
    path = st.selectbox(label, choices, format_func=run_label, key=key)
    return load_run(path)


def url_selection(key: str, options: list[str], default: list[str], url_key: str | None = None
                  ) -> list[str]:
    """The selection a widget ``key`` starts from: its value this session (what is still
    offered), else the run labels the URL holds under ``url_key`` (default ``key``; a reload),
    else ``default``."""
    if key in st.session_state:
        return [p for p in st.session_state[key] if p in options]
    wanted = set(st.query_params.get_all(url_key or key))
    return [p for p in options if run_label(p) in wanted] or default


def keep_in_url(key: str, chosen: list[str]) -> None:
    """Write the chosen runs' labels to the URL under ``key``, so a reload keeps them."""
    labels = [run_label(p) for p in chosen]
    if labels != st.query_params.get_all(key):
        if labels:
            st.query_params[key] = labels
        else:
            del st.query_params[key]


def pick_outputs(found: list[Path], read: Callable[[Path], T], label: str, key: str,
                 empty: str, help: str | None = None) -> dict[str, T]:
    """A multiselect over ``found`` (the newest preselected; the choice kept in the URL); each
    chosen one read, labelled; one that cannot be read becomes an error message, the others are
    still shown. Nothing found: the ``empty`` hint (how to make one) and no selection."""
    if not found:
        st.info(empty)
        return {}
    options = [str(p) for p in found]
    st.session_state[key] = url_selection(key, options, options[:1])
    chosen = st.multiselect(label, options, format_func=run_label, key=key, help=help)
    keep_in_url(key, chosen)
    out = {}
    for path in chosen:
        try:
            out[run_label(path)] = read(Path(path))
        except ProbeError as exc:
            st.error(f"Cannot read {run_label(path)}: {exc}")
    return out


def extract_archive(data: bytes, name: str, root: Path) -> Path:
    """Unpack an uploaded run archive (.zip, .tar, .tar.gz) into ROOT/uploaded/NAME and check it
    is a run. Members that would land outside the target are refused; a failed upload leaves
    nothing behind (it is unpacked under a temporary name, checked, then renamed)."""
    stem = name
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        stem = stem.removesuffix(suffix)
    target = root / UPLOADS / (Path(stem).name or "run")
    if target.exists():
        raise StoreError(f"{target} exists already; rename the archive or remove that folder")
    with atomic_directory(target) as staging:
        _unpack(data, name, staging)
        manifests = sorted(staging.rglob(MANIFEST), key=lambda p: len(p.parts))
        if not manifests:
            raise StoreError(f"{name} holds no {MANIFEST}: not a layer-analysis run")
        read_run(manifests[0].parent)  # a clear error when it holds no readable results
        inner = manifests[0].parent.relative_to(staging)
    return target / inner


def _unpack(data: bytes, name: str, directory: Path) -> None:
    buffer = io.BytesIO(data)
    if zipfile.is_zipfile(buffer):
        with zipfile.ZipFile(buffer) as archive:
            _check_members(archive.namelist())
            archive.extractall(directory)
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            _check_members(archive.getnames())
            archive.extractall(directory, filter="data")
    except tarfile.TarError:
        raise StoreError(f"{name} is neither a zip nor a tar archive") from None


def _check_members(names: list[str]) -> None:
    for name in names:
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or ".." in parts:
            raise StoreError(f"refusing archive member {name!r} (outside the run directory)")


# ------------------------------------------------------------------------ background jobs


class Cancelled(Exception):
    """Raised inside a cancelled job at its next progress report: the library call unwinds, and
    writes nothing more (a run's manifest is written last, so a cancelled run has none)."""


Progress = Callable[[str, float], None]


class Job:
    """A long library call (``work(progress)``) in a thread, so the page stays live: its last
    progress report, its result or error, and a stop flag that the next progress report obeys
    (unless ``stoppable(stage)`` says the work is past the point where stopping is clean)."""

    def __init__(self, work: Callable[[Progress], Any],
                 stoppable: Callable[[str], bool] = lambda stage: True) -> None:
        self.stage, self.done = "starting", 0.0
        self.result: Any = None
        self.error: BaseException | None = None
        self._work, self._stoppable = work, stoppable
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-job", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = self._work(self._report)
        except BaseException as exc:  # kept for the page to show; the thread ends either way
            self.error = exc

    def _report(self, stage: str, done: float) -> None:
        if self._stop.is_set() and self._stoppable(stage):
            raise Cancelled(stage)
        self.stage, self.done = stage, min(max(done, 0.0), 1.0)

    def cancel(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() and self.running

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, Cancelled)


# ------------------------------------------------------------------------ figures, tables


def show_figure(fig: go.Figure, name: str, run: Path | None = None, model: str | None = None
                ) -> None:
    """The figure, and buttons that download it as HTML or PNG (built only when clicked); with
    the ``run`` (directory) it shows, the title names ``model`` and run and the files
    ``RUN-NAME.html|png`` (``report.identity``, ``report.export_name``), so two runs' exports
    never look alike."""
    if run is not None:
        fig = report.label_figure(fig, report.identity(model, run), name)
    st.plotly_chart(fig, key=f"chart-{name}")
    html, png = st.columns([1, 1], width=320)
    html.download_button("HTML", lambda: fig.to_html(include_plotlyjs=True),
                         report.export_name(run, name, "html"), "text/html", key=f"html-{name}",
                         on_click="ignore", icon=":material/download:")
    png.download_button("PNG", lambda: _png(fig), report.export_name(run, name, "png"),
                        "image/png", key=f"png-{name}", on_click="ignore",
                        icon=":material/download:")


def pick_pooling(table: pd.DataFrame, key: str, where: Any = st) -> str | None:
    """The pooling a page shows when the table holds several (``--pooling mean last``): a
    selector, and the chosen name; None when there is one (nothing to choose)."""
    poolings = list(dict.fromkeys(table.pooling)) if "pooling" in table else []
    if len(poolings) < 2:
        return None
    return where.selectbox("Pooling", poolings, key=key,
                           help="every pooling the run extracted is analysed; one at a time here")


def of_pooling(table: pd.DataFrame, pooling: str | None) -> pd.DataFrame:
    """The rows of one pooling (all rows when none is chosen, or the table has no pooling)."""
    if pooling is None or "pooling" not in table:
        return table
    return table[table.pooling == pooling]


def _png(fig: go.Figure) -> bytes:
    try:
        return report.figure_image(fig, "png")
    except DataError:
        return b""


def show_table(frame: pd.DataFrame, name: str, run: Path | None = None, **kwargs) -> None:
    """The table, and a button that downloads it as CSV (``RUN-NAME.csv`` with its ``run``)."""
    st.dataframe(frame, hide_index=True, **kwargs)
    st.download_button("CSV", frame.to_csv(index=False).encode(),
                       report.export_name(run, name, "csv"), "text/csv", key=f"csv-{name}",
                       on_click="ignore", icon=":material/download:")


def short(side: str) -> str:
    """``deu_Latn@flores`` -> ``deu_Latn``."""
    return side.split("@")[0]


def guarded(page) -> None:
    """Run a page body; a probe error becomes a message, anything else a short error line."""
    try:
        page()
    except ProbeError as exc:
        st.error(str(exc))
    except Exception as exc:  # a dashboard shows messages, never tracebacks
        st.error(f"Unexpected error ({type(exc).__name__}): {exc}")
