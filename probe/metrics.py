"""Cross-lingual alignment metrics on pooled vectors, blockwise with bounded memory.

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

Cost. One matrix product per layer and block of queries serves all four: the centered cosines
are computed directly and the raw ones recovered from them exactly in closed form,
x·y = (x̃·ỹ) + x̃·μ_y + μ_x·ỹ + μ_x·μ_y. Score matrices are never held whole: queries are processed
in row blocks of at most ``block_bytes`` (two passes when a layer needs several blocks: the first
collects the column neighbourhoods CSLS and margin need), so memory stays bounded for any n.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import DataError

NORMALISATIONS = ("raw", "centered", "csls", "margin")
COSINE_NORMALISATIONS = ("raw", "centered")
RETRIEVAL_METRICS = ("p@1", "r@5", "r@10", "mrr")
COSINE_METRICS = ("cosine", "cosine_adjusted")
DIRECTIONS = ("forward", "backward")  # source -> target queries, target -> source queries
CSLS_K = 10
MARGIN_K = 4
BLOCK_BYTES = 256 * 2**20
_LIVE_BLOCKS = 8  # (rows x n) float tensors alive at once while scoring a block


def center(x: torch.Tensor) -> torch.Tensor:
    """Subtract the per-layer mean over sentences: x is (layers, sentences, hidden)."""
    return x - x.mean(dim=-2, keepdim=True)


@dataclass(frozen=True)
class Prepared:
    """One language's vectors, prepared once for every pair it takes part in."""

    unit: torch.Tensor  # (L, n, d) unit-length centered vectors
    centered_norm: torch.Tensor  # (L, n) |x - mean|
    norm: torch.Tensor  # (L, n) |x|
    mean: torch.Tensor  # (L, d)
    codes: torch.Tensor | None = None  # (n,) equal codes = equal texts (duplicates)

    @property
    def n(self) -> int:
        return self.unit.shape[1]


def prepare(x: torch.Tensor, texts: Sequence[str] | None = None) -> Prepared:
    """(L, n, d) vectors prepared for scoring; ``texts`` mark duplicates (correct answers)."""
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        layer, row = (int(v) for v in torch.nonzero(~torch.isfinite(x).all(-1))[0])
        raise DataError(f"non-finite vector (NaN or inf) at layer index {layer}, sentence {row}: "
                        "refusing to score it (a NaN would compare as neither better nor worse)")
    mean = x.mean(dim=-2)
    centered = x - mean[:, None]
    codes = None
    if texts is not None and len(set(texts)) < len(texts):
        ids: dict[str, int] = {}
        codes = torch.tensor([ids.setdefault(t, len(ids)) for t in texts], device=x.device)
    return Prepared(F.normalize(centered, dim=-1), centered.norm(dim=-1), x.norm(dim=-1), mean, codes)


def _blocks(rows: int, cols: int, block_bytes: int) -> list[slice]:
    size = max(1, block_bytes // (cols * 4 * _LIVE_BLOCKS))
    return [slice(a, min(a + size, rows)) for a in range(0, rows, size)]


@dataclass
class PairStatistics:
    """Per-query results of one pair, each (layers, n).

    ``ranks[(normalisation, direction)]``: rank of the translation (see the module's rule).
    ``cosine``/``baseline`` (raw and centered): the true pair's cosine and the mean cosine of
    the source sentence to the non-translations. ``null``: (layers, permutations) mean paired
    cosine under random pairings.
    """

    ranks: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    cosine: dict[str, torch.Tensor] = field(default_factory=dict)
    baseline: dict[str, torch.Tensor] = field(default_factory=dict)
    null: dict[str, torch.Tensor] = field(default_factory=dict)


class PairScorer:
    """Score matrices of one (source, target) pair, one layer and block of queries at a time."""

    def __init__(self, src: Prepared, tgt: Prepared, normalisations: Sequence[str] = NORMALISATIONS,
                 block_bytes: int = BLOCK_BYTES) -> None:
        unknown = set(normalisations) - set(NORMALISATIONS)
        if unknown:
            raise ValueError(f"unknown normalisation {unknown}; choose from {NORMALISATIONS}")
        self.src, self.tgt = src, tgt
        self.normalisations = tuple(normalisations)
        self.block_bytes = block_bytes
        self.neighbourhood = bool({"csls", "margin"} & set(normalisations))
        self.needs_raw = self.neighbourhood or "raw" in normalisations
        # Terms that turn centered cosines back into raw ones (see the module's docstring).
        self._src_term = src.centered_norm * (src.unit @ tgt.mean[..., None])[..., 0]  # x̃·μ_y
        self._tgt_term = tgt.centered_norm * (tgt.unit @ src.mean[..., None])[..., 0]  # μ_x·ỹ
        self._means = (src.mean * tgt.mean).sum(-1)  # μ_x·μ_y

    # -- scores ----------------------------------------------------------------------------
    def _raw(self, centered: torch.Tensor, layer: int, rows: slice | torch.Tensor | None,
             cols: slice | torch.Tensor | None) -> torch.Tensor:
        """Raw cosines from centered ones; the same elementwise sequence for a block
        (rows and cols broadcast) and for the diagonal (rows = cols = None), so both round alike."""
        s, t = self.src, self.tgt

        def row(v: torch.Tensor) -> torch.Tensor:
            return v[layer] if rows is None else v[layer, rows][:, None]

        def col(v: torch.Tensor) -> torch.Tensor:
            return v[layer] if cols is None else v[layer, cols][None, :]

        dot = centered * row(s.centered_norm)
        dot.mul_(col(t.centered_norm)).add_(row(self._src_term)).add_(col(self._tgt_term))
        return dot.add_(self._means[layer]).div_(row(s.norm)).div_(col(t.norm))

    def _derived(self, centered: torch.Tensor, raw: torch.Tensor | None, r_src: dict, r_tgt: dict
                 ) -> dict[str, torch.Tensor]:
        out = {"raw": raw, "centered": centered}
        if "csls" in self.normalisations:
            out["csls"] = 2 * raw - r_src[CSLS_K] - r_tgt[CSLS_K]
        if "margin" in self.normalisations:
            out["margin"] = raw / ((r_src[MARGIN_K] + r_tgt[MARGIN_K]) / 2)
        return {name: worst_if_nan(out[name]) for name in self.normalisations}

    def _block(self, layer: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        centered = self.src.unit[layer, rows] @ self.tgt.unit[layer].T
        return centered, self._raw(centered, layer, rows, slice(None)) if self.needs_raw else None

    def _neighbourhoods(self, layer: int, blocks: list[slice], cache: dict
                        ) -> tuple[dict, dict, torch.Tensor]:
        """Pass one: the diagonal of the centered scores and, when CSLS/margin need them, the
        mean raw cosine of every source row / target column to its k nearest."""
        n_src, n_tgt = self.src.n, self.tgt.n
        k_rows, k_cols = min(CSLS_K, n_tgt), min(CSLS_K, n_src)
        diag = torch.empty(min(n_src, n_tgt), device=self.src.unit.device)
        top_rows, top_cols = [], None
        for rows in blocks:
            centered, raw = cache.get(rows.start) or self._block(layer, rows)
            if len(blocks) == 1:
                cache[rows.start] = centered, raw
            lo, hi = rows.start, min(rows.stop, diag.shape[0])
            if lo < hi:
                diag[lo:hi] = centered[:hi - lo, lo:hi].diagonal()
            if self.neighbourhood:
                top_rows.append(raw.topk(k_rows, dim=-1).values)
                top = raw.topk(min(k_cols, raw.shape[0]), dim=0).values
                top_cols = top if top_cols is None else torch.cat([top_cols, top]).topk(
                    min(k_cols, top_cols.shape[0] + top.shape[0]), dim=0).values
        r_src, r_tgt = {}, {}
        if self.neighbourhood:
            rows_top = torch.cat(top_rows)
            for k in (CSLS_K, MARGIN_K):
                r_src[k] = rows_top[:, :min(k, n_tgt)].mean(-1)
                r_tgt[k] = top_cols[:min(k, n_src)].mean(0)
        return r_src, r_tgt, diag

    def _scores(self, layer: int, rows: slice, cache: dict, r_src: dict, r_tgt: dict
                ) -> dict[str, torch.Tensor]:
        centered, raw = cache.pop(rows.start, None) or self._block(layer, rows)
        return self._derived(centered, raw, {k: v[rows, None] for k, v in r_src.items()},
                             {k: v[None, :] for k, v in r_tgt.items()})

    def matrices(self, layer: int) -> dict[str, torch.Tensor]:
        """Whole (n_src, n_tgt) score matrices of one layer: for small inputs and inspection."""
        everything = [slice(0, self.src.n)]
        cache: dict = {}
        r_src, r_tgt, _ = self._neighbourhoods(layer, everything, cache)
        return self._scores(layer, everything[0], cache, r_src, r_tgt)

    def statistics(self, permutations: torch.Tensor | None = None) -> PairStatistics:
        """Ranks in both directions, cosines, baselines and (for ``permutations``, a (P, n)
        tensor of random pairings) the permutation null, for every layer."""
        n = self.src.n
        if self.tgt.n != n:
            raise ValueError(f"sides are not aligned: {n} vs {self.tgt.n} sentences")
        device = self.src.unit.device
        blocks = _blocks(n, n, self.block_bytes)
        src_codes, tgt_codes = self.src.codes, self.tgt.codes
        if permutations is not None:
            permutations = permutations.to(device)
        per_layer: dict[tuple, list[torch.Tensor]] = {}
        for layer in range(self.src.unit.shape[0]):
            cache: dict = {}
            r_src, r_tgt, diag = self._neighbourhoods(layer, blocks, cache)
            raw = self._raw(diag, layer, None, None) if self.needs_raw else None
            true = self._derived(diag, raw, r_src, r_tgt)
            forward = {name: torch.empty(n, dtype=torch.int32, device=device) for name in true}
            backward = {name: torch.zeros(n, dtype=torch.int32, device=device) for name in true}
            sums = {name: torch.empty(n, device=device) for name in COSINE_NORMALISATIONS}
            nulls = {name: 0.0 for name in COSINE_NORMALISATIONS}
            for rows in blocks:
                same_tgt = None if tgt_codes is None else tgt_codes[rows, None] == tgt_codes
                same_src = None if src_codes is None else src_codes[rows, None] == src_codes
                for name, scores in self._scores(layer, rows, cache, r_src, r_tgt).items():
                    forward[name][rows] = _count(scores >= true[name][rows, None], same_tgt, 1)
                    backward[name] += _count(scores >= true[name], same_src, 0)
                    if name in COSINE_NORMALISATIONS:
                        kept = scores if same_tgt is None else scores.masked_fill(same_tgt, 0.0)
                        sums[name][rows] = kept.sum(1)
                        if permutations is not None:
                            index = permutations[:, rows].T
                            nulls[name] = nulls[name] + scores.gather(1, index).sum(0)
            extra = 0 if tgt_codes is None else 1  # see _count
            for name in true:
                per_layer.setdefault(("ranks", (name, "forward")), []).append(forward[name] + extra)
                per_layer.setdefault(("ranks", (name, "backward")), []).append(
                    backward[name] + (0 if src_codes is None else 1))
                if name not in COSINE_NORMALISATIONS:
                    continue
                if tgt_codes is None:
                    baseline = (sums[name] - true[name]) / max(n - 1, 1)
                else:
                    others = (tgt_codes[:, None] != tgt_codes).sum(1).clamp_min(1)
                    baseline = sums[name] / others
                per_layer.setdefault(("cosine", name), []).append(true[name])
                per_layer.setdefault(("baseline", name), []).append(baseline)
                if permutations is not None:
                    per_layer.setdefault(("null", name), []).append(nulls[name] / n)
        stats = PairStatistics()
        for (kind, key), values in per_layer.items():
            getattr(stats, kind)[key] = torch.stack(values).cpu()
        return stats


def _count(at_least: torch.Tensor, correct: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Candidates scoring at least the true score along ``dim``, the true one included; with
    duplicates (``correct``), every correct answer is left out instead and the caller adds 1."""
    count = at_least.view(torch.uint8).sum(dim, dtype=torch.int32)  # bytes sum ~2x faster
    if correct is not None:
        count = count - (at_least & correct).view(torch.uint8).sum(dim, dtype=torch.int32)
    return count


def pair_statistics(src: Prepared, tgt: Prepared, normalisations: Sequence[str] = NORMALISATIONS,
                    permutations: int = 0, seed: int = 0, block_bytes: int = BLOCK_BYTES
                    ) -> PairStatistics:
    """``PairScorer.statistics`` with ``permutations`` seeded random pairings for the null."""
    perms = random_pairings(src.n, permutations, seed) if permutations else None
    return PairScorer(src, tgt, normalisations, block_bytes).statistics(perms)


def score_matrix(src: torch.Tensor, tgt: torch.Tensor, normalisation: str) -> torch.Tensor:
    """(layers, n_src, n_tgt) scores under one of ``NORMALISATIONS``, held whole (small inputs)."""
    scorer = PairScorer(prepare(src), prepare(tgt), [normalisation])
    return torch.stack([scorer.matrices(layer)[normalisation] for layer in range(src.shape[0])])


def equivalence(texts: Sequence[str]) -> torch.Tensor:
    """(n, n) bool: candidate j is a correct answer for query i (same target text as i)."""
    ids: dict[str, int] = {}
    codes = torch.tensor([ids.setdefault(t, len(ids)) for t in texts])
    return codes[:, None] == codes[None, :]


def worst_if_nan(scores: torch.Tensor) -> torch.Tensor:
    """NaN scores as -inf, in place: a NaN translation score ranks last, never first (a NaN
    compares false with everything, so ">= true" would count no competitor at all)."""
    return scores.nan_to_num_(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))


def ranks(scores: torch.Tensor, correct: torch.Tensor | None = None) -> torch.Tensor:
    """(layers, n) rank of each query's translation in whole score matrices (module rule)."""
    scores = worst_if_nan(scores.clone())
    true = scores.diagonal(dim1=-2, dim2=-1)[..., None]
    if correct is not None and int(correct.sum()) == correct.shape[-1]:
        correct = None  # no duplicates
    return _count(scores >= true, correct, -1) + (0 if correct is None else 1)


def retrieval(rank: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-query P@1, R@5, R@10 and reciprocal rank from ranks, each float like ``rank``."""
    rank = rank.float()
    return {"p@1": (rank <= 1).float(), "r@5": (rank <= 5).float(),
            "r@10": (rank <= 10).float(), "mrr": 1.0 / rank}


def mexa(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """MEXA's strict alignment per sentence pair (Kargaran et al. 2024): pair i counts only if its
    score is strictly above every other in its row *and* its column, i.e. the translation is
    retrieved first in both directions. ``forward``/``backward`` are the ranks of each direction."""
    return ((forward <= 1) & (backward <= 1)).float()


def mexa_null(n: int) -> float:
    """Chance of MEXA's criterion: the pair is the largest of the 2n - 1 scores in its row and
    column, each equally likely under random pairing."""
    return 1.0 / (2 * n - 1)


def precision_at_1(src: torch.Tensor, tgt: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """Per-layer P@1 of retrieving target i for source i (layers,)."""
    name = "centered" if centered else "raw"
    stats = pair_statistics(prepare(src), prepare(tgt), [name])
    return retrieval(stats.ranks[(name, "forward")])["p@1"].mean(-1)


# ------------------------------------------------------------------------------ uncertainty


def bootstrap_ci(values: torch.Tensor, samples: int = 1000, level: float = 0.95, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap CI of the mean over the last axis (sentences), per leading index."""
    n = values.shape[-1]
    flat = values.reshape(-1, n).float()
    # Mean of each resample as a matrix product with its resample counts (samples x n).
    means = flat @ _resample_counts(n, samples, seed).T / n  # (rows, samples)
    alpha = (1 - level) / 2
    bounds = means.quantile(torch.tensor([alpha, 1 - alpha]), dim=-1)
    return bounds[0].reshape(values.shape[:-1]), bounds[1].reshape(values.shape[:-1])


@functools.lru_cache(maxsize=8)
def _resample_counts(n: int, samples: int, seed: int) -> torch.Tensor:
    """How often each sentence occurs in each bootstrap resample; the same for every curve of a
    run, so all curves share resamples (and paired differences stay meaningful)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (samples, n), generator=generator)
    return torch.zeros(samples, n).scatter_add_(1, index, torch.ones(samples, n))


def random_pairings(n: int, permutations: int, seed: int = 0) -> torch.Tensor:
    """(permutations, n) seeded random permutations: query i paired with target perm[i]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=generator) for _ in range(permutations)])


def retrieval_null(n: int, answers: Sequence[int] | None = None) -> dict[str, float]:
    """Chance level of each retrieval metric under random pairing, exact. ``answers[i]`` is how
    many of the n candidates are correct for query i (1 without duplicate sentences); the other
    correct ones are not competitors (module rule), so the rank is uniform on 1..n - d + 1."""
    counts = Counter(answers if answers is not None else [1] * n)
    out = dict.fromkeys(RETRIEVAL_METRICS, 0.0)
    for d, queries in counts.items():
        m = n - d + 1
        out["p@1"] += queries / m
        out["r@5"] += queries * min(5, m) / m
        out["r@10"] += queries * min(10, m) / m
        out["mrr"] += queries * sum(1.0 / r for r in range(1, m + 1)) / m
    return {metric: value / counts.total() for metric, value in out.items()}


def answer_counts(codes: torch.Tensor | None, n: int) -> list[int]:
    """Correct answers per query: candidates whose text equals the true translation's."""
    if codes is None:
        return [1] * n
    per_code = torch.bincount(codes)
    return per_code[codes].tolist()


# ------------------------------------------------------------------------ representational

CKA_MAX_SENTENCES = 4096


def _gram(x: torch.Tensor) -> torch.Tensor:
    """Centered linear Gram matrix of (..., n, d) features."""
    x = center(x.float())
    return x @ x.transpose(-1, -2)


def linear_cka(x: torch.Tensor, y: torch.Tensor, max_sentences: int = CKA_MAX_SENTENCES,
               seed: int = 0) -> torch.Tensor:
    """Linear CKA between every layer of x and every layer of y: (layers_x, layers_y).

    x and y are (layers, n, d) over the same n sentences (d may differ, e.g. two models). Above
    ``max_sentences`` a seeded random subset of sentences is used (Gram matrices are n x n).
    """
    if x.shape[1] > max_sentences:
        keep = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(seed))
        keep = keep[:max_sentences].sort().values
        x, y = x[:, keep], y[:, keep]
    hsic = torch.empty(x.shape[0], y.shape[0], dtype=torch.float64)
    grams_y = [_gram(y[j]).flatten().double() for j in range(y.shape[0])]
    norms_y = torch.stack([g.norm() for g in grams_y])
    norms_x = torch.empty(x.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        gx = _gram(x[i]).flatten().double()
        norms_x[i] = gx.norm()
        hsic[i] = torch.stack([gx @ gy for gy in grams_y])
    return (hsic / (norms_x[:, None] * norms_y[None, :])).float()


def neighbours(side: Prepared, k: int, block_bytes: int = BLOCK_BYTES) -> torch.Tensor:
    """Indices (layers, n, k) of each sentence's k nearest other sentences (centered cosine)."""
    n = side.n
    k = min(k, n - 1)
    out = torch.empty(side.unit.shape[0], n, k, dtype=torch.long, device=side.unit.device)
    for layer, z in enumerate(side.unit):
        for rows in _blocks(n, n, block_bytes):
            sim = z[rows] @ z.T
            sim[:, rows].diagonal().fill_(float("-inf"))
            out[layer, rows] = sim.topk(k, dim=-1).indices
    return out


def knn_overlap(nx: torch.Tensor, ny: torch.Tensor) -> torch.Tensor:
    """Per layer, mean share of neighbours two kNN index sets (layers, n, k) have in common."""
    k = nx.shape[-1]
    return ((nx[..., :, None] == ny[..., None, :]).any(-1).float().sum(-1) / k).mean(-1).cpu()


def mutual_knn(x: torch.Tensor, y: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Per layer, mean overlap of sentence i's k nearest neighbours among x and among y.

    x and y are (layers, n, d): the same sentences in two languages (or two models).
    """
    return knn_overlap(neighbours(prepare(x), k), neighbours(prepare(y), k))
