"""Interventions: forward hooks that change a model's computation inside a ``with`` block and
are removed on exit, whatever happens (the model's logits afterwards are bit-identical to
before). Each works on a plain model and on a PEFT-wrapped one (the hooks sit on the decoder's
own modules, found by structure).

- ``deactivated``: zero chosen FFN neurons (the LAPE check: language neurons vs random ones);
- ``steered``: add ``strength`` × a vector to every position's state after block ``layer``
  (a language vector: the difference of two languages' mean states — the very means the
  probe's centering removes);
- ``mapped``: h ← h + strength·(h·W + b − h) after block ``layer`` on the prompt's positions
  (INCLINE-style: a least-squares map from language X's states to English ones).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .architecture import DecoderParts
from .errors import DataError
from .extract import SINK_RATIO
from .hooks import check_layers, editing, hooked, on_outputs
from .neurons import activation_modules


@contextmanager
def deactivated(parts: DecoderParts, mask: torch.Tensor) -> Iterator[None]:
    """Zero the neurons of ``mask`` (blocks, neurons) at the activation function's output (in
    gated MLPs that zeroes the product the output projection reads)."""
    acts = activation_modules(parts)
    if mask.shape[0] != len(acts):
        raise DataError(f"the neuron mask has {mask.shape[0]} layers, the model {len(acts)} blocks")

    def register(act, keep: torch.Tensor):
        def zero(_module, _inputs, output):
            return output * keep.to(device=output.device, dtype=output.dtype)
        return lambda: act.register_forward_hook(zero)

    with hooked([register(act, ~layer_mask) for act, layer_mask in zip(acts, mask, strict=True)
                 if bool(layer_mask.any())]):
        yield


@contextmanager
def steered(parts: DecoderParts, layer: int, vector: torch.Tensor, strength: float = 1.0
            ) -> Iterator[None]:
    """Add ``strength * vector`` to every position's state after block ``layer``."""
    check_layers([layer], len(parts.blocks), first=1, acting="steering acts")
    if vector.shape != (parts.embeddings.weight.shape[1],):
        raise DataError(f"steering vector of shape {tuple(vector.shape)} does not fit hidden "
                        f"size {parts.embeddings.weight.shape[1]}")

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        return hidden + (strength * vector).to(device=hidden.device, dtype=hidden.dtype)

    with hooked(on_outputs(parts.blocks, {layer: editing(edit)})):
        yield


@dataclass(frozen=True)
class LinearMap:
    """y ≈ x·W + b from one language's states x to another's y (ridge least squares)."""

    weight: torch.Tensor  # (d, d)
    bias: torch.Tensor  # (d,)
    ridge: float  # the regularisation chosen by leave-one-out (generalised cross-validation)
    ridge_at_edge: bool = False  # the largest of the grid: the data barely support a linear
    #                              part, and the map is close to a constant (the target mean)

    @classmethod
    def fit(cls, source: torch.Tensor, target: torch.Tensor) -> LinearMap:
        """Fit on paired rows (n, d); the ridge is chosen by scikit-learn's efficient
        leave-one-out over a log grid (with n of a few hundred and d in the hundreds plain least
        squares would interpolate)."""
        from sklearn.linear_model import RidgeCV

        if source.shape != target.shape or source.ndim != 2 or len(source) < 2:
            raise DataError(f"a map needs paired (n, d) states with n ≥ 2, got "
                            f"{tuple(source.shape)} and {tuple(target.shape)}")
        alphas = np.logspace(-2, 5, 15)
        model = RidgeCV(alphas=alphas).fit(source.double().numpy(), target.double().numpy())
        return cls(torch.from_numpy(model.coef_.T).float(),
                   torch.from_numpy(np.asarray(model.intercept_)).float(), float(model.alpha_),
                   bool(model.alpha_ >= alphas[-1]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.to(x) + self.bias.to(x)


@contextmanager
def mapped(parts: DecoderParts, layer: int, linear_map: LinearMap, strength: float = 1.0
           ) -> Iterator[None]:
    """After block ``layer``, move the prompt's states (a forward over more than one position:
    the prompt's prefill; decoding steps of one token are left alone) towards their image under
    ``linear_map``: h ← h + strength·(map(h) − h). Attention-sink states (norm above
    ``SINK_RATIO`` × the median of their row) are left alone too: a map fitted on pooled states
    never saw them, and replacing them would break the sink rather than move the language."""
    check_layers([layer], len(parts.blocks), first=1, acting="mapping acts")

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[1] == 1:
            return hidden
        states = hidden.float()
        norms = states.norm(dim=-1)
        ordinary = norms <= SINK_RATIO * norms.median(dim=-1, keepdim=True).values
        moved = states + strength * (linear_map(states) - states)
        return torch.where(ordinary[..., None], moved, states).to(hidden.dtype)

    with hooked(on_outputs(parts.blocks, {layer: editing(edit)})):
        yield


def random_direction(like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A seeded random vector with the norm of ``like``: the steering's control."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(like.shape, generator=generator)
    return direction / direction.norm() * like.float().norm()
