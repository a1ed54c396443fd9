"""MEXA-compatible export: per language one JSON ``{layer: score}`` named by its FLORES code.

MEXA (cisnlp/Mexa, ``compute_mexa.py``) writes ``SAVE_PATH/<code>.json`` holding
``{"0": score, "1": score, ...}`` for every layer of ``output_hidden_states`` against the
pivot (English); its tools read a directory of such files. A run writes two such directories:

    RUN/mexa_export/strict/<code>.json        MEXA's strict score (the ``mexa`` metric) on raw
                                              cosines: MEXA's own setting
    RUN/mexa_export/centered_p1/<code>.json   centered P@1, English -> X and X -> English averaged

Layer numbers are this tool's (0 = embeddings, i = output of block i); MEXA's last layer is
after the final norm, ours before it. MEXA pools with position weights (``--pooling weighted``);
the run's pooling is written in ``mexa_export/about.txt``. English itself gets no file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .analysis import paired_with_english
from .errors import DataError, StoreError, notice
from .files import atomic_directory
from .languages import canonical

DIRECTORY = "mexa_export"
SETS = {"strict": ("mexa", "raw"), "centered_p1": ("p@1", "centered")}


def layer_scores(table: pd.DataFrame, metric: str, normalisation: str
                 ) -> dict[str, dict[int, float]]:
    """Language -> {layer: score} against English, both directions averaged (MEXA's strict
    score is symmetric already)."""
    rows = paired_with_english(table[(table.metric == metric)
                                     & (table.normalisation == normalisation)])
    mean = rows.groupby(["language", "layer"]).value.mean()
    out: dict[str, dict[int, float]] = {}
    for (language, layer), value in mean.items():
        out.setdefault(language, {})[int(layer)] = float(value)
    return out


def export_mexa(run_dir: Path, table: pd.DataFrame, pooling: str | None = None,
                output: Path | None = None) -> Path | None:
    """Write the export of a run's table, of one ``pooling`` (default: the table's first), to
    ``output`` (default ``RUN/mexa_export``), replacing an earlier export only (any other
    existing file or directory is refused, never removed); None (with a notice) when the run has
    no language paired with English."""
    target = Path(output) if output is not None else Path(run_dir) / DIRECTORY
    check_export_target(target)
    if "pooling" in table and len(table):
        pooling = pooling or str(table.pooling.iloc[0])
        if pooling not in set(table.pooling):
            raise DataError(f"the run has no {pooling!r} pooling ({', '.join(set(table.pooling))})")
        table = table[table.pooling == pooling]
    sets = {name: layer_scores(table, *spec) for name, spec in SETS.items()}
    if not any(sets.values()):
        notice("no MEXA export: the run has no language paired with English")
        return None
    with atomic_directory(target, replace=True) as staging:
        lines = [f"run: {Path(run_dir).resolve()}", f"pooling: {pooling or 'unknown'}"]
        for name, scores in sets.items():
            metric, normalisation = SETS[name]
            if not scores:
                lines.append(f"{name}: absent (the run has no {metric} on {normalisation} scores)")
                continue
            (staging / name).mkdir()
            for language, layers in scores.items():
                (staging / name / f"{language}.json").write_text(
                    json.dumps({str(k): v for k, v in sorted(layers.items())}))
            lines.append(f"{name}: {metric} ({normalisation}), {len(scores)} languages")
        (staging / "about.txt").write_text("\n".join(lines) + "\n")
    return target


def is_export(directory: Path) -> bool:
    """Whether ``directory`` is an export this module wrote: ``about.txt`` (starting ``run:``)
    and nothing but the sets' directories of ``<code>.json`` files."""
    directory = Path(directory)
    try:
        about = (directory / "about.txt").read_text(encoding="utf-8")
        entries = list(directory.iterdir())
    except (OSError, UnicodeDecodeError):
        return False
    return (about.startswith("run: ") and not directory.is_symlink()
            and all(e.name == "about.txt" or (e.name in SETS and e.is_dir() and not e.is_symlink()
                                              and all(f.suffix == ".json" for f in e.iterdir()))
                    for e in entries))


def check_export_target(target: Path) -> None:
    """An export replaces an earlier export, never anything else (``--output runs`` must not
    remove the runs)."""
    if target.is_symlink() or (target.exists() and not (target.is_dir() and (
            not any(target.iterdir()) or is_export(target)))):
        raise StoreError(f"--output {target} exists and is no earlier MEXA export; it is not "
                         "replaced: choose a new directory")


def read_mexa(directory: Path) -> dict[str, dict[int, float]]:
    """A directory of MEXA JSON files (ours or MEXA's own) -> language -> {layer: score}."""
    directory = Path(directory)
    files = sorted(directory.glob("*.json"))
    if not files:
        raise DataError(f"{directory} holds no <code>.json files")
    out = {}
    for path in files:
        language = canonical(path.stem, f"file {path}")
        try:
            raw = json.loads(path.read_text())
            scores = {int(k): float(v) for k, v in raw.items()}
        except (ValueError, AttributeError, TypeError) as exc:
            raise DataError(f"{path}: expected a JSON object of layer -> score ({exc})") from None
        if not all(math.isfinite(v) for v in scores.values()):
            raise DataError(f"{path}: non-finite score")
        out[language] = scores
    return out
