"""The logit lens: each layer's state read through the model's own final norm and LM head.

States come from the hooked extraction pass (``extract.Extractor`` with ``last`` pooling and
sinks kept: the raw state of the last prompt token at every layer), so the lens sees exactly the
layers the alignment metrics see (layer 0 = input of the first block). Only the positions asked
for are read out, one layer at a time, with the head's product in float32; the full-vocabulary
logits of one layer and batch are the largest tensor held.

Layer ``L`` (the last) read through the lens equals the model's own next-token logits; the
tests check that on every decoder family, including Gemma 2's final-logit soft-capping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .architecture import find_decoder
from .errors import DataError, ModelError
from .extract import ExtractionConfig, Extractor
from .models import LoadedModel


@dataclass
class LensReadout:
    """Per layer and prompt: probabilities of the asked-for tokens, entropy, top tokens."""

    layers: list[int]
    probs: torch.Tensor  # (layers, prompts, token sets asked)
    entropy: torch.Tensor  # (layers, prompts), nats
    top: torch.Tensor  # (layers, prompts, k) token ids, most probable first
    top_probs: torch.Tensor  # (layers, prompts, k) their probabilities


class LogitLens:
    """Read a decoder's per-layer states through its final norm and LM head."""

    def __init__(self, loaded: LoadedModel, layers: tuple[int, ...] | None = None,
                 max_length: int = 2048):
        self.loaded = loaded
        parts = find_decoder(loaded.model)
        model = loaded.model
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        head = inner.get_output_embeddings()
        if head is None or getattr(head, "weight", None) is None:
            raise ModelError(f"{loaded.name} has no LM head (output embeddings); the lens needs one")
        self.head = head
        self.final_norm = parts.final_norm
        config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") \
            else inner.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self._last: tuple[tuple[str, ...], torch.Tensor] | None = None
        self.extractor = Extractor(loaded, ExtractionConfig(
            poolings=("last",), layers=layers, max_length=max_length, sinks="keep"))

    @property
    def layers(self) -> list[int]:
        return self.extractor.layers

    def last_token_states(self, prompts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
        """(layers, prompts, hidden): each layer's state at each prompt's last token (the last
        call's result is kept, so reading the same prompts through a second lens costs no
        second forward pass)."""
        key = tuple(prompts)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        encoded = self.extractor.encode(prompts)
        if encoded.truncated:  # the last token would not be the prompt's end
            longest = max(range(len(prompts)), key=lambda i: len(encoded.input_ids[i]))
            raise DataError(f"{encoded.truncated} prompt(s) reach the lens's limit of "
                            f"{self.extractor.config.max_length} tokens (e.g. prompt {longest}: "
                            f"{prompts[longest][:60]!r}); use fewer shots or shorter prompts")
        out = torch.empty(len(self.layers), len(prompts), self.extractor.hidden_size)
        for chosen, states in self.extractor.iter_batches(encoded, range(len(prompts)),
                                                          batch_size):
            out[:, chosen] = states[0]
        self._last = (key, out)
        return out

    def log_probs(self, states: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        """(prompts, vocabulary) next-token log-probabilities of one layer's states; with
        ``differentiable`` outside inference mode, so gradients reach the states (the tuned
        lens trains through it)."""
        device = self.loaded.device
        hidden = states.to(device=device, dtype=self.loaded.dtype)
        with torch.inference_mode(not differentiable):
            if self.final_norm is not None:  # block outputs are before the body's final norm
                hidden = self.final_norm(hidden)
            logits = hidden.float() @ self.head.weight.float().T
            bias = getattr(self.head, "bias", None)
            if bias is not None:
                logits = logits + bias.float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            return torch.log_softmax(logits, dim=-1)

    def position_states(self, sentences: Sequence[str], positions: int, seed: int = 0,
                        batch_size: int = 16) -> tuple[torch.Tensor, list[int]]:
        """(layers, n, hidden) states at up to ``positions`` seeded random token positions of
        each sentence (special tokens excluded; one forward pass per batch), and the sentence
        index of each state."""
        encoded = self.extractor.encode(sentences)
        generator = torch.Generator().manual_seed(seed)
        picks, owners = [], []
        for i, mask in enumerate(encoded.pool_masks):
            real = [j for j, keep in enumerate(mask) if keep]
            chosen = torch.randperm(len(real), generator=generator)[:positions].sort().values
            picks.append([real[k] for k in chosen.tolist()])
            owners += [i] * len(picks[-1])
        return self.extractor.states_at(encoded, picks, batch_size), owners

    def readout(self, prompts: Sequence[str], token_sets: Sequence[Sequence[Sequence[int]]],
                top_k: int = 10, batch_size: int = 16, translator=None) -> LensReadout:
        """At the next position after each prompt and at every layer: the probability of each of
        its token sets (a set's ids summed, e.g. a word's first token with and without a leading
        space; ``token_sets[i]`` holds the same number of sets for every prompt)."""
        return self.read_states(self.last_token_states(prompts, batch_size), token_sets, top_k,
                                batch_size, translator)

    def read_states(self, states: torch.Tensor,
                    token_sets: Sequence[Sequence[Sequence[int]]] | None = None, top_k: int = 10,
                    batch_size: int = 16, translator=None) -> LensReadout:
        """``readout`` of states already taken: (layers, n, hidden). A ``translator`` (a
        ``tuned_lens.TunedLens``) maps each layer's states first: the tuned lens."""
        n = states.shape[1]
        token_sets = token_sets if token_sets is not None else [[]] * n
        if len(token_sets) != n or len({len(t) for t in token_sets}) > 1:
            raise ValueError("one equally long list of token sets per state")
        width = max([len(ids) for sets in token_sets for ids in sets] or [1])
        asked = torch.zeros(n, len(token_sets[0]), width, dtype=torch.long)
        mask = torch.zeros(asked.shape, dtype=torch.bool)
        for i, sets in enumerate(token_sets):
            for j, ids in enumerate(sets):
                asked[i, j, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
                mask[i, j, : len(ids)] = True
        probs = torch.empty(len(self.layers), n, asked.shape[1])
        entropy = torch.empty(len(self.layers), n)
        top = torch.empty(len(self.layers), n, top_k, dtype=torch.long)
        top_probs = torch.empty(len(self.layers), n, top_k)
        for index in range(len(self.layers)):
            for start in range(0, n, batch_size):
                rows = slice(start, start + batch_size)
                hidden = states[index, rows]
                if translator is not None and index < len(translator.layers):
                    with torch.inference_mode():
                        hidden = translator.translate(index, hidden.to(translator.weight.device))
                p = self.log_probs(hidden).cpu().exp()
                picked = p.gather(1, asked[rows].flatten(1)).view(asked[rows].shape)
                probs[index, rows] = (picked * mask[rows]).sum(-1)
                entropy[index, rows] = torch.special.entr(p).sum(-1)
                top_probs[index, rows], top[index, rows] = p.topk(top_k, dim=-1)
        return LensReadout(self.layers, probs, entropy, top, top_probs)
