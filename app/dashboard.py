"""What the dashboard's pages share: where runs live, cached loading, the run picker, and
figures and tables with download buttons. The work itself is done by the ``probe`` package."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from layer_analysis.probe import report
from layer_analysis.probe.errors import DataError, ProbeError, StoreError
from layer_analysis.probe.files import MANIFEST, atomic_directory
from layer_analysis.probe.runs import RESULTS, RunResults, load_activations, read_run
from layer_analysis.probe.store import Activations

RUNS_ENV = "LAYER_ANALYSIS_RUNS"
T = TypeVar("T")
UPLOADS = "uploaded"


# ----------------------------------------------------------------------------------- runs


def runs_root() -> Path:
    """The directory of runs: the sidebar's choice, else $LAYER_ANALYSIS_RUNS, else ./runs."""
    return Path(st.session_state.get("runs_root") or os.environ.get(RUNS_ENV) or "runs")


def discover_runs(root: Path) -> list[Path]:
    """Finished runs under ``root`` (and one level below, e.g. uploads), newest first."""
    if not root.is_dir():
        return []
    manifests = [*root.glob(f"*/{MANIFEST}"), *root.glob(f"*/*/{MANIFEST}"),
                 *root.glob(f"{UPLOADS}/*/*/{MANIFEST}")]
    runs = [m.parent for m in manifests if (m.parent / RESULTS).exists()]
    return sorted(runs, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)


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


def pick_outputs(found: list[Path], read: Callable[[Path], T], label: str, key: str,
                 empty: str, help: str | None = None) -> dict[str, T]:
    """A multiselect over ``found`` (the newest preselected); each chosen one read, labelled;
    one that cannot be read becomes an error message, the others are still shown. Nothing
    found: the ``empty`` hint (how to make one) and no selection."""
    if not found:
        st.info(empty)
        return {}
    chosen = st.multiselect(label, [str(p) for p in found], default=[str(p) for p in found[:1]],
                            format_func=run_label, key=key, help=help)
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


# ------------------------------------------------------------------------ figures, tables


def show_figure(fig: go.Figure, name: str) -> None:
    """The figure, and buttons that download it as HTML or PNG (built only when clicked)."""
    st.plotly_chart(fig, key=f"chart-{name}")
    html, png = st.columns([1, 1], width=320)
    html.download_button("HTML", lambda: fig.to_html(include_plotlyjs=True), f"{name}.html",
                         "text/html", key=f"html-{name}", on_click="ignore", icon=":material/download:")
    png.download_button("PNG", lambda: _png(fig), f"{name}.png", "image/png", key=f"png-{name}",
                        on_click="ignore", icon=":material/download:")


def _png(fig: go.Figure) -> bytes:
    try:
        return report.figure_image(fig, "png")
    except DataError:
        return b""


def show_table(frame: pd.DataFrame, name: str, **kwargs) -> None:
    """The table, and a button that downloads it as CSV."""
    st.dataframe(frame, hide_index=True, **kwargs)
    st.download_button("CSV", frame.to_csv(index=False).encode(), f"{name}.csv", "text/csv",
                       key=f"csv-{name}", on_click="ignore", icon=":material/download:")


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
