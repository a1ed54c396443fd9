"""Cross-lingual alignment metrics on pooled vectors, vectorised over layers.

Inputs are (layers, sentences, hidden) tensors of two line-aligned sides: sentence i of the
source translates sentence i of the target.

Retrieval rule. For query i the rank of its translation is 1 + the number of *other* candidates
scoring at least as high (>=): a tie counts against the query, so a collapsed space where every
candidate scores the same gets rank n, not a lucky 1. Candidates whose text equals the true
target's text (duplicate sentences) are correct answers too and never count as competitors.
P@1 = share of rank 1, R@k = share of rank <= k, MRR = mean of 1/rank.

Normalisations (the score matrix behind retrieval):
- ``raw``: cosine of the pooled vectors.
- ``centered``: cosine after subtracting each side's mean vector per layer (removes the shared
  anisotropic direction that makes raw middle-layer cosines ~0.99 for every pair).
- ``csls``: 2·cos(x, y) − r_T(x) − r_S(y), r = mean cosine to the k = 10 nearest neighbours on the
  other side (Conneau et al. 2018), on raw cosines.
- ``margin``: ratio margin cos(x, y) / ((r_T(x) + r_S(y)) / 2) with k = 4 (Artetxe & Schwenk
  2019), on raw cosines.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

NORMALISATIONS = ("raw", "centered", "csls", "margin")
RETRIEVAL_METRICS = ("p@1", "r@5", "r@10", "mrr")
COSINE_METRICS = ("cosine", "cosine_adjusted")
CSLS_K = 10
MARGIN_K = 4


def center(x: torch.Tensor) -> torch.Tensor:
    """Subtract the per-layer mean over sentences: x is (layers, sentences, hidden)."""
    return x - x.mean(dim=-2, keepdim=True)


def cosine_matrix(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """(layers, n_src, n_tgt) cosine similarities in float32."""
    return F.normalize(src.float(), dim=-1) @ F.normalize(tgt.float(), dim=-1).transpose(-1, -2)


def _neighbourhood(cos: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine of each source row / target column to its k nearest on the other side."""
    k_rows, k_cols = min(k, cos.shape[-1]), min(k, cos.shape[-2])
    r_src = cos.topk(k_rows, dim=-1).values.mean(-1)  # (L, n_src)
    r_tgt = cos.topk(k_cols, dim=-2).values.mean(-2)  # (L, n_tgt)
    return r_src, r_tgt


def unit_vectors(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unit-length raw and per-layer mean-centered vectors of one side, computed once per side."""
    return {"raw": F.normalize(x.float(), dim=-1), "centered": F.normalize(center(x.float()), dim=-1)}


def score_matrices(src: torch.Tensor | dict[str, torch.Tensor],
                   tgt: torch.Tensor | dict[str, torch.Tensor], normalisations: Sequence[str]
                   ) -> dict[str, torch.Tensor]:
    """(layers, n_src, n_tgt) retrieval scores for each of ``normalisations``; CSLS and margin
    reuse the raw cosines, so at most two matrix products are needed. ``src``/``tgt`` are
    vectors or their ``unit_vectors``."""
    unknown = set(normalisations) - set(NORMALISATIONS)
    if unknown:
        raise ValueError(f"unknown normalisation {unknown}; choose from {NORMALISATIONS}")
    u_src = src if isinstance(src, dict) else unit_vectors(src)
    u_tgt = tgt if isinstance(tgt, dict) else unit_vectors(tgt)
    out = {}
    if "centered" in normalisations:
        out["centered"] = u_src["centered"] @ u_tgt["centered"].transpose(-1, -2)
    if {"raw", "csls", "margin"} & set(normalisations):
        cos = u_src["raw"] @ u_tgt["raw"].transpose(-1, -2)
        if "csls" in normalisations:
            r_src, r_tgt = _neighbourhood(cos, CSLS_K)
            out["csls"] = 2 * cos - r_src[..., :, None] - r_tgt[..., None, :]
        if "margin" in normalisations:
            r_src, r_tgt = _neighbourhood(cos, MARGIN_K)
            out["margin"] = cos / ((r_src[..., :, None] + r_tgt[..., None, :]) / 2)
        if "raw" in normalisations:
            out["raw"] = cos
    return {name: out[name] for name in normalisations}


def score_matrix(src: torch.Tensor, tgt: torch.Tensor, normalisation: str) -> torch.Tensor:
    """(layers, n_src, n_tgt) retrieval scores under one of ``NORMALISATIONS``."""
    return score_matrices(src, tgt, [normalisation])[normalisation]


def equivalence(texts: Sequence[str]) -> torch.Tensor:
    """(n, n) bool: candidate j is a correct answer for query i (same target text as i)."""
    ids: dict[str, int] = {}
    codes = torch.tensor([ids.setdefault(t, len(ids)) for t in texts])
    return codes[:, None] == codes[None, :]


def ranks(scores: torch.Tensor, correct: torch.Tensor | None = None) -> torch.Tensor:
    """(layers, n) rank of each query's translation; ties count against it (see module doc)."""
    true = scores.diagonal(dim1=-2, dim2=-1)[..., None]  # (L, n, 1)
    at_least = scores >= true
    # Counts the query's own translation once; summing bytes is ~2x faster than summing bools.
    rank = at_least.view(torch.uint8).sum(-1, dtype=torch.int32)
    if has_duplicates(correct):  # duplicates of the translation are answers, not competitors
        rank = rank + 1 - (at_least & correct).view(torch.uint8).sum(-1, dtype=torch.int32)
    return rank


def has_duplicates(correct: torch.Tensor | None) -> bool:
    """Whether an equivalence mask marks anything beyond the diagonal."""
    return correct is not None and int(correct.sum()) > correct.shape[-1]


def retrieval_per_query(scores: torch.Tensor, correct: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
    """Per-query P@1, R@5, R@10 and reciprocal rank, each (layers, n) float."""
    rank = ranks(scores, correct).float()
    return {"p@1": (rank <= 1).float(), "r@5": (rank <= 5).float(),
            "r@10": (rank <= 10).float(), "mrr": 1.0 / rank}


def cosine_per_query(cos: torch.Tensor, correct: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
    """Per-pair cosine and baseline-adjusted cosine (minus the mean cosine to non-translations)."""
    n = cos.shape[-1]
    true = cos.diagonal(dim1=-2, dim2=-1)
    if has_duplicates(correct):
        others = (~correct).sum(-1).clamp_min(1)
        baseline = cos.masked_fill(correct, 0.0).sum(-1) / others
    else:
        baseline = (cos.sum(-1) - true) / max(n - 1, 1)
    return {"cosine": true, "cosine_adjusted": true - baseline}


def precision_at_1(src: torch.Tensor, tgt: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """Per-layer P@1 of retrieving target i for source i (layers,)."""
    scores = score_matrix(src, tgt, "centered" if centered else "raw")
    return retrieval_per_query(scores)["p@1"].mean(-1)


# ------------------------------------------------------------------------------ uncertainty


def bootstrap_ci(values: torch.Tensor, samples: int = 1000, level: float = 0.95, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap CI of the mean over the last axis (sentences), per leading index."""
    n = values.shape[-1]
    flat = values.reshape(-1, n).float()
    # Mean of each resample as a matrix product with its resample counts (samples x n).
    means = flat @ _resample_counts(n, samples, seed).T / n  # (rows, samples)
    alpha = (1 - level) / 2
    low = means.quantile(alpha, dim=-1).reshape(values.shape[:-1])
    high = means.quantile(1 - alpha, dim=-1).reshape(values.shape[:-1])
    return low, high


@functools.lru_cache(maxsize=8)
def _resample_counts(n: int, samples: int, seed: int) -> torch.Tensor:
    """How often each sentence occurs in each bootstrap resample; the same for every curve of a
    run, so all curves share resamples (and paired differences stay meaningful)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (samples, n), generator=generator)
    return torch.zeros(samples, n).scatter_add_(1, index, torch.ones(samples, n))


def retrieval_null(n: int) -> dict[str, float]:
    """Chance level of each retrieval metric under random pairing (exact: rank uniform on 1..n)."""
    harmonic = sum(1.0 / r for r in range(1, n + 1))
    return {"p@1": 1 / n, "r@5": min(5, n) / n, "r@10": min(10, n) / n, "mrr": harmonic / n}


def cosine_null(cos: torch.Tensor, correct: torch.Tensor | None = None, permutations: int = 200,
                seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Permutation null of the cosine metrics: (mean, 95th percentile) per layer over random
    pairings of queries with targets."""
    n = cos.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(permutations)])
    index = perms.T[None].expand(cos.shape[0], n, permutations)  # (L, n, P)
    paired = torch.gather(cos, 2, index).transpose(1, 2)  # (L, P, n): cos(x_i, y_pi(i))
    per_query = cosine_per_query(cos, correct)
    baseline = per_query["cosine"] - per_query["cosine_adjusted"]  # (L, n)
    samples = {"cosine": paired.mean(-1), "cosine_adjusted": (paired - baseline[:, None]).mean(-1)}
    return {k: (v.mean(-1), v.quantile(0.95, dim=-1)) for k, v in samples.items()}


# ------------------------------------------------------------------------ representational


def _gram(x: torch.Tensor) -> torch.Tensor:
    """Centered linear Gram matrix of (..., n, d) features."""
    x = center(x.float())
    return x @ x.transpose(-1, -2)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA between every layer of x and every layer of y: (layers_x, layers_y).

    x and y are (layers, n, d) over the same n sentences (d may differ, e.g. two models).
    """
    gx, gy = _gram(x), _gram(y)  # (Lx, n, n), (Ly, n, n)
    hsic = (gx.flatten(1).double() @ gy.flatten(1).double().T)
    norm_x = gx.flatten(1).double().norm(dim=-1)
    norm_y = gy.flatten(1).double().norm(dim=-1)
    return (hsic / (norm_x[:, None] * norm_y[None, :])).float()


def neighbours(z: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (layers, n, k) of each sentence's k nearest other sentences (cosine) in z."""
    sim = cosine_matrix(z, z)
    sim.diagonal(dim1=-2, dim2=-1).fill_(float("-inf"))
    return sim.topk(min(k, z.shape[-2] - 1), dim=-1).indices


def knn_overlap(nx: torch.Tensor, ny: torch.Tensor) -> torch.Tensor:
    """Per layer, mean share of neighbours two kNN index sets (layers, n, k) have in common."""
    k = nx.shape[-1]
    return ((nx[..., :, None] == ny[..., None, :]).any(-1).float().sum(-1) / k).mean(-1)


def mutual_knn(x: torch.Tensor, y: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Per layer, mean overlap of sentence i's k nearest neighbours among x and among y.

    x and y are (layers, n, d): the same sentences in two languages (or two models).
    """
    return knn_overlap(neighbours(x, k), neighbours(y, k))
