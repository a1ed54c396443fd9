"""Bitext mining and retrieval at scale: n source × m target sentences (10^5 and more per side)
in bounded memory, on whatever device the vectors are on.

Scores are never held whole: queries go in row blocks of at most ``block_bytes`` of scores;
each pass keeps only running top-k per row and per column. Two passes: the first collects each
sentence's k nearest neighbours on the other side, the second scores every (source, target)
pair by the **ratio margin** of Artetxe & Schwenk (2019, LASER),

    margin(x, y) = cos(x, y) / ((Σ_{z ∈ NN_k(x)} cos(x, z) + Σ_{z ∈ NN_k(y)} cos(y, z)) / 2k),

and keeps every row's and column's best candidate.

- **xSIM** (LASER's multilingual similarity search error): the share of source sentences whose
  best target by margin (or plain cosine) is not their translation.
- **Mining F1** (BUCC 2017/2018): candidates are each source's best target and each target's
  best source (LASER's ``max`` strategy; a pair found both ways counted once), ranked by
  margin; precision, recall and F1 against the gold pairs at every threshold, reported at the
  best one (the BUCC evaluation's oracle threshold) with the threshold itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import DataError

MARGIN_K = 4
BLOCK_BYTES = 256 * 2**20


def _row_blocks(rows: int, cols: int, block_bytes: int) -> list[slice]:
    size = max(1, block_bytes // (cols * 4 * 3))  # scores and two temporaries alive
    return [slice(a, min(a + size, rows)) for a in range(0, rows, size)]


def _unit(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 2:
        raise DataError(f"mining takes (sentences, hidden) vectors, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DataError("mining got non-finite vectors")
    return F.normalize(x.float(), dim=-1)


@dataclass
class Mined:
    """Best candidates both ways: ``forward[i]`` the best target of source i and its margin,
    ``backward[j]`` the best source of target j; ``r_src``/``r_tgt`` the k-NN mean cosines."""

    forward: torch.Tensor
    forward_score: torch.Tensor
    backward: torch.Tensor
    backward_score: torch.Tensor
    r_src: torch.Tensor
    r_tgt: torch.Tensor


def neighbourhoods(src: torch.Tensor, tgt: torch.Tensor, k: int = MARGIN_K,
                   block_bytes: int = BLOCK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass one: mean cosine of every source to its k nearest targets, and of every target to
    its k nearest sources (unit vectors in, row blocks of bounded size)."""
    k_rows, k_cols = min(k, tgt.shape[0]), min(k, src.shape[0])
    r_src = torch.empty(src.shape[0], device=src.device)
    top_cols = None
    for rows in _row_blocks(src.shape[0], tgt.shape[0], block_bytes):
        scores = src[rows] @ tgt.T
        r_src[rows] = scores.topk(k_rows, dim=1).values.mean(1)
        top = scores.topk(min(k_cols, scores.shape[0]), dim=0).values
        top_cols = top if top_cols is None else torch.cat([top_cols, top]).topk(
            min(k_cols, top_cols.shape[0] + top.shape[0]), dim=0).values
    return r_src, top_cols.mean(0)


def mine(source: torch.Tensor, target: torch.Tensor, k: int = MARGIN_K, margin: bool = True,
         block_bytes: int = BLOCK_BYTES) -> Mined:
    """Every source's best target and every target's best source by ratio margin (``margin``)
    or plain cosine. Ties go to the lower index."""
    src, tgt = _unit(source), _unit(target)
    if src.shape[1] != tgt.shape[1]:
        raise DataError(f"source and target widths differ: {src.shape[1]} vs {tgt.shape[1]}")
    if margin:
        r_src, r_tgt = neighbourhoods(src, tgt, k, block_bytes)
    else:
        r_src = torch.ones(src.shape[0], device=src.device)
        r_tgt = torch.ones(tgt.shape[0], device=tgt.device)
    n, m = src.shape[0], tgt.shape[0]
    forward = torch.empty(n, dtype=torch.long, device=src.device)
    forward_score = torch.empty(n, device=src.device)
    backward = torch.zeros(m, dtype=torch.long, device=src.device)
    backward_score = torch.full((m,), -torch.inf, device=src.device)
    for rows in _row_blocks(n, m, block_bytes):
        scores = src[rows] @ tgt.T
        scores.div_((r_src[rows, None] + r_tgt[None, :]) / 2)
        forward_score[rows], forward[rows] = scores.max(dim=1)
        best, where = scores.max(dim=0)
        better = best > backward_score  # strict: an earlier row keeps a tie
        backward_score = torch.where(better, best, backward_score)
        backward = torch.where(better, where + rows.start, backward)
    return Mined(forward, forward_score, backward, backward_score, r_src, r_tgt)


def xsim_error(source: torch.Tensor, target: torch.Tensor, gold: torch.Tensor | None = None,
               margin: bool = True, k: int = MARGIN_K, block_bytes: int = BLOCK_BYTES) -> float:
    """Share of sources whose best target (by margin, or cosine) is not ``gold[i]`` (default:
    target i, for line-aligned sides)."""
    mined = mine(source, target, k, margin, block_bytes)
    gold = torch.arange(source.shape[0]) if gold is None else gold
    return float((mined.forward.cpu() != gold.cpu()).float().mean())


def candidates(mined: Mined) -> list[tuple[tuple[int, int], float]]:
    """LASER's ``max`` candidates: every source's best target and every target's best source,
    a pair found both ways once (with its margin), best first."""
    best: dict[tuple[int, int], float] = {}
    for i, (j, score) in enumerate(zip(mined.forward.tolist(), mined.forward_score.tolist(),
                                       strict=True)):
        best[(i, j)] = max(score, best.get((i, j), -float("inf")))
    for j, (i, score) in enumerate(zip(mined.backward.tolist(), mined.backward_score.tolist(),
                                       strict=True)):
        best[(i, j)] = max(score, best.get((i, j), -float("inf")))
    return sorted(best.items(), key=lambda item: -item[1])


@dataclass(frozen=True)
class MiningScore:
    f1: float
    precision: float
    recall: float
    threshold: float  # keep candidates with margin >= this
    candidates: int


def mining_f1(mined: Mined, gold: set[tuple[int, int]]) -> MiningScore:
    """BUCC-style F1 of the ``max`` candidates against ``gold`` (source, target) pairs, at the
    margin threshold that maximises it."""
    if not gold:
        raise DataError("mining F1 needs at least one gold pair")
    ranked = candidates(mined)
    hits = torch.tensor([pair in gold for pair, _ in ranked], dtype=torch.float64).cumsum(0)
    kept = torch.arange(1, len(ranked) + 1, dtype=torch.float64)
    precision, recall = hits / kept, hits / len(gold)
    f1 = torch.where(hits > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(hits))
    at = int(f1.argmax())
    return MiningScore(float(f1[at]), float(precision[at]), float(recall[at]), ranked[at][1],
                       len(ranked))
