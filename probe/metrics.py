"""Cross-lingual alignment metrics on pooled vectors, vectorised over layers."""

from __future__ import annotations

import torch


def center(x: torch.Tensor) -> torch.Tensor:
    """Subtract the per-layer mean over sentences: x is (layers, sentences, hidden)."""
    return x - x.mean(dim=-2, keepdim=True)


def cosine_matrix(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """(layers, n_src, n_tgt) cosine similarities, computed in float64 for stable ties."""
    src = torch.nn.functional.normalize(src.double(), dim=-1)
    tgt = torch.nn.functional.normalize(tgt.double(), dim=-1)
    return src @ tgt.transpose(-1, -2)


def precision_at_1(src: torch.Tensor, tgt: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """Per-layer P@1 of retrieving target i for source i, for (layers, n, hidden) inputs.

    A hit needs the true translation to score strictly above every other candidate, so a tie
    counts as a miss (the conservative rule; a random tie-break would reward collapsed spaces).
    """
    if centered:
        src, tgt = center(src), center(tgt)
    scores = cosine_matrix(src, tgt)
    true = scores.diagonal(dim1=-2, dim2=-1)
    eye = torch.eye(scores.shape[-1], dtype=torch.bool, device=scores.device)
    best_other = scores.masked_fill(eye, float("-inf")).amax(dim=-1)
    return (true > best_other).double().mean(dim=-1)
