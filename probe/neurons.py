"""Language-specific FFN neurons by activation probability entropy (LAPE, Tang et al. 2024).

A neuron is the output unit j of a block's MLP activation function (``act_fn(gate_proj(x))`` in
gated MLPs, ``act(c_fc(x))`` in GPT-2-style ones): what the output projection reads. It *fires*
on a token when that value is > 0. Its activation probability for language L is the share of
L's real tokens (no special tokens, no padding) on which it fires.

LAPE (the reference implementation's defaults, kept as options):
1. normalise each neuron's probabilities over languages into a distribution; entropy H;
2. leave out neurons that no language activates above the ``filter_rate`` quantile of all
   probabilities (neurons that rarely fire look "specific" by accident);
3. keep the ``top_rate`` share of all neurons with the lowest H;
4. a kept neuron belongs to every language whose probability exceeds the ``bar_rate`` quantile
   of all probabilities (so a neuron may belong to several languages, or to none).

Layers are numbered like the probe's: block i's neurons are layer i (1..blocks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .architecture import DecoderParts
from .checks import OPEN_SHARE, check_numbers
from .errors import DataError, ModelError
from .extract import Extractor
from .hooks import hooked

_ACTIVATION_MODULES = ("torch.nn.modules.activation", "transformers.activations")


def _is_activation(module: nn.Module) -> bool:
    kind = type(module)
    return (next(module.children(), None) is None
            and next(module.parameters(recurse=False), None) is None
            and (kind.__module__ in _ACTIVATION_MODULES or kind.__name__.lower().endswith("gelu")))


def activation_modules(parts: DecoderParts) -> list[nn.Module]:
    """Each block's MLP activation function (one module per block, none shared), or a clear
    ``ModelError`` naming what was found instead."""
    found = []
    for index, block in enumerate(parts.blocks, start=1):
        acts = [(name, m) for name, m in block.named_modules() if _is_activation(m)]
        if len(acts) != 1:
            names = ", ".join(name for name, _ in acts) or "none"
            raise ModelError(f"block {index} has {len(acts)} activation modules ({names}); the "
                             "neuron lens needs exactly one, the MLP's")
        found.append(acts[0][1])
    if len({id(m) for m in found}) != len(found):
        raise ModelError("the blocks share one activation module; its neurons cannot be told "
                         "apart by layer")
    return found


@dataclass(frozen=True)
class LapeThresholds:
    top_rate: float = 0.01  # share of all neurons kept, lowest entropy first
    filter_rate: float = 0.95  # a neuron needs some language above this quantile of probabilities
    bar_rate: float = 0.95  # a kept neuron belongs to the languages above this quantile

    def __post_init__(self) -> None:
        check_numbers({f"--{name.replace('_', '-')}": (getattr(self, name), OPEN_SHARE)
                       for name in ("top_rate", "filter_rate", "bar_rate")})


@torch.inference_mode()
def activation_counts(extractor: Extractor, texts: Sequence[str], batch_size: int = 16
                      ) -> tuple[torch.Tensor, int]:
    """(blocks, neurons) counts of real tokens on which each neuron fired, and the token count.
    One forward per batch with a hook on every block's activation function."""
    acts = activation_modules(extractor.parts)
    encoded = extractor.encode(texts)
    device = extractor.loaded.device
    counts: list[torch.Tensor | None] = [None] * len(acts)
    tokens = 0
    current: dict[str, torch.Tensor] = {}

    def hook(index: int):
        def count(_module, _inputs, output):
            fired = (output > 0) & current["mask"][..., None]
            total = fired.sum(dim=(0, 1), dtype=torch.long).cpu()
            counts[index] = total if counts[index] is None else counts[index] + total
        return count

    with hooked([lambda act=act, i=i: act.register_forward_hook(hook(i))
                 for i, act in enumerate(acts)]):
        for batch in extractor.batches(encoded.lengths, batch_size):
            ids, attention, pool, _ = (t.to(device) for t in extractor.collate(encoded, batch))
            current["mask"] = pool
            extractor.run_body(ids, attention)
            tokens += int(pool.sum())
    return torch.stack(counts), tokens  # type: ignore[arg-type]


def lape(probabilities: torch.Tensor, thresholds: LapeThresholds = LapeThresholds()
         ) -> torch.Tensor:
    """Boolean (languages, blocks, neurons): the neurons specific to each language, from
    activation probabilities (blocks, neurons, languages) — the module docstring's four steps."""
    if probabilities.shape[-1] < 2:
        raise DataError("LAPE needs at least two languages")
    probs = probabilities.float()
    total = probs.sum(-1, keepdim=True)
    normed = torch.where(total > 0, probs / total.clamp_min(1e-30), torch.zeros_like(probs))
    entropy = -(normed * torch.where(normed > 0, normed.log(), torch.zeros_like(normed))).sum(-1)
    flat = probs.flatten()
    floor = flat.kthvalue(max(1, round(flat.numel() * thresholds.filter_rate))).values
    entropy = entropy.masked_fill((probs > floor).sum(-1) == 0, float("inf"))
    keep = max(1, round(entropy.numel() * thresholds.top_rate))
    chosen = entropy.flatten().topk(keep, largest=False).indices
    chosen = chosen[torch.isfinite(entropy.flatten()[chosen])]
    bar = flat.kthvalue(max(1, round(flat.numel() * thresholds.bar_rate))).values
    specific = torch.zeros(probs.shape[-1], *probs.shape[:-1], dtype=torch.bool)
    rows, cols = chosen // probs.shape[1], chosen % probs.shape[1]
    above = probs[rows, cols] > bar  # (kept, languages)
    for language in range(probs.shape[-1]):
        hit = above[:, language]
        specific[language, rows[hit], cols[hit]] = True
    return specific


def neuron_counts(masks: torch.Tensor, languages: Sequence[str]) -> pd.DataFrame:
    """Tidy language, layer (1..blocks), neurons."""
    per = masks.sum(-1)  # (languages, blocks)
    return pd.DataFrame([{"language": language, "layer": layer + 1, "neurons": int(per[i, layer])}
                         for i, language in enumerate(languages) for layer in range(per.shape[1])])


def overlap(masks: torch.Tensor, languages: Sequence[str]) -> pd.DataFrame:
    """Tidy language_a, language_b, shared (neurons specific to both, all layers)."""
    flat = masks.flatten(1).float()
    shared = flat @ flat.T
    return pd.DataFrame([{"language_a": a, "language_b": b, "shared": int(shared[i, j])}
                         for i, a in enumerate(languages) for j, b in enumerate(languages)])


def compare_masks(before: torch.Tensor, after: torch.Tensor, languages: Sequence[str]
                  ) -> pd.DataFrame:
    """Per language and layer: neurons kept, vanished (only before), appeared (only after) and
    the Jaccard index — which language neurons a training adds or removes."""
    rows = []
    for i, language in enumerate(languages):
        for layer in range(before.shape[1]):
            a, b = before[i, layer], after[i, layer]
            kept, union = int((a & b).sum()), int((a | b).sum())
            rows.append({"language": language, "layer": layer + 1, "kept": kept,
                         "vanished": int((a & ~b).sum()), "appeared": int((b & ~a).sum()),
                         "jaccard": kept / union if union else float("nan")})
    return pd.DataFrame(rows)


def random_like(mask: torch.Tensor, seed: int = 0, exclude: torch.Tensor | None = None
                ) -> torch.Tensor:
    """As many random neurons per layer as ``mask`` (blocks, neurons) holds, drawn (seeded)
    from the neurons outside ``exclude``: the deactivation's control."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.zeros_like(mask)
    for layer in range(mask.shape[0]):
        n = int(mask[layer].sum())
        if n:
            pool = (~exclude[layer] if exclude is not None else torch.ones_like(mask[layer]))
            candidates = pool.nonzero().flatten()
            if len(candidates) < n:
                raise DataError(f"layer {layer + 1} has too few neurons for a random control")
            pick = candidates[torch.randperm(len(candidates), generator=generator)[:n]]
            out[layer, pick] = True
    return out


@torch.inference_mode()
def sentence_nll(extractor: Extractor, texts: Sequence[str], batch_size: int = 16
                 ) -> torch.Tensor:
    """Mean next-token negative log-likelihood (nats) of each text's real tokens, in order."""
    model = extractor.loaded.model
    encoded = extractor.encode(texts)
    out = torch.empty(len(texts))
    device = extractor.loaded.device
    for batch in extractor.batches(encoded.lengths, batch_size):
        ids, attention, pool, _ = (t.to(device) for t in extractor.collate(encoded, batch))
        logits = model(input_ids=ids, attention_mask=attention.long(), use_cache=False).logits
        logits = logits[:, :-1].float()
        if not bool(torch.isfinite(logits).all()):
            raise ModelError("the model produced non-finite logits (under this intervention?)")
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:],
                                                reduction="none")
        target = pool[:, 1:].float()
        out[batch] = ((nll * target).sum(-1) / target.sum(-1).clamp_min(1)).cpu()
    return out
