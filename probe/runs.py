"""Run directories: what a finished analysis leaves on disk, and the reports built from it.

    RUN/manifest.json       configuration, versions, data fingerprint, timings, activation path
    RUN/results.parquet     the tidy table (also results.csv)
    RUN/cka.csv             layer x layer linear CKA
    RUN/mexa.csv            MEXA scores aggregated over layers (mean and max) per pair
    RUN/projection.csv      2-D coordinates of sentences at one layer
    RUN/report.html         self-contained report; RUN/figures/*.png|pdf the static figures
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from . import report
from .analysis import mexa_summary, peak_layers
from .errors import DataError, StoreError
from .extract import SinkRecord
from .files import MANIFEST, atomic_write, atomic_write_text, start_run_directory
from .metrics import linear_cka
from .models import DEFAULT_MODEL
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
    intervention; alignment runs have none), or None when it is no finished run."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("kind", "alignment") if isinstance(manifest, dict) else None


def discover_kind(root: Path, kind: str) -> list[Path]:
    """Finished runs under ``root`` of ``kind``, newest first."""
    found = [m.parent for m in Path(root).glob(f"*/{MANIFEST}") if run_kind(m.parent) == kind]
    return sorted(found, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def slug(text: str) -> str:
    """``text`` as a run name: runs of other characters become '-', at most 60 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60]


def check_run_name(name: str) -> str:
    """A run name is one plain path component: letters, digits, '.', '_', '-' (no '..')."""
    if not _RUN_NAME.fullmatch(name) or ".." in name:
        raise DataError(f"run name {name!r} must be a plain name (letters, digits, '.', '_', '-'; "
                        "no '/', no '..', at most 100 characters)")
    return name


@dataclass(kw_only=True)
class RunSettings:
    """What every command that writes a run directory shares: the model it loads (and the
    adapter on it, the device, the dtype) and where the run goes (``output/name``)."""

    model: str = DEFAULT_MODEL
    adapter: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    output: Path = Path("runs")
    name: str | None = None  # default: built from the model and the run's content
    overwrite: bool = False

    def check_name(self) -> None:
        """A named run: a plain name, and not a finished run already unless ``overwrite``."""
        if self.name is None:
            return
        if (self.output / check_run_name(self.name) / MANIFEST).exists() and not self.overwrite:
            raise DataError(f"a run named {self.name!r} exists in {self.output}; choose another "
                            "name or pass --overwrite")

    def run_directory(self, default_name: str) -> Path:
        """``output/name``, or ``output/`` + ``default_name`` made a run name when unnamed."""
        return self.output / (self.name or slug(default_name))


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
    """The stored activations a run was computed from (a clear error if they are gone)."""
    path = results.manifest.get("activations")
    if not path:
        raise StoreError(f"{results.directory} records no activations (a comparison run?)")
    return ActivationStore(Path(path).parent).load(Path(path))


def model_cka(runs: list[RunResults], acts: list[Activations] | None = None) -> pd.DataFrame:
    """Linear CKA between the first run's model and each other, layer x layer, on the pivot side
    (the runs must share their sentences; ``acts``: their activations, if loaded already)."""
    acts = acts or [load_activations(r) for r in runs]
    side = next(iter(acts[0].manifest["sides"]))
    pivot = runs[0].manifest["analysis"].get("pivot")
    if pivot:
        side = next((k for k in acts[0].manifest["sides"] if k.startswith(pivot)), side)
    base = acts[0].get(side)
    first = runs[0].manifest["model"]["name"]
    rows = []
    for run, other in zip(runs[1:], acts[1:], strict=True):
        if side not in other.vectors:
            raise DataError(f"{run.directory} has no {side}; model CKA needs the same sentences")
        matrix = linear_cka(base, other.get(side))
        rows += [{"layer_a": f"{first} L{la}", "layer_b": f"{run.manifest['model']['name']} L{lb}",
                  "value": float(matrix[i, j])}
                 for i, la in enumerate(acts[0].layers) for j, lb in enumerate(other.layers)]
    frame = pd.DataFrame(rows)
    frame.attrs.update(x="other model's layer", y="first model's layer")
    return frame


def paired_table(runs: list[RunResults], acts: list[Activations], names: list[str] | None = None
                 ) -> tuple[pd.DataFrame, list[str]]:
    """Each run after the first minus the first, paired per sentence (``paired``), under the
    first run's pivot, normalisations, resamples and seed; warnings for the runs that cannot be
    paired with it. ``names``: the models' names (default: their manifests')."""
    config = runs[0].manifest["analysis"]
    names = names or [r.manifest["model"]["name"] for r in runs]
    frames, warnings = [], []
    for name, other in zip(names[1:], acts[1:], strict=True):
        try:
            frames.append(paired_differences(
                acts[0], other, names[0], name, config.get("pivot"), config["normalisations"],
                config.get("bootstrap", 1000), seed=config.get("seed", 0)))
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
        "cka_layers": report.cka_heatmap(results.cka) if not results.cka.empty else None,
        "projection": report.scatter(results.projection) if not results.projection.empty
        else None,
    }
    figures = {name: fig for name, fig in figures.items() if fig is not None}
    return many_language_figures(figures, table, results.manifest, metric, normalisation)


def build_report(results: RunResults, figures: dict[str, Any], title: str, static: bool = True
                 ) -> list[Path]:
    """report.html plus, when ``static``, PNG and PDF of every figure under figures/."""
    summary = []
    try:
        peaks = peak_layers(results.table)
        summary.append("Peak layer of centered P@1: " + "; ".join(
            f"{r.source.split('@')[0]}→{r.target.split('@')[0]} layer {r.layer} "
            f"({r.value:.2f})" for r in peaks.itertuples()))
    except DataError:  # no P@1 rows: the report then has no summary line
        pass
    sinks = results.manifest.get("extraction", {}).get("sinks")
    if sinks:
        summary.append(SinkRecord.from_dict(sinks).summary())
    html_path = results.directory / "report.html"
    report.write_html(figures, html_path, title, summary)
    paths = [html_path]
    if static:
        paths += report.write_static(figures, results.directory / "figures")
    return paths


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
        figures["cka_models"] = report.cka_heatmap(cka, "linear CKA between models, layer by layer")
        paired, why = paired_table(runs, acts)
        warnings += why
        if not paired.empty:
            figures[f"paired_{metric}"] = report.paired_curves(paired, metric, normalisation)
    output.mkdir(parents=True, exist_ok=True)
    sources = [str(r.directory) for r in runs]
    write_run(output, {"compare": sources, "models": names, "versions": versions()}, table, cka,
              pd.DataFrame(), {"paired.csv": paired} if not paired.empty else None)
    merged = RunResults(output, {"runs": sources}, table, cka, pd.DataFrame())
    paths = build_report(merged, figures, "comparison: " + " vs ".join(names), static=static)
    return paths, warnings, paired
