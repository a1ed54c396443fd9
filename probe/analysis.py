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
from .languages import ENGLISH
from .metrics import (
    COSINE_NORMALISATIONS,
    NORMALISATIONS,
    PairScorer,
    answer_counts,
    bootstrap_ci,
    equivalence,
    knn_overlap,
    linear_cka,
    mexa,
    mexa_null,
    neighbours,
    pair_statistics,
    prepare,
    ranks,
    retrieval,
    retrieval_null,
)
from .store import Activations

COLUMNS = ["model", "layer", "source", "target", "pooling", "normalisation", "metric", "value",
           "ci_low", "ci_high", "null", "null_high"]


@dataclass(frozen=True)
class AnalysisConfig:
    """What to compute. ``pivot=None`` analyses all aligned pairs; otherwise pivot <-> each side."""

    pivot: str | None = "eng_Latn"
    poolings: tuple[str, ...] | None = None  # None: every pooling the run extracted
    normalisations: tuple[str, ...] = NORMALISATIONS
    bootstrap: int = 1000
    null_permutations: int = 200
    knn_k: int = 10
    seed: int = 0
    sides: tuple[str, ...] | None = None
    device: str = "cpu"

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


@dataclass
class _Curves:
    """Per-query curves of one pair, bootstrapped together in one matrix product."""

    meta: list[dict] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)  # (layers, n) each
    nulls: list[tuple] = field(default_factory=list)  # (mean, high): floats or (layers,)

    def add(self, meta: dict, values: torch.Tensor, null: tuple) -> None:
        self.meta.append(meta)
        self.values.append(values)
        self.nulls.append(null)

    def table(self, layers: list[int], config: AnalysisConfig) -> dict[str, list]:
        stacked = torch.stack(self.values)  # (curves, layers, n)
        low, high = bootstrap_ci(stacked, config.bootstrap, seed=config.seed)
        mean = stacked.mean(-1)
        columns: dict[str, list] = {c: [] for c in COLUMNS}
        for i, (meta, (null, null_high)) in enumerate(zip(self.meta, self.nulls, strict=True)):
            for name in ("model", "source", "target", "pooling", "normalisation", "metric"):
                columns[name] += [meta[name]] * len(layers)
            columns["layer"] += layers
            columns["value"] += mean[i].tolist()
            columns["ci_low"] += low[i].tolist()
            columns["ci_high"] += high[i].tolist()
            columns["null"] += _per_layer(null, len(layers))
            columns["null_high"] += _per_layer(null_high, len(layers))
        return columns


def _per_layer(value: float | torch.Tensor, layers: int) -> list[float]:
    return value.tolist() if torch.is_tensor(value) else [float(value)] * layers


def analysed_poolings(acts: Activations, poolings: tuple[str, ...] | None) -> list[str]:
    """The poolings to analyse: ``poolings`` (each must be in the run), or all the run has."""
    if poolings is None:
        return list(acts.poolings)
    missing = [p for p in poolings if p not in acts.poolings]
    if missing or not poolings:
        raise DataError(f"pooling {', '.join(missing) or '(none)'} not in this run "
                        f"({', '.join(acts.poolings)})")
    return list(dict.fromkeys(poolings))


def analyse(acts: Activations, model: str, config: AnalysisConfig = AnalysisConfig()) -> Analysis:
    """Every metric, layer, pair, direction, normalisation and pooling of one run."""
    parts = [_analyse_pooling(acts, model, config, pooling)
             for pooling in analysed_poolings(acts, config.poolings)]
    return Analysis(pd.concat([p.table for p in parts], ignore_index=True),
                    pd.concat([p.cka for p in parts], ignore_index=True))


def _analyse_pooling(acts: Activations, model: str, config: AnalysisConfig, pooling: str
                     ) -> Analysis:
    pairs = aligned_pairs(acts, config.pivot, config.sides)
    used = sorted({s for pair in pairs for s in pair})
    vectors = {k: acts.get(k, pooling) for k in used}
    sides = {k: prepare(vectors[k].to(config.device), acts.texts.get(k) if acts.texts else None)
             for k in used}
    knn = {k: neighbours(side, config.knn_k) for k, side in sides.items()}
    columns: dict[str, list] = {c: [] for c in COLUMNS}
    for source, target in pairs:
        n = sides[source].n
        stats = pair_statistics(sides[source], sides[target], config.normalisations,
                                config.null_permutations, config.seed)
        chance = {"forward": retrieval_null(n, answer_counts(sides[target].codes, n)),
                  "backward": retrieval_null(n, answer_counts(sides[source].codes, n))}
        curves = _Curves()
        base = {"model": model, "pooling": pooling}
        for (normalisation, direction), rank in stats.ranks.items():
            a, b = (source, target) if direction == "forward" else (target, source)
            for metric, values in retrieval(rank).items():
                null = chance[direction][metric]
                curves.add({**base, "source": a, "target": b, "normalisation": normalisation,
                            "metric": metric}, values, (null, null))
        for normalisation in config.normalisations:
            curves.add({**base, "source": source, "target": target, "normalisation": normalisation,
                        "metric": "mexa"},
                       mexa(stats.ranks[(normalisation, "forward")],
                            stats.ranks[(normalisation, "backward")]),
                       (mexa_null(n), mexa_null(n)))
        for normalisation in [n for n in config.normalisations if n in COSINE_NORMALISATIONS]:
            meta = {**base, "source": source, "target": target, "normalisation": normalisation}
            cosine, baseline = stats.cosine[normalisation], stats.baseline[normalisation]
            null = stats.null.get(normalisation)
            for metric, values, shift in (("cosine", cosine, 0.0),
                                          ("cosine_adjusted", cosine - baseline, baseline)):
                if null is None:
                    bounds = (float("nan"), float("nan"))
                else:
                    shifted = null - (shift.mean(-1, keepdim=True) if torch.is_tensor(shift)
                                      else shift)
                    bounds = (shifted.mean(-1), shifted.quantile(0.95, dim=-1))
                curves.add({**meta, "metric": metric}, values, bounds)
        for name, values in curves.table(acts.layers, config).items():
            columns[name] += values
        overlap = knn_overlap(knn[source], knn[target])
        k = knn[source].shape[-1]
        layers = len(acts.layers)
        for name, values in {"model": [model] * layers, "layer": acts.layers,
                             "source": [source] * layers, "target": [target] * layers,
                             "pooling": [pooling] * layers, "normalisation": ["centered"] * layers,
                             "metric": [f"mutual_knn@{k}"] * layers, "value": overlap.tolist(),
                             "ci_low": [float("nan")] * layers, "ci_high": [float("nan")] * layers,
                             "null": [k / (n - 1)] * layers,
                             "null_high": [float("nan")] * layers}.items():
            columns[name] += values
    table = pd.DataFrame(columns, columns=COLUMNS)
    anchor = pairs[0][0]
    cka = linear_cka(vectors[anchor], vectors[anchor])
    cka_table = pd.DataFrame([{"model": model, "side": anchor, "pooling": pooling, "layer_a": la,
                               "layer_b": lb, "value": float(cka[i, j])}
                              for i, la in enumerate(acts.layers)
                              for j, lb in enumerate(acts.layers)])
    return Analysis(table, cka_table)


def peak_layers(table: pd.DataFrame, metric: str = "p@1", normalisation: str = "centered"
                ) -> pd.DataFrame:
    """For each (model, pooling, source, target), the layer where ``metric`` peaks and its
    value."""
    rows = table[(table.metric == metric) & (table.normalisation == normalisation)]
    if rows.empty:
        raise DataError(f"no {metric} ({normalisation}) values in this table")
    keys = ["model", "pooling", "source", "target"] if "pooling" in rows else \
        ["model", "source", "target"]
    best = rows.loc[rows.groupby(keys, sort=False).value.idxmax()]
    return best[[*keys, "layer", "value", "ci_low", "ci_high"]]


def peak_layer(table: pd.DataFrame, metric: str = "p@1", normalisation: str = "centered"
               ) -> int:
    """The run's layer: where ``metric`` averaged over every pair (of the table's first pooling)
    peaks, ties to the earliest. Not the most common per-pair peak: with few sentences per
    language P@1 ties at 1.0 over many layers and a lexical high at layer 0 wins the count (a
    205-language run at 20 sentences gave layer 0 so, its mean peaking at 13)."""
    rows = table[(table.metric == metric) & (table.normalisation == normalisation)]
    if "pooling" in rows and len(rows):
        rows = rows[rows.pooling == rows.pooling.iloc[0]]
    if rows.empty:
        raise DataError(f"no {metric} ({normalisation}) values in this table")
    return int(rows.groupby("layer").value.mean().idxmax())


def paired_with_english(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with English on one side, and a ``language`` column: the other side's code
    (side keys may carry ``@variant``)."""
    source, target = rows.source.str.split("@").str[0], rows.target.str.split("@").str[0]
    english = (source == ENGLISH) | (target == ENGLISH)
    return rows[english].assign(language=source.where(source != ENGLISH, target)[english])


def english_peaks(rows: pd.DataFrame) -> pd.DataFrame:
    """Per language paired with English: the layer where ``value`` averaged over both directions
    (English -> L, L -> English) peaks, and that mean (columns ``language, layer, value``).
    ``rows`` hold one metric of one model; side keys may carry ``@variant``."""
    rows = paired_with_english(rows)
    if rows.empty:
        raise DataError("no values between English and another language")
    mean = rows.groupby(["language", "layer"]).value.mean().reset_index()
    return mean.loc[mean.groupby("language").value.idxmax()].reset_index(drop=True)


def mexa_summary(table: pd.DataFrame) -> pd.DataFrame:
    """MEXA's layer aggregation: per model, pair, pooling and normalisation, the mean and the max
    of the ``mexa`` score over layers (and the layer of the max). With ``--pooling weighted`` and
    the ``raw`` normalisation this is MEXA's own setting (it also pools BOS and sinks, which we
    leave out; see docs/concepts.md)."""
    rows = table[table.metric == "mexa"]
    keys = ["model", "source", "target", "pooling", "normalisation"]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "mexa_mean", "mexa_max", "max_layer"])
    grouped = rows.groupby(keys, sort=False)
    out = grouped.value.agg(mexa_mean="mean", mexa_max="max").reset_index()
    out["max_layer"] = rows.loc[grouped.value.idxmax(), "layer"].to_numpy()
    return out


def retrieval_failures(acts: Activations, layer: int, source: str, target: str,
                       normalisation: str = "centered", pooling: str | None = None
                       ) -> pd.DataFrame:
    """Queries of ``source`` whose translation in ``target`` is not retrieved first at ``layer``:
    the query, its translation, the best-scoring wrong candidate, the two scores, their gap and
    the translation's rank (worst gap first)."""
    if layer not in acts.layers:
        raise DataError(f"layer {layer} was not extracted in this run (layers {acts.layers})")
    for side in (source, target):
        if side not in acts.vectors:
            raise DataError(f"{side} is not in this run ({', '.join(acts.vectors)})")
    index = acts.layers.index(layer)
    texts = acts.texts or {}
    src_texts, tgt_texts = texts.get(source), texts.get(target)
    one_layer = [prepare(acts.get(side, pooling)[index:index + 1], texts.get(side))
                 for side in (source, target)]
    scores = PairScorer(*one_layer, [normalisation]).matrices(0)[normalisation]
    correct = (equivalence(tgt_texts) if tgt_texts else torch.eye(len(scores), dtype=torch.bool))
    rank = ranks(scores[None], correct)[0]
    wrong = scores.masked_fill(correct, float("-inf"))
    retrieved = wrong.argmax(-1)
    failed = torch.nonzero(rank > 1).flatten().tolist()

    def text(side_texts: list[str] | None, i: int) -> str:
        return side_texts[i] if side_texts else f"#{i}"

    rows = [{"query": text(src_texts, i), "translation": text(tgt_texts, i),
             "retrieved": text(tgt_texts, int(retrieved[i])),
             "translation_score": float(scores[i, i]),
             "retrieved_score": float(wrong[i, retrieved[i]]),
             "gap": float(wrong[i, retrieved[i]] - scores[i, i]), "rank": int(rank[i]),
             "index": i, "retrieved_index": int(retrieved[i])} for i in failed]
    frame = pd.DataFrame(rows, columns=["query", "translation", "retrieved", "translation_score",
                                        "retrieved_score", "gap", "rank", "index",
                                        "retrieved_index"])
    return frame.sort_values("gap", ascending=False, ignore_index=True)
