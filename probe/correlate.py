"""Does alignment predict downstream ability? Correlation across languages, layer by layer.

Alignment: per language (paired with English) and layer, from an alignment run (a metric and
normalisation of its table, both directions averaged) or a directory of MEXA JSON files.
Downstream: one or more score tables — a transfer run (accuracy of the English-trained probe at
its best centered layer, by default), ``evaluate`` outputs (chrF++ per target, XQuAD F1 per
language), or any CSV with ``language`` and ``score`` columns.

Per score table and layer (and for MEXA's aggregations over layers, ``mean`` and ``max``):
Pearson and Spearman across languages, each with a percentile bootstrap CI over languages (the
languages resampled with replacement; Spearman re-ranks every resample, ties averaged) and a
two-sided permutation p-value ((1 + #|r_perm| >= |r|) / (1 + permutations)); and partial
correlations that control for the tokenization covariates: both sides' residuals after a
least-squares fit on the covariates (with an intercept), Pearson on the values and Spearman on
their ranks, with the same bootstrap (the fit redone per resample) and permutations (of the
score's residuals).

Tidy rows: score, aggregation (layer | mean | max), layer, method (pearson | spearman |
partial_pearson | partial_spearman), r, ci_low, ci_high, p, n, covariates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .errors import DataError, notice
from .files import MANIFEST, atomic_write, atomic_write_text, start_run_directory
from .languages import ENGLISH, canonical
from .metrics import _resample_counts
from .mexa_export import layer_scores, read_mexa
from .runs import check_run_directory, read_run, run_kind, run_writer, versions
from .tokenization import COVARIATES
from .tokenization import FILE as TOKENIZATION

KIND = "correlation"  # the manifest's kind

METHODS = ("pearson", "spearman", "partial_pearson", "partial_spearman")
COLUMNS = ["score", "aggregation", "layer", "method", "r", "ci_low", "ci_high", "p", "n",
           "covariates"]
MIN_LANGUAGES = 3


@dataclass(frozen=True)
class CorrelationConfig:
    bootstrap: int = 1000
    permutations: int = 2000
    level: float = 0.95
    seed: int = 0
    covariates: tuple[str, ...] = COVARIATES


@dataclass
class Scores:
    """One downstream score per language; ``name`` labels it in tables and figures."""

    name: str
    values: dict[str, float]
    where: str = ""


@dataclass
class Alignment:
    """Language -> {layer: score}, and the tokenization table of the run (if any)."""

    name: str
    values: dict[str, dict[int, float]]
    tokenization: pd.DataFrame | None = None
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- reading


def read_alignment(path: Path, metric: str = "p@1", normalisation: str = "centered"
                   ) -> Alignment:
    """An alignment run directory, a transfer run (the alignment of its test sentences) or a
    directory of MEXA ``<code>.json`` files."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        if run_kind(path) == "transfer":
            from .transfer_run import read_test_alignment

            table = read_test_alignment(path)
        else:
            table = read_run(path).table
        values = layer_scores(table, metric, normalisation)
        if not values:
            raise DataError(f"{path} has no {metric} ({normalisation}) between English and "
                            "another language")
        tokenization = (pd.read_csv(path / TOKENIZATION) if (path / TOKENIZATION).is_file()
                        else None)
        return Alignment(f"{metric} ({normalisation})", values, tokenization,
                         {"run": str(path), "metric": metric, "normalisation": normalisation})
    if path.is_dir():
        return Alignment(f"MEXA files {path.name}", read_mexa(path), None, {"mexa": str(path)})
    raise DataError(f"{path} is neither a run directory nor a directory of MEXA JSON files")


def _finite(value: object, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: score {value!r} is not a number") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: score {value!r} is not finite")
    return number


def read_score_csv(path: Path, column: str = "score") -> Scores:
    """A CSV with ``language`` and ``column``: every language known, once, finite."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as CSV ({exc})") from None
    missing = [c for c in ("language", column) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}, line 1: no column {', '.join(missing)} (columns: "
                        f"{', '.join(frame.columns)}); expected language,{column}")
    values: dict[str, float] = {}
    lines: dict[str, int] = {}
    for number, (name, value) in enumerate(zip(frame.language, frame[column], strict=True), 2):
        where = f"{path}, line {number}"
        code = canonical(name, where)
        if code in values:
            raise DataError(f"{where}: {code} again (line {lines[code]}); one row per language")
        values[code], lines[code] = _finite(value, where), number
    if not values:
        raise DataError(f"{path} has a header but no rows")
    return Scores(f"{path.stem} {column}", values, str(path))


def read_evaluation(path: Path) -> list[Scores]:
    """``layer-analysis evaluate`` output: chrF++ per translation target, XQuAD F1 per language."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as JSON ({exc})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: expected the list of score objects 'evaluate' writes")
    tables: dict[str, Scores] = {}
    for i, record in enumerate(records):
        where = f"{path}, record {i + 1}"
        task = record.get("task")
        if task == "translation":
            name, language, value = "translation chrf++", record.get("target"), record.get("chrf++")
        elif task == "xquad":
            name, language, value = "xquad f1", record.get("language"), record.get("f1")
        else:
            raise DataError(f"{where}: unknown task {task!r}")
        code = canonical(str(language), where)
        table = tables.setdefault(name, Scores(f"{Path(path).stem} {name}", {}, str(path)))
        if code in table.values:
            raise DataError(f"{where}: {name} for {code} again; one record per language")
        table.values[code] = _finite(value, where)
    return list(tables.values())


def read_transfer_scores(path: Path, variant: str = "centered", metric: str = "accuracy",
                         layer: int | None = None) -> Scores:
    """Per target, the transfer score at ``layer`` (default: the best layer of ``variant``)."""
    from .transfer_run import best_layers, read_transfer, summarise

    table, _ = read_transfer(path)
    if layer is None:
        best = best_layers(summarise(table), metric)
        best = best[best.variant == variant]
        if best.empty:
            raise DataError(f"{path} has no {variant} transfer rows")
        layer = int(best.layer.iloc[0])
    rows = table[(table.variant == variant) & (table.setting == "transfer")
                 & (table.metric == metric) & (table.layer == layer)
                 & (table.target != table.source)]
    if rows.empty:
        raise DataError(f"{path} has no {variant} {metric} transfer at layer {layer}")
    return Scores(f"transfer {metric} ({variant}, layer {layer})",
                  dict(zip(rows.target, rows.value.astype(float), strict=True)), str(path))


def read_scores(path: Path, column: str = "score", variant: str = "centered",
                metric: str = "accuracy", layer: int | None = None) -> list[Scores]:
    """Score tables from a transfer run, an ``evaluate`` JSON, or a CSV."""
    path = Path(path)
    if path.is_dir():
        return [read_transfer_scores(path, variant, metric, layer)]
    if path.suffix == ".json":
        return read_evaluation(path)
    if path.suffix in (".csv", ".tsv", ".txt") or path.is_file():
        return [read_score_csv(path, column)]
    raise DataError(f"no score table at {path} (a transfer run, an evaluate .json or a .csv)")


# ---------------------------------------------------------------------------- statistics


def _standardise(v: np.ndarray) -> np.ndarray:
    """Rows of v (..., n) centered and scaled to unit mean square (NaN when constant)."""
    v = v - v.mean(-1, keepdims=True)
    scale = np.sqrt((v**2).mean(-1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / scale


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float((_standardise(x) * _standardise(y)).mean())


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson under each row of ``weights`` (resample counts, (samples, n)): the Pearson of the
    resample that repeats row i ``weights[s, i]`` times. x and y are (n,) or (samples, n)."""
    total = weights.sum(-1)
    mx, my = (weights * x).sum(-1) / total, (weights * y).sum(-1) / total
    dx, dy = x - mx[:, None], y - my[:, None]
    cov = (weights * dx * dy).sum(-1)
    var = (weights * dx**2).sum(-1) * (weights * dy**2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(var), np.nan)


def weighted_ranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks of each value within each weighted resample (samples, n)."""
    below = (x[None, :] < x[:, None]).astype(float)  # below[i, j]: x_j < x_i
    same = (x[None, :] == x[:, None]).astype(float)
    return weights @ below.T + (weights @ same.T + 1) / 2


def residuals(v: np.ndarray, covariates: np.ndarray | None) -> np.ndarray:
    """v minus its least-squares fit on the covariates (n, k) and an intercept."""
    design = np.ones((len(v), 1)) if covariates is None else np.column_stack(
        [np.ones(len(v)), covariates])
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    return v - design @ coef


def weighted_residuals(v: np.ndarray, design: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row of ``weights`` (resample counts, (samples, n)), ``v`` minus its weighted
    least-squares fit on ``design`` ((n, k) or (samples, n, k), an intercept column included):
    the residuals of the resample that repeats row i ``weights[s, i]`` times."""
    samples, n = weights.shape
    design = np.broadcast_to(design, (samples, n, design.shape[-1]))
    v = np.broadcast_to(v, (samples, n))
    weighted = design.transpose(0, 2, 1) * weights[:, None, :]  # (samples, k, n)
    gram = weighted @ design
    beta = np.linalg.pinv(gram, rcond=1e-10, hermitian=True) @ (weighted @ v[..., None])
    return v - (design @ beta)[..., 0]


def weighted_partial(x: np.ndarray, y: np.ndarray, covariates: np.ndarray, weights: np.ndarray,
                     rank: bool = False) -> np.ndarray:
    """``partial_correlation`` of every weighted resample at once (ranks re-taken within each
    resample with ``rank``): what the loop over resamples gives, in a few batched products."""
    covariates = (covariates - covariates.mean(0)) / np.where(covariates.std(0) > 0,
                                                              covariates.std(0), 1.0)
    if rank:
        x, y = weighted_ranks(x, weights), weighted_ranks(y, weights)
        columns = [weighted_ranks(c, weights) for c in covariates.T]
        design = np.stack([np.ones_like(x), *columns], axis=-1)
    else:
        design = np.column_stack([np.ones(len(x)), covariates])
    return weighted_pearson(weighted_residuals(x, design, weights),
                            weighted_residuals(y, design, weights), weights)


def partial_correlation(x: np.ndarray, y: np.ndarray, covariates: np.ndarray,
                        rank: bool = False) -> float:
    """Pearson (or, with ``rank``, Spearman) correlation of x and y given the covariates."""
    if rank:
        x, y = rankdata(x), rankdata(y)
        covariates = np.column_stack([rankdata(c) for c in covariates.T])
    return pearson(residuals(x, covariates), residuals(y, covariates))


def _percentile(samples: np.ndarray, level: float) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if not len(finite):
        return math.nan, math.nan
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def _permutation_p(x: np.ndarray, y: np.ndarray, r: float, config: CorrelationConfig) -> float:
    if not math.isfinite(r):
        return math.nan
    rng = np.random.default_rng(config.seed)
    perms = np.stack([rng.permutation(len(y)) for _ in range(config.permutations)])
    null = (_standardise(x)[None] * _standardise(y)[perms]).mean(-1)
    return float((1 + np.sum(np.abs(null) >= abs(r) - 1e-12)) / (1 + config.permutations))


def correlation_rows(x: np.ndarray, y: np.ndarray, covariates: np.ndarray | None,
                     config: CorrelationConfig) -> list[dict]:
    """Pearson, Spearman and (with covariates) both partial correlations of x and y."""
    n = len(x)
    counts = _resample_counts(n, config.bootstrap, config.seed).numpy().astype(float)
    rows = []
    r = pearson(x, y)
    rows.append(("pearson", r, weighted_pearson(x, y, counts), _permutation_p(x, y, r, config)))
    rx, ry = rankdata(x), rankdata(y)
    r = pearson(rx, ry)
    rows.append(("spearman", r, weighted_pearson(weighted_ranks(x, counts),
                                                 weighted_ranks(y, counts), counts),
                 _permutation_p(rx, ry, r, config)))
    if covariates is not None:
        for method, rank in (("partial_pearson", False), ("partial_spearman", True)):
            r = partial_correlation(x, y, covariates, rank)
            samples = weighted_partial(x, y, covariates, counts, rank)
            if rank:
                z = np.column_stack([rankdata(c) for c in covariates.T])
                ex, ey = residuals(rankdata(x), z), residuals(rankdata(y), z)
            else:
                ex, ey = residuals(x, covariates), residuals(y, covariates)
            rows.append((method, r, samples, _permutation_p(ex, ey, r, config)))
    out = []
    for method, r, samples, p in rows:
        low, high = _percentile(samples, config.level)
        out.append({"method": method, "r": r, "ci_low": low, "ci_high": high, "p": p, "n": n})
    return out


def covariate_matrix(tokenization: pd.DataFrame | None, languages: Sequence[str],
                     names: Sequence[str]) -> tuple[np.ndarray | None, list[str]]:
    """(languages, k) covariates from a tokenization table (a language's sides averaged);
    ``script`` enters as indicator columns. None when there is no table or no covariate."""
    if tokenization is None or not names:
        return None, []
    per = tokenization.groupby("language")
    missing = [x for x in languages if x not in per.groups]
    if missing:
        raise DataError(f"the tokenization table has no {', '.join(missing[:5])}")
    columns, used = [], []
    for name in names:
        if name == "script":
            scripts = per.script.first().reindex(languages)
            for value in sorted(set(scripts))[1:]:
                columns.append((scripts == value).astype(float).to_numpy())
                used.append(f"script={value}")
            continue
        if name not in tokenization.columns:
            raise DataError(f"unknown covariate {name!r}; choose from "
                            f"{', '.join([*COVARIATES, 'script'])}")
        values = per[name].mean().reindex(languages).to_numpy(dtype=float)
        if not np.isfinite(values).all():
            raise DataError(f"covariate {name} is not finite for every language (fertility and "
                            "type overlap need English in the run)")
        columns.append(values)
        used.append(name)
    return np.column_stack(columns), used


def correlate(alignment: Alignment, scores: Scores, config: CorrelationConfig = CorrelationConfig()
              ) -> pd.DataFrame:
    """The tidy correlation table of one score table against the alignment (module docstring)."""
    layers = sorted(set.intersection(*(set(v) for v in alignment.values.values())))
    languages = sorted(x for x in scores.values if x in alignment.values and x != ENGLISH)
    if len(languages) < MIN_LANGUAGES:
        raise DataError(f"{scores.name}: {len(languages)} language(s) in common with the "
                        f"alignment ({', '.join(languages) or 'none'}); a correlation needs at "
                        f"least {MIN_LANGUAGES}")
    covariates, used = covariate_matrix(alignment.tokenization, languages, config.covariates)
    if covariates is not None and len(languages) <= covariates.shape[1] + 2:
        raise DataError(f"{len(languages)} languages are too few to control for "
                        f"{len(used)} covariates; pass fewer --covariates (or none)")
    y = np.array([scores.values[x] for x in languages])
    grid = np.array([[alignment.values[x][layer] for layer in layers] for x in languages])
    rows = []
    series = [("layer", layer, grid[:, i]) for i, layer in enumerate(layers)]
    series += [("mean", math.nan, grid.mean(1)), ("max", math.nan, grid.max(1))]
    for aggregation, layer, x in series:
        for row in correlation_rows(x, y, covariates, config):
            rows.append({"score": scores.name, "aggregation": aggregation, "layer": layer, **row,
                         "covariates": ",".join(used)})
    return pd.DataFrame(rows, columns=COLUMNS)


def common_languages(alignment: Alignment, scores: Scores) -> tuple[list[str], list[str]]:
    """(languages in both, languages of the scores that the alignment lacks)."""
    shared = sorted(x for x in scores.values if x in alignment.values and x != ENGLISH)
    lacking = sorted(x for x in scores.values if x not in alignment.values and x != ENGLISH)
    return shared, lacking


# ------------------------------------------------------------------------ figures and runs

TABLE, INPUTS, REPORT = "correlation.csv", "scores.csv", "correlation.html"


def curve_figure(table: pd.DataFrame, methods: Sequence[str] = ("pearson", "spearman",
                                                                 "partial_pearson")) -> Any:
    """r per layer, one line per score table and method, with its bootstrap band."""
    import plotly.graph_objects as go

    from .report import PALETTE, band

    rows = table[(table.aggregation == "layer") & table.method.isin(methods)]
    fig = go.Figure()
    for i, ((score, method), group) in enumerate(rows.groupby(["score", "method"], sort=False)):
        color = PALETTE[i % len(PALETTE)]
        group = group.sort_values("layer").rename(columns={"r": "value"})
        name = f"{score}: {method}"
        fig.add_trace(band(group, color, legendgroup=name))
        fig.add_trace(go.Scatter(x=group.layer, y=group.value, mode="lines+markers", name=name,
                                 line={"color": color}, legendgroup=name))
    fig.add_hline(y=0, line={"color": "black", "width": 1, "dash": "dot"})
    fig.update_layout(title="correlation across languages of alignment with the downstream "
                            "score, per layer (bands: 95 % bootstrap CI over languages)",
                      xaxis_title="layer", yaxis_title="r", yaxis_range=[-1, 1],
                      legend={"orientation": "h", "yanchor": "top", "y": -0.15, "x": 0})
    return fig


def scatter_figure(points: pd.DataFrame, layer: int) -> Any:
    """Alignment at ``layer`` against each score, every language labelled."""
    import plotly.graph_objects as go

    from .report import PALETTE

    fig = go.Figure()
    for i, (score, group) in enumerate(points.groupby("score", sort=False)):
        fig.add_trace(go.Scatter(x=group.alignment, y=group.value, mode="markers+text",
                                 text=group.language, textposition="top center", name=score,
                                 marker={"color": PALETTE[i % len(PALETTE)]}))
    fig.update_layout(title=f"alignment at layer {layer} against the downstream score",
                      xaxis_title="alignment", yaxis_title="score")
    return fig


def scatter_layer(alignment: Alignment) -> int:
    """The layer where the alignment, averaged over languages, peaks."""
    layers = sorted(set.intersection(*(set(v) for v in alignment.values.values())))
    means = [np.mean([v[layer] for v in alignment.values.values()]) for layer in layers]
    return layers[int(np.argmax(means))]


def execute_correlate(alignment: Alignment, scores: list[Scores], output: Path,
                      config: CorrelationConfig = CorrelationConfig(), layer: int | None = None,
                      command: Sequence[str] = (), overwrite: bool = False
                      ) -> tuple[Path, pd.DataFrame]:
    """Correlate every score table with the alignment and write OUTPUT/{correlation.csv,
    scores.csv, correlation.html, manifest.json (last)}; never into another kind of directory,
    nor over a finished correlation without ``overwrite`` (``runs.run_writer``)."""
    if not scores:
        raise DataError("name one or more score tables")
    check_run_directory(output, KIND, overwrite)  # before the work
    layers = sorted(set.intersection(*(set(v) for v in alignment.values.values())))
    layer = scatter_layer(alignment) if layer is None else layer
    if layer not in layers:
        raise DataError(f"layer {layer} is not in the alignment (layers {layers[0]}..{layers[-1]})")
    names = [s.name for s in scores]
    if len(set(names)) != len(names):
        raise DataError(f"two score tables share a name ({', '.join(names)}); rename a CSV")
    frames, points, notes = [], [], []
    for table in scores:
        shared, lacking = common_languages(alignment, table)
        if lacking:
            notes.append(f"{table.name}: {len(lacking)} language(s) without alignment left out "
                         f"({', '.join(lacking[:8])}{', …' if len(lacking) > 8 else ''})")
        frames.append(correlate(alignment, table, config))
        points += [{"score": table.name, "language": x, "value": table.values[x],
                    "alignment": alignment.values[x][layer]} for x in shared]
    for note in notes:
        notice(note)
    table = pd.concat(frames, ignore_index=True)
    inputs = pd.DataFrame(points)
    figures = {"correlation_curve": curve_figure(table),
               f"scatter_layer_{layer}": scatter_figure(inputs, layer)}
    peak = scatter_layer(alignment)
    summary = [f"alignment, averaged over languages, peaks at layer {peak}"]
    for name, part in table[(table.aggregation == "layer") & (table.method == "pearson")].groupby(
            "score", sort=False):
        top = part.loc[part.r.idxmax()] if part.r.notna().any() else None
        if top is not None:
            summary.append(f"{name}: Pearson r peaks at layer {int(top.layer)} ({top.r:+.2f} "
                           f"[{top.ci_low:+.2f}, {top.ci_high:+.2f}])")
    summary += [f"{row.score}: {row.method} r = {row.r:+.2f} [{row.ci_low:+.2f}, "
               f"{row.ci_high:+.2f}], p = {row.p:.3g}, layers' {row.aggregation} (n = {row.n})"
               for row in table[table.aggregation != "layer"].itertuples()]
    manifest = {"kind": KIND, "command": list(command), "alignment": alignment.info,
                "scores": [{"name": s.name, "from": s.where} for s in scores],
                "config": {**config.__dict__, "covariates": list(config.covariates)},
                "scatter_layer": layer, "alignment_peak_layer": peak, "summary": summary,
                "notes": notes, "versions": versions()}
    from .report import write_html

    with run_writer(output, KIND, overwrite):
        start_run_directory(output)
        atomic_write(output / TABLE, lambda tmp: table.to_csv(tmp, index=False))
        atomic_write(output / INPUTS, lambda tmp: inputs.to_csv(tmp, index=False))
        write_html(figures, output / REPORT, f"alignment vs downstream: {alignment.name}",
                   [*notes, *summary])
        atomic_write_text(output / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return output, table


def parse_covariates(value: str | Sequence[str]) -> tuple[str, ...]:
    """``--covariates``: ``"none"`` (or nothing), a comma-separated list, or a sequence."""
    if isinstance(value, str):
        return () if value in ("", "none") else tuple(value.split(","))
    return tuple(value)


def correlate_files(alignment: Path, scores: Sequence[Path], output: Path,
                    config: CorrelationConfig = CorrelationConfig(), metric: str = "p@1",
                    normalisation: str = "centered", score_column: str = "score",
                    transfer_variant: str = "centered", transfer_metric: str = "accuracy",
                    transfer_layer: int | None = None, layer: int | None = None,
                    command: Sequence[str] = (), overwrite: bool = False
                    ) -> tuple[Alignment, Path, pd.DataFrame]:
    """``correlate`` from its inputs on disk (the command's and ``la.correlate``'s one path):
    the score tables and the alignment read, then ``execute_correlate``."""
    tables = [table for path in scores for table in read_scores(
        Path(path), score_column, transfer_variant, transfer_metric, transfer_layer)]
    aligned = read_alignment(Path(alignment), metric, normalisation)
    if aligned.tokenization is None and config.covariates:
        raise DataError(f"{alignment} has no tokenization.csv for the partial correlations; "
                        "pass --covariates none")
    output, table = execute_correlate(aligned, tables, Path(output), config, layer, command,
                                      overwrite)
    return aligned, output, table


def read_correlation(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The table, plotted points and manifest of a finished ``correlate`` output."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest.get("kind") != "correlation":
            raise DataError(f"{directory} is not a correlate output")
        return (pd.read_csv(directory / TABLE), pd.read_csv(directory / INPUTS), manifest)
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{directory} is not a readable correlate output ({exc})") from None
