"""Paired differences between two models' runs on the same sentences.

Two curves whose bootstrap bands overlap can still differ reliably: both models answer the same
queries, so per-sentence differences cancel most of the sentence-to-sentence variation. For
every layer, language pair, direction and normalisation this takes, per query, model B's score
minus model A's — retrieval (P@1, R@5, R@10: hit or not; MRR: reciprocal rank; MEXA: first in
both directions) and, for ``raw`` and ``centered``, the cosine and the baseline-adjusted cosine
of the true pair — and reports the mean difference with a 95 % percentile-bootstrap CI over
sentences (the resamples every curve of a run shares), a two-sided sign-flip permutation p-value
(the null: A and B are exchangeable on each sentence), and Benjamini–Hochberg q-values over the
layers of each curve (which layers moved, at a 5 % false discovery rate).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from scipy.stats import false_discovery_control

from .analysis import aligned_pairs
from .errors import DataError
from .metrics import NORMALISATIONS, bootstrap_ci, mexa, pair_statistics, prepare, retrieval
from .store import Activations

PAIRED_COLUMNS = ["model", "reference", "layer", "source", "target", "pooling", "normalisation",
                  "metric",
                  "difference", "ci_low", "ci_high", "p_value", "q_value"]


def per_query(acts: Activations, pairs: Sequence[tuple[str, str]],
              normalisations: Sequence[str] = NORMALISATIONS, pooling: str | None = None
              ) -> dict[tuple, torch.Tensor]:
    """Per-query scores (layers, n) of one pooling (default: the run's first) keyed by (source,
    target, normalisation, metric); a direction's source is the side whose sentences are the
    queries."""
    used = sorted({side for pair in pairs for side in pair})
    sides = {k: prepare(acts.get(k, pooling), acts.texts.get(k) if acts.texts else None)
             for k in used}
    out: dict[tuple, torch.Tensor] = {}
    for source, target in pairs:
        stats = pair_statistics(sides[source], sides[target], normalisations)
        for (normalisation, direction), rank in stats.ranks.items():
            a, b = (source, target) if direction == "forward" else (target, source)
            for metric, values in retrieval(rank).items():
                out[(a, b, normalisation, metric)] = values
        for normalisation in normalisations:
            out[(source, target, normalisation, "mexa")] = mexa(
                stats.ranks[(normalisation, "forward")], stats.ranks[(normalisation, "backward")])
        for normalisation in stats.cosine:
            out[(source, target, normalisation, "cosine")] = stats.cosine[normalisation]
            out[(source, target, normalisation, "cosine_adjusted")] = (
                stats.cosine[normalisation] - stats.baseline[normalisation])
    return out


def sign_flip_p(differences: torch.Tensor, permutations: int = 1000, seed: int = 0) -> torch.Tensor:
    """Two-sided p-value per row of (rows, n) paired differences: how often a random sign per
    sentence gives a mean at least as far from 0 as the observed one ((1 + hits) / (1 + P))."""
    n = differences.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (permutations, n), generator=generator).float() * 2 - 1
    d = differences.double()
    observed = d.mean(-1).abs()
    null = (d @ signs.double().T / n).abs()  # (rows, permutations)
    hits = (null >= observed[:, None] - 1e-12).sum(-1)
    return (1 + hits).double() / (1 + permutations)


def check_pairable(a: Activations, b: Activations) -> None:
    """Paired differences need the same layers and the same sentences on every side."""
    if a.layers != b.layers:
        raise DataError(f"paired differences need the same layers (one run has {len(a.layers)}, "
                        f"the other {len(b.layers)}): compare models of one architecture")
    for side in a.manifest["sides"]:
        if (side not in b.vectors or a.get(side).shape[1] != b.get(side).shape[1]
                or (a.texts and b.texts and a.texts.get(side) != b.texts.get(side))):
            raise DataError(f"paired differences need the same sentences; {side} differs")


def paired_differences(a: Activations, b: Activations, model_a: str, model_b: str,
                       pivot: str | None = "eng_Latn",
                       normalisations: Sequence[str] = NORMALISATIONS, samples: int = 1000,
                       permutations: int = 1000, seed: int = 0,
                       poolings: Sequence[str] | None = None) -> pd.DataFrame:
    """Model B minus model A per query, summarised per layer, for each of ``poolings`` (default:
    every pooling A has; each must be in both runs; see the module's docstring)."""
    check_pairable(a, b)
    poolings = list(poolings or a.poolings)
    missing = [p for p in poolings if p not in a.poolings or p not in b.poolings]
    if missing:
        raise DataError(f"paired differences need the pooling {', '.join(missing)} in both runs "
                        f"({', '.join(a.poolings)} vs {', '.join(b.poolings)})")
    pairs = aligned_pairs(a, pivot)
    rows = []
    for pooling in poolings:
        scores_a = per_query(a, pairs, normalisations, pooling)
        scores_b = per_query(b, pairs, normalisations, pooling)
        for key, values in scores_a.items():
            difference = scores_b[key] - values  # (layers, n)
            low, high = bootstrap_ci(difference, samples, seed=seed)
            p = sign_flip_p(difference, permutations, seed)
            q = false_discovery_control(p.numpy(), method="bh")
            source, target, normalisation, metric = key
            for i, layer in enumerate(a.layers):
                rows.append([model_b, model_a, layer, source, target, pooling, normalisation,
                             metric, float(difference[i].mean()), float(low[i]), float(high[i]),
                             float(p[i]), float(q[i])])
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def paired_summary(paired: pd.DataFrame, metric: str = "p@1", normalisation: str = "centered",
                   alpha: float = 0.05) -> list[str]:
    """One line per model and directed pair: the layers that moved (q < ``alpha``) up and down,
    and the largest difference with its CI."""
    rows = paired[(paired.metric == metric) & (paired.normalisation == normalisation)]
    lines = []
    several = "pooling" in rows and rows.pooling.nunique() > 1
    for (model, reference, pooling, source, target), part in rows.groupby(
            ["model", "reference", "pooling", "source", "target"], sort=False):
        moved = part[part.q_value < alpha]
        up = moved[moved.difference > 0].layer.tolist()
        down = moved[moved.difference < 0].layer.tolist()
        top = part.loc[part.difference.abs().idxmax()]
        where = f", {pooling} pooling" if several else ""
        lines.append(f"{model} − {reference}, {source} → {target}{where}: up at layers "
                     f"{up or 'none'}, "
                     f"down at {down or 'none'}; largest {top.difference:+.3f} "
                     f"[{top.ci_low:+.3f}, {top.ci_high:+.3f}] at layer {top.layer}")
    return lines
