"""The alignment objective: an InfoNCE loss between pooled middle-layer states of English -> X
translation pairs, added to the response-only LM loss (after Liu & Niehues 2025, "Middle-layer
representation alignment for cross-lingual transfer in fine-tuned LLMs").

Each micro-batch draws ``batch`` pairs of the mixture's translation pairs; English and X
sentences (alone, no prompt) run through the body up to the highest chosen layer only; at each
chosen layer the states are mean-pooled over the sentence's tokens (special tokens and the first
token left out when no BOS precedes it, as it is then the attention sink — see
``probe.extract``); the
loss is the symmetric cross-entropy of the cosine-similarity matrix over temperature, in-batch
translations as the positives, averaged over layers."""

from __future__ import annotations

import random
from contextlib import suppress
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from layer_analysis.probe.architecture import DecoderParts
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.hooks import StopForward, check_layers, hidden_of, hooked, on_outputs


@dataclass(frozen=True)
class AlignmentObjective:
    """``train --align-weight W --align-layers L1,L2`` (weight 0: off)."""

    weight: float = 0.0
    layers: tuple[int, ...] | None = None  # default: the middle block's output
    temperature: float = 0.1
    batch: int = 16  # translation pairs per micro-batch

    def __post_init__(self) -> None:
        if self.weight < 0 or self.temperature <= 0 or self.batch < 2:
            raise DataError(f"the alignment objective needs weight ≥ 0, temperature > 0 and at "
                            f"least 2 pairs per batch (got weight {self.weight}, temperature "
                            f"{self.temperature}, batch {self.batch})")

    @property
    def active(self) -> bool:
        return self.weight > 0

    def check_layers(self, num_layers: int) -> tuple[int, ...]:
        """The chosen layers (1..blocks; 0 is the embeddings, which LoRA never moves) or the
        middle one."""
        blocks = num_layers - 1
        if self.layers is None:
            return (blocks // 2,)
        return tuple(check_layers(self.layers, blocks, first=1, option="--align-layers",
                                  acting="the alignment objective acts"))


class PairBatches:
    """Tokenised translation pairs and a deterministic draw per micro-batch (resumable: the
    draw depends on the micro-batch number only)."""

    def __init__(self, pairs: list[tuple[str, str]], tokenizer, max_length: int, batch: int,
                 seed: int) -> None:
        if len(pairs) < batch:
            raise DataError(f"the alignment objective draws {batch} translation pairs per batch; "
                            f"the mixture holds {len(pairs)}")
        english = tokenizer([e for e, _ in pairs], add_special_tokens=True).input_ids
        other = tokenizer([x for _, x in pairs], add_special_tokens=True).input_ids
        keep = [i for i in range(len(pairs))
                if len(english[i]) <= max_length and len(other[i]) <= max_length]
        if len(keep) < batch:
            raise DataError(f"only {len(keep)} translation pairs fit in {max_length} tokens; the "
                            f"alignment objective needs {batch}")
        self.english = [english[i] for i in keep]
        self.other = [other[i] for i in keep]
        self.special = set(tokenizer.all_special_ids)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        self.batch, self.seed = batch, seed

    def __len__(self) -> int:
        return len(self.english)

    def draw(self, micro: int) -> dict[str, torch.Tensor]:
        """English rows then X rows: input_ids, attention_mask, pool_mask (B*2, T)."""
        chosen = random.Random(self.seed * 1_000_003 + micro).sample(range(len(self)), self.batch)
        rows = [self.english[i] for i in chosen] + [self.other[i] for i in chosen]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        pool = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
            attention[r, : len(row)] = 1
            real = [j for j, t in enumerate(row) if t not in self.special]
            if real and real[0] == 0 and len(real) > 1:  # no BOS: the first token is a sink
                real = real[1:]
            pool[r, real] = True
        return {"pair_ids": ids, "pair_attention": attention, "pair_pool": pool}


def layer_states(parts: DecoderParts, ids: torch.Tensor, attention: torch.Tensor,
                 layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Outputs of the blocks ``layers`` (1-based, as the probe numbers them), with gradients;
    the forward stops after the highest."""
    captured: dict[int, torch.Tensor] = {}
    last = max(layers)

    def hook(layer: int):
        def capture(_module, _inputs, output):
            captured[layer] = hidden_of(output)
            if layer == last:
                raise StopForward

        return capture

    with hooked(on_outputs(parts.blocks, {layer: hook(layer) for layer in layers})), \
            suppress(StopForward):
        parts.body(input_ids=ids, attention_mask=attention, use_cache=False)
    return captured


def info_nce(english: torch.Tensor, other: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of pairs (row i of each side is a translation)."""
    scores = F.normalize(english.float(), dim=-1) @ F.normalize(other.float(), dim=-1).T
    scores = scores / temperature
    labels = torch.arange(len(scores), device=scores.device)
    return (F.cross_entropy(scores, labels) + F.cross_entropy(scores.T, labels)) / 2


def alignment_loss(parts: DecoderParts, layers: tuple[int, ...], temperature: float,
                   pair_ids: torch.Tensor, pair_attention: torch.Tensor,
                   pair_pool: torch.Tensor) -> torch.Tensor:
    """InfoNCE between the English and X halves of a drawn batch, averaged over ``layers``."""
    states = layer_states(parts, pair_ids, pair_attention, layers)
    weights = pair_pool.float()
    weights = weights / weights.sum(-1, keepdim=True)
    half = len(pair_ids) // 2
    losses = []
    for layer in layers:
        pooled = torch.einsum("bt,btd->bd", weights.to(states[layer].dtype), states[layer])
        losses.append(info_nce(pooled[:half], pooled[half:], temperature))
    return torch.stack(losses).mean()
