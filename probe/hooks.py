"""Hooks on a decoder's blocks: the one way this project installs and removes them, and the one
rule for layer numbers.

Layer ``l`` is the output of block ``l`` (1..blocks); layer 0 is the embeddings, the input of
block 1. Reading states may touch layer 0; acting on block outputs (interventions, patching, the
training objective) needs 1..blocks. Every hook installed through ``hooked`` is removed on exit,
whatever happens — an error, or a hook that ends the forward early by raising ``StopForward`` —
so the model's logits afterwards are bit-identical to before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch.utils.hooks import RemovableHandle

from .errors import DataError

Install = Callable[[], RemovableHandle]
"""A call that registers one hook and returns its handle."""


class StopForward(Exception):
    """Raised by a hook once everything wanted is captured: ends the forward early."""


def check_layers(layers: Sequence[int] | None, blocks: int | None, *, first: int = 0,
                 acting: str | None = None, option: str = "") -> list[int]:
    """The requested layers, sorted and unique, each within ``first``..``blocks``: ``first`` 0
    to read states (0 is the embeddings), 1 for hooks that act on block outputs (``acting``
    names who acts, for the message; ``option`` the flag that chose them). ``layers`` None means
    all of them; ``blocks`` None (not known before the weights load) refuses only layers below
    ``first``."""
    if layers is None:
        if blocks is None:
            raise ValueError("all layers of a model whose block count is not known")
        return list(range(first, blocks + 1))
    top = math.inf if blocks is None else blocks
    bad = [layer for layer in layers if not first <= layer <= top]
    if bad or not layers:
        span = f"{first}..{'blocks' if blocks is None else blocks}"
        where = (f"{acting} on block outputs, layers {span} of this model" if acting
                 else f"this model has layers {span}")
        raise DataError(f"{option or 'layers'} {bad or '(none)'} out of range: {where}")
    return sorted(set(layers))


@contextmanager
def hooked(installs: Iterable[Install]) -> Iterator[None]:
    """Install every hook of ``installs`` for the ``with`` block and remove them all on exit
    (also the ones installed before an install failed)."""
    handles: list[RemovableHandle] = []
    try:
        for install in installs:
            handles.append(install())
        yield
    finally:
        for handle in handles:
            handle.remove()


def on_outputs(blocks: Sequence[torch.nn.Module], hooks: Mapping[int, Callable]) -> list[Install]:
    """Forward hooks on the outputs of the blocks of ``hooks``' layers (layer l: block l)."""
    return [lambda hook=hook, layer=layer: blocks[layer - 1].register_forward_hook(hook)
            for layer, hook in hooks.items()]


def hidden_of(output: torch.Tensor | tuple) -> torch.Tensor:
    """The hidden states of a block's output (a tensor, or a tuple that starts with them)."""
    return output[0] if isinstance(output, tuple) else output


def editing(edit: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    """A forward hook that replaces a block's hidden states by ``edit(states)``."""
    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)
    return hook

