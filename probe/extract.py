"""Batched per-layer pooled hidden states through forward hooks.

One forward pass of the model body fills every requested layer and pooling. Pooling happens
inside the hook as a weighted sum over tokens, so per-token states of all layers are never kept;
the LM head never runs, and the forward stops after the last requested layer.

Layer numbering: 0 is the embedding output (as fed to block 1, Gemma's scaling included); layer i
is the output of decoder block i, *before* the final norm — HF's ``hidden_states[-1]`` is after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .architecture import DecoderParts, find_decoder
from .errors import DataError, ModelError
from .models import LoadedModel

POOLINGS = ("mean", "last", "weighted")
SPANS = ("sentence", "prompt")
SENTENCE_SLOT = "{sentence}"


@dataclass(frozen=True)
class ExtractionConfig:
    """What to extract. Everything here changes the vectors, so all of it enters the cache key.

    poolings: ``mean`` over pooled tokens, ``last`` pooled token, ``weighted`` position-weighted
        mean (weights 1..n, as in SGPT). Special tokens (BOS, EOS, padding) are never pooled.
    layers: layer numbers to keep (0 = embeddings); ``None`` keeps all.
    template: a prompt holding ``{sentence}``, e.g. ``'Sentence: "{sentence}" means in one word:'``.
    span: with a template, pool over the ``sentence`` tokens only or over the whole ``prompt``.
    """

    poolings: tuple[str, ...] = ("mean",)
    layers: tuple[int, ...] | None = None
    template: str | None = None
    span: str = "sentence"
    max_length: int = 256

    def __post_init__(self) -> None:
        unknown = [p for p in self.poolings if p not in POOLINGS]
        if not self.poolings or unknown:
            raise DataError(f"unknown pooling {unknown or '(none)'}; choose from {', '.join(POOLINGS)}")
        if len(set(self.poolings)) != len(self.poolings):
            raise DataError(f"pooling listed twice: {', '.join(self.poolings)}")
        if self.span not in SPANS:
            raise DataError(f"unknown span {self.span!r}; choose from {', '.join(SPANS)}")
        if self.template is not None and self.template.count(SENTENCE_SLOT) != 1:
            raise DataError(f"template must contain {SENTENCE_SLOT} exactly once: {self.template!r}")
        if self.max_length < 2:
            raise DataError(f"max_length must be at least 2, got {self.max_length}")


@dataclass
class Encoded:
    """Token ids of each text and the mask of tokens to pool."""

    input_ids: list[list[int]]
    pool_masks: list[list[bool]]
    truncated: int = 0

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


@dataclass
class BatchStats:
    """Token accounting over a run, to show how much padding the batching cost."""

    real_tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0

    @property
    def padding_fraction(self) -> float:
        total = self.real_tokens + self.padded_tokens
        return self.padded_tokens / total if total else 0.0


class _StopForward(Exception):
    """Raised by the hook of the last requested layer to end the forward early."""


def pooling_weights(mask: torch.Tensor, poolings: Sequence[str]) -> torch.Tensor:
    """Per-pooling token weights (P, B, T) from a boolean pool mask (B, T); each row sums to 1."""
    mask_f = mask.float()
    out = []
    for pooling in poolings:
        if pooling == "mean":
            weights = mask_f
        elif pooling == "weighted":
            weights = mask_f.cumsum(-1) * mask_f
        else:  # last pooled token, whichever side the padding is on
            last = (mask_f * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)
            weights = torch.zeros_like(mask_f).scatter_(1, last[:, None], 1.0)
        out.append(weights / weights.sum(-1, keepdim=True))
    return torch.stack(out)


class Extractor:
    """Pooled per-layer states of a loaded model for lists of sentences."""

    def __init__(self, loaded: LoadedModel, config: ExtractionConfig, padding_side: str = "right"):
        self.loaded = loaded
        self.config = config
        self.parts: DecoderParts = find_decoder(loaded.model)
        self.layers = self._check_layers(config.layers)
        self.padding_side = padding_side
        if not getattr(loaded.tokenizer, "is_fast", False) and config.template is not None:
            raise ModelError("templates need a fast tokenizer (character offsets); this one is slow")

    def _check_layers(self, layers: tuple[int, ...] | None) -> list[int]:
        available = self.parts.num_layers
        if layers is None:
            return list(range(available))
        bad = [layer for layer in layers if not 0 <= layer < available]
        if bad or not layers:
            raise DataError(f"layers {bad or '(none)'} out of range: "
                            f"this model has layers 0..{available - 1}")
        return sorted(set(layers))

    # ---------------------------------------------------------------------------------- encoding

    def encode(self, sentences: Sequence[str]) -> Encoded:
        """Tokenise (with the template) and mark which tokens each pooling may use."""
        template = self.config.template
        if template is None:
            texts, starts = list(sentences), [0] * len(sentences)
        else:
            prefix = template.split(SENTENCE_SLOT)[0]
            texts = [template.replace(SENTENCE_SLOT, s) for s in sentences]
            starts = [len(prefix)] * len(sentences)
        tokenizer = self.loaded.tokenizer
        use_offsets = template is not None and self.config.span == "sentence"
        enc = tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=self.config.max_length,
            return_special_tokens_mask=True,
            return_offsets_mapping=use_offsets,
            return_length=False,
        )
        ids, masks, truncated = [], [], 0
        for i, token_ids in enumerate(enc["input_ids"]):
            keep = [not special for special in enc["special_tokens_mask"][i]]
            if use_offsets:
                start, end = starts[i], starts[i] + len(sentences[i])
                offsets = enc["offset_mapping"][i]
                keep = [k and a < end and b > start for k, (a, b) in zip(keep, offsets, strict=True)]
            if not any(keep):
                raise DataError(f"sentence {i} ({sentences[i][:40]!r}) has no token to pool")
            if len(token_ids) >= self.config.max_length:
                truncated += 1
            ids.append(token_ids)
            masks.append(keep)
        return Encoded(ids, masks, truncated)

    @staticmethod
    def batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
        """Indices sorted by length (longest first, stable) cut into batches: little padding."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    # ----------------------------------------------------------------------------------- forward

    def _collate(self, encoded: Encoded, batch: Sequence[int]) -> tuple[torch.Tensor, ...]:
        width = max(len(encoded.input_ids[i]) for i in batch)
        pad_id = self.loaded.tokenizer.pad_token_id or 0
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.bool)
        pool = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, i in enumerate(batch):
            n = len(encoded.input_ids[i])
            cols = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            ids[row, cols] = torch.tensor(encoded.input_ids[i])
            attention[row, cols] = True
            pool[row, cols] = torch.tensor(encoded.pool_masks[i])
        return ids, attention, pool

    def run_batch(self, encoded: Encoded, batch: Sequence[int], stats: BatchStats | None = None
                  ) -> torch.Tensor:
        """Pooled states of one batch: float32 tensor (poolings, layers, batch, hidden)."""
        device = self.loaded.device
        ids, attention, pool = (t.to(device) for t in self._collate(encoded, batch))
        weights = pooling_weights(pool, self.config.poolings)  # (P, B, T)
        # Positions count real tokens only, so left and right padding give the same states.
        positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
        pooled: dict[int, torch.Tensor] = {}
        modules = {0: self.parts.embeddings} | {i + 1: b for i, b in enumerate(self.parts.blocks)}
        last_layer = self.layers[-1]
        pad_rows = ~attention[..., None]

        def hook_for(layer: int) -> Callable:
            def hook(_module, _inputs, output):
                hidden = output[0] if isinstance(output, tuple) else output
                hidden = hidden.float()
                if self.padding_side == "left":  # fully masked pad rows may hold NaN
                    hidden = hidden.masked_fill(pad_rows, 0.0)
                pooled[layer] = torch.einsum("pbt,btd->pbd", weights, hidden)
                if layer == last_layer:
                    raise _StopForward

            return hook

        handles = [modules[layer].register_forward_hook(hook_for(layer)) for layer in self.layers]
        try:
            with torch.inference_mode():
                self.parts.body(input_ids=ids, attention_mask=attention.long(),
                                position_ids=positions, use_cache=False)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if stats is not None:
            real = int(attention.sum())
            stats.real_tokens += real
            stats.padded_tokens += attention.numel() - real
            stats.batches += 1
        return torch.stack([pooled[layer] for layer in self.layers], dim=1).cpu()

    def iter_batches(self, encoded: Encoded, indices: Sequence[int], batch_size: int,
                     stats: BatchStats | None = None) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Yield (sentence indices, pooled states) over ``indices`` in length-sorted batches."""
        lengths = [len(encoded.input_ids[i]) for i in indices]
        for batch in self.batches(lengths, batch_size):
            chosen = [indices[j] for j in batch]
            yield chosen, self.run_batch(encoded, chosen, stats)

    def extract(self, sentences: Sequence[str], batch_size: int = 32,
                stats: BatchStats | None = None) -> torch.Tensor:
        """Pooled states of ``sentences`` in their order: (poolings, layers, n, hidden), float32."""
        encoded = self.encode(sentences)
        out = torch.empty(len(self.config.poolings), len(self.layers), len(sentences),
                          self.hidden_size)
        for chosen, states in self.iter_batches(encoded, range(len(sentences)), batch_size, stats):
            out[:, :, chosen] = states
        return out

    @property
    def hidden_size(self) -> int:
        return self.parts.embeddings.weight.shape[1]

