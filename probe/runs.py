"""Run directories: what a finished analysis leaves on disk, and the reports built from it.

    RUN/manifest.json       configuration, versions, data fingerprint, timings, activation path
    RUN/results.parquet     the tidy table (also results.csv)
    RUN/cka.csv             layer x layer linear CKA
    RUN/mexa.csv            MEXA scores aggregated over layers (mean and max) per pair
    RUN/projection.csv      2-D coordinates of sentences at one layer
    RUN/report.html         self-contained report; RUN/figures/RUN-*.png|pdf the static figures

Who may write a directory is decided here, for every command (``check_run_directory``): one
writer at a time (``files.writer_lock``), never into a directory of another kind (another
command's run, a comparison, a training output, an activation store, anything else that is not
empty), and into a finished run of its own kind only with ``--overwrite``. A command's run is
claimed (``RunSettings.claim``) inside its ``@writes_runs`` function, which holds the lock
until it returns; while it writes, ``UNFINISHED`` in the directory names its kind, so a rerun
after a kill resumes it without ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from . import distributed, report
from .analysis import mexa_summary, peak_layers
from .errors import DataError, StoreError, notice
from .extract import SinkRecord
from .files import (
    MANIFEST,
    UNFINISHED,
    WRITER_LOCK,
    atomic_write,
    atomic_write_text,
    check_not_a_file,
    start_run_directory,
    writer_lock,
)
from .languages import display_name
from .metrics import linear_cka
from .models import DEFAULT_MODEL, LoadedModel
from .paired import paired_differences
from .ranking import many_language_figures
from .store import Activations, ActivationStore

RESULTS = "results.parquet"


def versions() -> dict[str, str]:
    """Versions of what shapes the numbers."""
    out = {"python": platform.python_version()}
    for name in ("layer-analysis", "torch", "transformers", "peft", "scikit-learn", "umap-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_kind(directory: Path) -> str | None:
    """What a finished run directory holds (its manifest's ``kind``: lens, neurons,
    intervention, mining; "compare" for any comparison; "alignment" for a run without one that
    has a run's results or sections), or None when it is no finished run (a ``manifest.json``
    of something else, e.g. a web app's, is none)."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    if "compare" in manifest:
        return "compare"
    if "kind" in manifest:
        return str(manifest["kind"])
    # an alignment run's manifest names no kind: known by its results or its sections
    ours = (Path(directory) / RESULTS).exists() or {"extraction", "analysis"} <= manifest.keys()
    return "alignment" if ours else None


OUR_FILES = {WRITER_LOCK, UNFINISHED}  # a directory holding only these is empty
# Outputs of other commands, known by a file they write (train/loop.py, fit-law, allocate, sweep)
KNOWN_FILES = {"training.json": "training", "train_log.jsonl": "training",
               "checkpoints": "training", "law.json": "law", "allocation.json": "allocation",
               "sweep.csv": "sweep"}
# a JSON one of them only when it holds the keys its command writes (a copy elsewhere, or a
# file of that name that is someone else's, makes no law or allocation of a directory)
KNOWN_KEYS = {"law.json": {"best", "fits"}, "allocation.json": {"law", "allocated", "uniform"}}


def _holds_keys(path: Path, keys: set[str]) -> bool:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and keys <= saved.keys()


def directory_owner(directory: Path) -> tuple[str, bool] | None:
    """Who a directory belongs to and whether that output is finished: a run's kind
    (``run_kind``) from its manifest, an unfinished run's from ``UNFINISHED``, an activation
    store entry, a training, law, allocation or sweep output by its files (``KNOWN_FILES``; a law
    or allocation by its JSON's keys), "other" for any other non-empty directory; None when it
    is absent or empty."""
    directory = Path(directory)
    try:
        names = {p.name for p in directory.iterdir()} - OUR_FILES
    except OSError:
        return None
    manifest_path = directory / MANIFEST
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = None
        if isinstance(manifest, dict) and {"key", "inputs"} <= manifest.keys():
            return "activation store entry", True
        kind = run_kind(directory)
        return (kind, True) if kind else ("other", True)
    try:
        return (directory / UNFINISHED).read_text().strip() or "other", False
    except OSError:
        pass
    for name, kind in KNOWN_FILES.items():
        if name in names and (name not in KNOWN_KEYS
                              or _holds_keys(directory / name, KNOWN_KEYS[name])):
            return kind, (directory / "training.json").exists() if kind == "training" else True
    return ("other", True) if names else None


_WHAT = {"compare": "comparison", "training": "training output", "law": "fitted law",
         "sweep": "sweep", "allocation": "allocation"}


def _describe(kind: str, finished: bool = True) -> str:
    """'an alignment run', 'an unfinished lens run', 'a comparison', ..."""
    if kind == "other":
        return "files that are not a layer-analysis run"
    what = ("" if finished else "unfinished ") + _WHAT.get(kind, kind if kind.endswith(
        "entry") else f"{kind} run")
    return ("an " if what[0] in "aeiou" else "a ") + what


def check_run_directory(directory: Path, kind: str, overwrite: bool = False) -> None:
    """Whether a command of ``kind`` may write ``directory``: not a file (nor below one), not a
    directory of another kind or a non-empty one that is no run, not a finished run of its own
    kind unless ``overwrite``, not a symbolic link (a run is written where it is named, never
    through a link to another place). Absent, empty, or an unfinished run of its own kind: yes."""
    directory = Path(directory)
    if directory.is_symlink():
        raise StoreError(f"{directory} is a symbolic link (to {os.readlink(directory)}); a run is "
                         "written where it is named: choose another --output (or --name)")
    check_not_a_file(directory)
    owner = directory_owner(directory)
    if owner is None:
        return
    held, finished = owner
    if held != kind:
        raise StoreError(f"{directory} holds {_describe(held, finished)}; {_describe(kind)} is "
                         "not written into it: choose another --output (or --name)")
    if finished and not overwrite:
        raise StoreError(f"{directory} holds {_describe(kind)}: it exists; pass --overwrite to "
                         "replace it, or choose another --output (or --name)")


@contextlib.contextmanager
def run_writer(directory: Path, kind: str, overwrite: bool = False) -> Iterator[Path]:
    """Write ``directory`` as the one writer of kind ``kind`` (``check_run_directory``, then
    ``files.writer_lock``, checked again under it): while the block runs ``UNFINISHED`` names
    its kind, removed when it ends without an error. After an error a directory this created
    and that holds nothing of the run's is removed again."""
    directory = Path(directory)
    check_run_directory(directory, kind, overwrite)
    missing = [p for p in (directory, *directory.parents) if not p.exists()]  # made here
    held = ok = False
    try:
        with writer_lock(directory):
            held = True
            check_run_directory(directory, kind, overwrite)
            atomic_write_text(directory / UNFINISHED, kind)
            yield directory
            (directory / UNFINISHED).unlink(missing_ok=True)
            ok = True
    finally:  # after an error, a directory this made and left empty goes (once unlocked)
        if held and not ok and missing and {p.name for p in directory.iterdir()} <= OUR_FILES:
            for name in OUR_FILES:
                (directory / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                for made in missing:  # innermost first; stops at one that is not empty
                    made.rmdir()


@dataclass
class _Claims:
    stack: contextlib.ExitStack
    directories: list[Path]


_CLAIMS: ContextVar[_Claims | None] = ContextVar("layer_analysis_claims", default=None)
Execute = TypeVar("Execute", bound=Callable[..., Any])


def writes_runs(execute: Execute) -> Execute:
    """Decorate a command's function: the run directories it claims (``RunSettings.claim``,
    ``check_name``) stay locked until it returns or raises."""

    @functools.wraps(execute)
    def holding(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            token = _CLAIMS.set(_Claims(stack, []))
            try:
                return execute(*args, **kwargs)
            finally:
                _CLAIMS.reset(token)

    return holding  # type: ignore[return-value]


def discover_kind(root: Path, kind: str) -> list[Path]:
    """Finished runs under ``root`` of ``kind``, newest first."""
    found = [m.parent for m in Path(root).glob(f"*/{MANIFEST}") if run_kind(m.parent) == kind]
    return sorted(found, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def slug(text: str) -> str:
    """``text`` as a run name: runs of other characters become '-', at most 60 characters; a
    longer one keeps its first 51 and a hash of the whole (two long names that share their
    start, e.g. two models in one deep directory, stay two runs)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")
    if len(name) <= 60:
        return name
    return f"{name[:51].rstrip('-.')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def check_run_name(name: str) -> str:
    """A run name is one plain path component: letters, digits, '.', '_', '-' (no '..')."""
    if not _RUN_NAME.fullmatch(name) or ".." in name:
        raise DataError(f"run name {name!r} must be a plain name (letters, digits, '.', '_', '-'; "
                        "no '/', no '..', at most 100 characters)")
    return name


@dataclass(kw_only=True)
class RunSettings:
    """What every command that writes a run directory shares: the model it loads (and the
    adapter on it, the device, the dtype) and where the run goes (``output/name``). ``model``
    is a name or path, or a model the caller loaded (``LoadedModel``), used as it is
    (``models.loaded_or_load``)."""

    model: str | LoadedModel = DEFAULT_MODEL
    adapter: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    output: Path = Path("runs")
    name: str | None = None  # default: built from the model and the run's content
    overwrite: bool = False

    def check_name(self, kind: str) -> None:
        """Before any model loads: ``output`` is no file and a named run of ``kind`` may be
        written (``check_run_directory``); inside a ``@writes_runs`` command (its main process)
        the named run is claimed here already."""
        if self.name is None:
            check_not_a_file(self.output)
            return
        check_run_name(self.name)
        if _CLAIMS.get() is not None and distributed.current().main:
            self.claim(kind, self.name)
        else:
            check_run_directory(self.run_directory(self.name), kind, self.overwrite)

    def run_directory(self, default_name: str) -> Path:
        """``output/name``, or ``output/`` + ``default_name`` made a run name when unnamed."""
        return self.output / (self.name or slug(default_name))

    def claim(self, kind: str, default_name: str, content_named: bool = False) -> Path:
        """The run directory (``run_directory``), locked for the calling ``@writes_runs``
        command until it ends (the same one when claimed before). ``content_named``: the
        default name is made of the run's content (model, data, activation key), so an
        unnamed rerun replaces its own kind's run without ``--overwrite``."""
        claims = _CLAIMS.get()
        if claims is None:
            raise RuntimeError("RunSettings.claim outside a @writes_runs function")
        directory = self.run_directory(default_name)
        if directory in claims.directories:
            return directory
        overwrite = self.overwrite or (content_named and self.name is None)
        claims.stack.enter_context(run_writer(directory, kind, overwrite))
        claims.directories.append(directory)
        return directory


def sentences_fingerprint(sentences: dict[str, list[str]]) -> str:
    """Content hash of sentence sets per language (whatever name or path they came from)."""
    digest = hashlib.sha256()
    for language in sorted(sentences):
        digest.update(f"{language}\t{len(sentences[language])}\n".encode())
        for sentence in sentences[language]:
            digest.update(sentence.encode() + b"\n")
    return digest.hexdigest()


HELD_OUT_OVERLAP = 0.05  # above this share of a language's held-out sentences: refused


def check_held_out(fitted: dict[str, list[str]], held_out: dict[str, list[str]],
                   fitted_option: str, held_option: str) -> None:
    """Held-out sentences are checked by content, not by the name or path they came from:
    per language, held-out sentences that are also among the fitted ones are an error when
    they are more than ``HELD_OUT_OVERLAP`` of them (the same sentences given twice, whatever
    the spelling), and said in a notice when fewer (FLORES dev and devtest share one Spanish
    sentence)."""
    shared = {language: len(set(sentences) & set(fitted.get(language, ())))
              for language, sentences in held_out.items()}
    counts = ", ".join(f"{display_name(x)} {n} of {len(held_out[x])}"
                       for x, n in shared.items() if n)
    if any(n > HELD_OUT_OVERLAP * len(held_out[x]) for x, n in shared.items()):
        raise DataError(f"{held_option} repeats sentences of {fitted_option} ({counts}): the "
                        "evaluation needs sentences the fit did not see; choose other data")
    if counts:
        notice(f"{held_option} shares a few sentences with {fitted_option} ({counts}); kept")


@dataclass
class RunResults:
    """A run directory read back."""

    directory: Path
    manifest: dict[str, Any]
    table: pd.DataFrame
    cka: pd.DataFrame
    projection: pd.DataFrame


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_run(directory: Path, manifest: dict[str, Any], table: pd.DataFrame, cka: pd.DataFrame,
              projection: pd.DataFrame, extra: dict[str, pd.DataFrame] | None = None) -> None:
    """Write tables first (``extra``: more CSVs by file name) and the manifest last: a directory
    with a manifest is complete (an earlier manifest goes first, so a failure on the way never
    leaves old and new mixed)."""
    start_run_directory(directory)
    _write_frame(table, directory / RESULTS)
    _write_frame(table, directory / "results.csv")
    _write_frame(cka, directory / "cka.csv")
    _write_frame(mexa_summary(table), directory / "mexa.csv")
    _write_frame(projection, directory / "projection.csv")
    for name, frame in (extra or {}).items():
        _write_frame(frame, directory / name)
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2, default=str))


def read_run(directory: Path) -> RunResults:
    """Read a run directory, or say clearly what is missing or broken."""
    if not directory.is_dir():
        raise StoreError(f"run directory {directory} does not exist")
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise StoreError(f"{directory} holds no {MANIFEST}: not a finished layer-analysis run "
                         "(run 'layer-analysis run' first)") from None
    except ValueError as exc:
        raise StoreError(f"{directory / MANIFEST} is not valid JSON ({exc})") from None
    if isinstance(manifest, dict) and manifest.get("kind") == "lens":
        raise StoreError(f"{directory} is a lens run: its report is {directory / 'report.html'} "
                         "(the dashboard's Latent language page shows it)")
    is_run = (isinstance(manifest, dict) and isinstance(manifest.get("model"), dict)
              and "name" in manifest["model"] and isinstance(manifest.get("data"), dict))
    if not is_run and not (isinstance(manifest, dict) and "compare" in manifest):
        raise StoreError(f"{directory / MANIFEST} is not a layer-analysis run manifest")
    try:
        table = pd.read_parquet(directory / RESULTS)
        cka = _optional_csv(directory / "cka.csv")
        projection = _optional_csv(directory / "projection.csv", keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{directory} has no readable results ({exc})") from None
    if table.empty:
        raise StoreError(f"{directory / RESULTS} holds no results")
    return RunResults(directory, manifest, table, cka, projection)


def data_differences(runs: list[RunResults]) -> list[str]:
    """How the runs' data differ from the first run's (empty when they used the same sentences)."""
    first = runs[0].manifest["data"]
    out = []
    for run in runs[1:]:
        data = run.manifest["data"]
        if data.get("fingerprint") == first.get("fingerprint"):
            continue
        named = {"data": "name", "languages": "languages", "sentences per language": "sides"}
        found = [f"{label} {data.get(key)!r} vs {first.get(key)!r}"
                 for label, key in named.items() if data.get(key) != first.get(key)]
        where = f"{run.directory} vs {runs[0].directory}"
        out += [f"{where}: {d}" for d in found or ["same languages and counts, different sentences"]]
    return out


def _settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """What besides the model and the data shapes a run's numbers."""
    extraction = manifest.get("extraction", {})
    return {"poolings": extraction.get("poolings"), "template": extraction.get("template"),
            "span": extraction.get("span"), "max length": extraction.get("max_length"),
            "sinks": (extraction.get("sinks") or {}).get("mode"),
            "sink ratio": extraction.get("sink_ratio"),
            "dtype": manifest.get("model", {}).get("dtype")}


def setting_differences(runs: list[RunResults]) -> list[str]:
    """How the runs' extraction settings differ from the first run's: a difference between the
    models then includes the settings' (one line per run that differs)."""
    first = _settings(runs[0].manifest)
    out = []
    for run in runs[1:]:
        own = _settings(run.manifest)
        found = [f"{key} {own[key]!r} vs {first[key]!r}" for key in first if own[key] != first[key]]
        if found:
            out.append(f"{run.directory} vs {runs[0].directory} differ in {', '.join(found)}: "
                       "the models' differences include these settings'")
    return out


def _optional_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """A CSV that may hold no table (e.g. no projection was asked for)."""
    if path.exists() and path.stat().st_size <= 1:
        return pd.DataFrame()
    return pd.read_csv(path, **kwargs)


def load_activations(results: RunResults) -> Activations:
    """The stored activations a run was computed from, verified, never trusted: the entry of the
    key its manifest records (``activations_key``; older runs: their entry's name), read only
    from the runs root's store (the run directory's parent's ``store/``, the default) or the
    store the run was written with (``store`` in its manifest), and only when its inputs hash to
    that key and hold the run's data fingerprint and model identity (``ActivationStore.verified``).
    A path elsewhere is not read; a mismatch is a ``StoreError`` naming both."""
    manifest = results.manifest
    recorded = manifest.get("activations")
    if not recorded:
        raise StoreError(f"{results.directory} records no activations (a comparison run?)")
    recorded = Path(recorded).expanduser().resolve()
    key = str(manifest.get("activations_key") or recorded.name)
    stores = [results.directory.resolve().parent / "store"]
    if manifest.get("store"):
        stores.append(Path(manifest["store"]).expanduser().resolve())
    store = next((ActivationStore(s) for s in stores if ActivationStore(s).directory(key)
                  == recorded), None)
    if store is None or not re.fullmatch(r"[0-9a-f]{24,64}", key):
        raise StoreError(f"{results.directory / MANIFEST} points at activations {recorded}, which "
                         f"is not the entry of its key in its store ({' or '.join(map(str, stores))}"
                         "); not read")
    data = manifest.get("data", {}).get("fingerprint")
    model = manifest.get("model", {}).get("identity")
    return store.verified(key, str(data), model, str(results.directory))


def model_cka(runs: list[RunResults], acts: list[Activations] | None = None) -> pd.DataFrame:
    """Linear CKA between the first run's model and each other, layer x layer, on the pivot side,
    for every pooling the two share (the runs must share their sentences; ``acts``: their
    activations, if loaded already)."""
    acts = acts or [load_activations(r) for r in runs]
    side = next(iter(acts[0].manifest["sides"]))
    pivot = runs[0].manifest["analysis"].get("pivot")
    if pivot:
        side = next((k for k in acts[0].manifest["sides"] if k.startswith(pivot)), side)
    first = runs[0].manifest["model"]["name"]
    rows = []
    for run, other in zip(runs[1:], acts[1:], strict=True):
        if side not in other.vectors:
            raise DataError(f"{run.directory} has no {side}; model CKA needs the same sentences")
        for pooling in shared_poolings(acts[0], other):
            matrix = linear_cka(acts[0].get(side, pooling), other.get(side, pooling))
            rows += [{"pooling": pooling, "layer_a": f"{first} L{la}",
                      "layer_b": f"{run.manifest['model']['name']} L{lb}",
                      "value": float(matrix[i, j])}
                     for i, la in enumerate(acts[0].layers) for j, lb in enumerate(other.layers)]
    frame = pd.DataFrame(rows)
    frame.attrs.update(x="other model's layer", y="first model's layer")
    return frame


def shared_poolings(a: Activations, b: Activations) -> list[str]:
    """The poolings both runs' activations hold, in the first's order."""
    return [p for p in a.poolings if p in b.poolings]


def paired_table(runs: list[RunResults], acts: list[Activations], names: list[str] | None = None
                 ) -> tuple[pd.DataFrame, list[str]]:
    """Each run after the first minus the first, paired per sentence (``paired``), under the
    first run's pivot, normalisations, resamples and seed; warnings for the runs that cannot be
    paired with it. ``names``: the models' names (default: their manifests')."""
    config = runs[0].manifest["analysis"]
    names = names or [r.manifest["model"]["name"] for r in runs]
    frames, warnings = [], []
    for name, other in zip(names[1:], acts[1:], strict=True):
        poolings = shared_poolings(acts[0], other)
        try:
            if not poolings:
                raise DataError(f"no pooling in common ({', '.join(acts[0].poolings)} vs "
                                f"{', '.join(other.poolings)})")
            frames.append(paired_differences(
                acts[0], other, names[0], name, config.get("pivot"), config["normalisations"],
                config.get("bootstrap", 1000), seed=config.get("seed", 0), poolings=poolings))
        except DataError as exc:
            warnings.append(f"{name} vs {names[0]}: {exc}; left out")
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), warnings


def run_figures(results: RunResults, metric: str = "p@1", normalisation: str = "centered"
                ) -> dict[str, Any]:
    """The report's figures for one run."""
    table = results.table
    pivot = results.manifest.get("analysis", {}).get("pivot")
    one_way = table[table.source.str.startswith(pivot)] if pivot else table
    figures = {
        f"heatmap_{metric}": report.heatmap(table, metric, normalisation),
        f"curves_{metric}": report.curves(one_way if not one_way.empty else table, metric,
                                          normalisation),
        "curves_cosine_adjusted": report.curves(table, "cosine_adjusted", normalisation),
        "heatmap_mrr_csls": report.heatmap(table, "mrr", "csls")
        if (table.normalisation == "csls").any() else None,
    }
    figures.update(per_pooling(results.cka, "cka_layers", lambda rows, p: report.cka_heatmap(
        rows, f"linear CKA between layers{f' ({p} pooling)' if p else ''}")))
    figures.update(per_pooling(results.projection, "projection", report.scatter))
    figures = {name: fig for name, fig in figures.items() if fig is not None}
    return many_language_figures(figures, table, results.manifest, metric, normalisation)


def per_pooling(table: pd.DataFrame, name: str, figure: Any) -> dict[str, Any]:
    """``figure(rows, pooling)`` for each pooling of ``table`` (one named ``name``, more named
    ``name_POOLING``); none for an empty table."""
    if table.empty:
        return {}
    poolings = report.poolings_of(table)
    return {name if len(poolings) == 1 else f"{name}_{p}":
            figure(table[table.pooling == p] if p else table, p or None) for p in poolings}


def build_report(results: RunResults, figures: dict[str, Any], title: str, static: bool = True
                 ) -> list[Path]:
    """report.html plus, when ``static``, PNG and PDF of every figure under figures/; the
    figures' titles, their files and the peaks line name the model and the run."""
    manifest = results.manifest
    model = (manifest.get("model") or {}).get("name") or " vs ".join(manifest.get("models", []))
    label = report.identity(model or None, results.directory)
    summary = []
    try:
        peaks = peak_layers(results.table)
        several = "pooling" in peaks and peaks.pooling.nunique() > 1
        summary.append(f"Peak layer of centered P@1 ({label}): " + "; ".join(
            f"{r.source.split('@')[0]}→{r.target.split('@')[0]}"
            f"{f' ({r.pooling})' if several else ''} layer {r.layer} ({r.value:.2f})"
            for r in peaks.itertuples()))
    except DataError:  # no P@1 rows: the report then has no summary line
        pass
    sinks = results.manifest.get("extraction", {}).get("sinks")
    if sinks:
        summary.append(SinkRecord.from_dict(sinks).summary())
    return report.export(figures, results.directory, title, summary, static, model or None)


def read_model_run(path: Path) -> RunResults:
    """A run of one model (not a comparison), or a clear error."""
    results = read_run(path)
    if "compare" in results.manifest:
        raise DataError(f"{path} is a comparison, not a run; rebuild it with 'layer-analysis "
                        "compare' on its runs")
    return results


def compare_runs(runs: list[RunResults], output: Path, metric: str = "p@1",
                 normalisation: str = "centered", allow_different_data: bool = False,
                 static: bool = True) -> tuple[list[Path], list[str], pd.DataFrame]:
    """Write a comparison of several models' runs (tables, model × model CKA, paired
    differences against the first run, report) to ``output``; returns the report's paths, the
    warnings about what the runs do not share, and the paired differences."""
    if len(runs) < 2:
        raise DataError("compare needs at least two run directories")
    differences = data_differences(runs)
    if differences and not allow_different_data:
        raise DataError("the runs used different data (" + "; ".join(differences) + "); compare "
                        "runs on the same sentences, or pass --allow-different-data")
    names = [r.manifest["model"]["name"] for r in runs]
    if len(set(names)) < len(names):
        raise DataError(f"two runs share a model name ({', '.join(names)}); compare different models")
    table = pd.concat([r.table for r in runs], ignore_index=True)
    figures = {f"comparison_{metric}": report.comparison(table, metric, normalisation),
               f"heatmap_{metric}": report.heatmap(table, metric, normalisation)}
    warnings = [*differences, *setting_differences(runs)]
    cka, paired = pd.DataFrame(), pd.DataFrame()
    if differences:
        warnings.append("model x model CKA and paired differences need the same sentences; "
                        "left out")
    else:
        acts = [load_activations(r) for r in runs]
        cka = model_cka(runs, acts)
        figures.update(per_pooling(cka, "cka_models", lambda rows, p: report.cka_heatmap(
            rows, f"linear CKA between models, layer by layer{f' ({p} pooling)' if p else ''}")))
        paired, why = paired_table(runs, acts)
        warnings += why
        if not paired.empty:
            figures[f"paired_{metric}"] = report.paired_curves(paired, metric, normalisation)
    sources = [str(r.directory) for r in runs]
    write_run(output, {"compare": sources, "models": names, "versions": versions()}, table, cka,
              pd.DataFrame(), {"paired.csv": paired} if not paired.empty else None)
    merged = RunResults(output, {"runs": sources, "models": names}, table, cka, pd.DataFrame())
    paths = build_report(merged, figures, "comparison: " + " vs ".join(names), static=static)
    return paths, warnings, paired
