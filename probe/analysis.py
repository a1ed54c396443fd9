"""Per-layer alignment analysis of stored activations into one tidy table.

Columns: model, layer, source, target, pooling, normalisation, metric, value, ci_low, ci_high,
null, null_high. ``ci_*`` is a percentile bootstrap over sentences; ``null`` is the chance level
under random pairing (exact for retrieval metrics, whose rank is then uniform on 1..n; sampled
permutations for cosine metrics, with ``null_high`` their 95th percentile).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from .errors import DataError
from .metrics import (
    NORMALISATIONS,
    bootstrap_ci,
    center,
    cosine_null,
    cosine_per_query,
    equivalence,
    knn_overlap,
    linear_cka,
    neighbours,
    retrieval_null,
    retrieval_per_query,
    score_matrices,
    unit_vectors,
)
from .store import Activations

COLUMNS = ["model", "layer", "source", "target", "pooling", "normalisation", "metric", "value",
           "ci_low", "ci_high", "null", "null_high"]


@dataclass(frozen=True)
class AnalysisConfig:
    """What to compute. ``pivot=None`` analyses all aligned pairs; otherwise pivot <-> each side."""

    pivot: str | None = "eng_Latn"
    pooling: str | None = None
    normalisations: tuple[str, ...] = NORMALISATIONS
    bootstrap: int = 1000
    null_permutations: int = 200
    knn_k: int = 10
    seed: int = 0
    sides: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.normalisations if n not in NORMALISATIONS]
        if unknown or not self.normalisations:
            raise DataError(f"unknown normalisation {unknown or '(none)'}; choose from "
                            f"{', '.join(NORMALISATIONS)}")


@dataclass
class Analysis:
    """The tidy metric table plus the matrices that do not fit it."""

    table: pd.DataFrame
    cka: pd.DataFrame = field(default_factory=pd.DataFrame)  # layer_a, layer_b, value


def aligned_pairs(acts: Activations, pivot: str | None, sides: tuple[str, ...] | None = None
                  ) -> list[tuple[str, str]]:
    """(source, target) side pairs in the same aligned group: pivot first, or all pairs."""
    info = acts.manifest["sides"]
    keys = [k for k in info if sides is None or k in sides or info[k]["language"] in sides]
    if sides is not None and len(keys) < 2:
        raise DataError(f"the selection {', '.join(sides)} leaves fewer than two languages "
                        f"(this run has {', '.join(info)})")
    pairs = []
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if info[a]["group"] != info[b]["group"]:
                continue
            la, lb = info[a]["language"], info[b]["language"]
            if pivot is None:
                pairs.append((a, b))
            elif pivot in (la, lb):
                pairs.append((a, b) if la == pivot else (b, a))
    if not pairs:
        where = f"aligned with pivot {pivot}" if pivot else "aligned"
        raise DataError(f"no language pair {where} in this run ({', '.join(keys)})")
    return pairs


def _rows(values: dict[str, torch.Tensor], meta: dict, layers: list[int], config: AnalysisConfig,
          nulls: dict[str, tuple]) -> list[dict]:
    rows = []
    for metric, per_query in values.items():
        low, high = bootstrap_ci(per_query, config.bootstrap, seed=config.seed)
        mean = per_query.mean(-1)
        null_mean, null_high = nulls[metric]
        for i, layer in enumerate(layers):
            rows.append({**meta, "layer": layer, "metric": metric, "value": float(mean[i]),
                         "ci_low": float(low[i]), "ci_high": float(high[i]),
                         "null": float(null_mean[i] if torch.is_tensor(null_mean) else null_mean),
                         "null_high": float(null_high[i] if torch.is_tensor(null_high)
                                            else null_high)})
    return rows


def analyse(acts: Activations, model: str, config: AnalysisConfig = AnalysisConfig()) -> Analysis:
    """Every metric, layer, pair, direction and normalisation of one run."""
    pooling = config.pooling or acts.poolings[0]
    if pooling not in acts.poolings:
        raise DataError(f"pooling {pooling!r} not in this run ({', '.join(acts.poolings)})")
    pairs = aligned_pairs(acts, config.pivot, config.sides)
    vectors = {k: acts.get(k, pooling) for k in {s for pair in pairs for s in pair}}
    knn = {k: neighbours(center(v), config.knn_k) for k, v in vectors.items()}
    units = {k: unit_vectors(v) for k, v in vectors.items()}
    rows: list[dict] = []
    for source, target in pairs:
        n = vectors[source].shape[1]
        same_target = equivalence(acts.texts[target]) if acts.texts else None
        same_source = equivalence(acts.texts[source]) if acts.texts else None
        chance = {m: (v, v) for m, v in retrieval_null(n).items()}
        matrices = score_matrices(units[source], units[target], config.normalisations)
        for normalisation, scores in matrices.items():
            for a, b, matrix, correct in ((source, target, scores, same_target),
                                          (target, source, scores.transpose(-1, -2), same_source)):
                meta = {"model": model, "source": a, "target": b, "pooling": pooling,
                        "normalisation": normalisation}
                rows += _rows(retrieval_per_query(matrix, correct), meta, acts.layers, config,
                              chance)
            if normalisation in ("raw", "centered"):
                meta = {"model": model, "source": source, "target": target, "pooling": pooling,
                        "normalisation": normalisation}
                nulls = cosine_null(scores, same_target, config.null_permutations, config.seed)
                rows += _rows(cosine_per_query(scores, same_target), meta, acts.layers, config,
                              nulls)
        overlap = knn_overlap(knn[source], knn[target])
        k = knn[source].shape[-1]
        for i, layer in enumerate(acts.layers):
            rows.append({"model": model, "layer": layer, "source": source, "target": target,
                         "pooling": pooling, "normalisation": "centered",
                         "metric": f"mutual_knn@{k}", "value": float(overlap[i]),
                         "ci_low": float("nan"), "ci_high": float("nan"),
                         "null": k / (n - 1), "null_high": float("nan")})
    table = pd.DataFrame(rows, columns=COLUMNS)
    anchor = pairs[0][0]
    cka = linear_cka(vectors[anchor], vectors[anchor])
    cka_table = pd.DataFrame([{"model": model, "side": anchor, "layer_a": la, "layer_b": lb,
                               "value": float(cka[i, j])}
                              for i, la in enumerate(acts.layers)
                              for j, lb in enumerate(acts.layers)])
    return Analysis(table, cka_table)


def peak_layers(table: pd.DataFrame, metric: str = "p@1", normalisation: str = "centered"
                ) -> pd.DataFrame:
    """For each (model, source, target), the layer where ``metric`` peaks and its value."""
    rows = table[(table.metric == metric) & (table.normalisation == normalisation)]
    if rows.empty:
        raise DataError(f"no {metric} ({normalisation}) values in this table")
    best = rows.loc[rows.groupby(["model", "source", "target"]).value.idxmax()]
    return best[["model", "source", "target", "layer", "value", "ci_low", "ci_high"]]
