"""Batched per-layer pooled hidden states through forward hooks.

One forward pass of the model body fills every requested layer and pooling. Pooling happens
inside the hook as a weighted sum over tokens, so per-token states of all layers are never kept;
the LM head never runs, and the forward stops after the last requested layer.

Layer numbering: 0 is the input of the first block (token embeddings plus what the family adds
before it: Gemma's scaling, GPT-2's position embeddings, BLOOM's embedding norm); layer i is the
output of decoder block i, *before* the final norm — HF's ``hidden_states[-1]`` is after it.

Attention sinks. Decoders park attention on a few tokens whose states grow huge (norms 100× the
rest): BOS where the tokenizer adds one, else the *first real token*, and sometimes delimiters
("massive activations", Sun et al. 2024). One such vector dominates a mean over 20–40 tokens and
makes every sentence look alike. With ``sinks="exclude"`` (the default) mean and weighted pooling
leave out (a) the first token when it is a real token (the tokenizer added no BOS) and (b) at
each layer, any token whose state norm exceeds ``sink_ratio`` × the median norm of the sentence's
other pooled tokens. ``last`` takes the last token that is not excluded. What was excluded is
counted in a ``SinkRecord``. ``sinks="keep"`` pools every non-special token (the old behaviour).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import torch

from .architecture import DecoderParts, find_decoder
from .checks import RATIO, Range, check_number
from .errors import DataError, ModelError
from .hooks import StopForward, check_layers, hidden_of, hooked, on_outputs
from .models import LoadedModel

POOLINGS = ("mean", "last", "weighted")
SPANS = ("sentence", "prompt")
SINK_MODES = ("exclude", "keep")
SINK_RATIO = 10.0
"""Norm / sentence-median ratio above which a token is a sink. Measured one sentence at a time on
FLORES devtest (en, de, zh, el, ar, hi × 40; docs/results/attention-sinks.md): the 99.9th percentile of
ordinary tokens is at most 9.5× (SmolLM2, layers 3–8) and 2.5× (Gemma 3) per layer; sinks sit at
17–170× (SmolLM2's first token, and its second where the first is a byte fragment; Gemma's
delimiters ',' '，' '،' at layer 1: 21–27×)."""
SENTENCE_SLOT = "{sentence}"
MIN_LENGTH = Range(2, whole=True)
"""Tokens per text: at least two (BOS and one token of the sentence)."""


@dataclass(frozen=True)
class ExtractionConfig:
    """What to extract. Everything here changes the vectors, so all of it enters the cache key.

    poolings: ``mean`` over pooled tokens, ``last`` pooled token, ``weighted`` position-weighted
        mean (weights 1..n, as in SGPT and MEXA). Special tokens (BOS, EOS, padding) are never
        pooled.
    sinks: ``exclude`` attention-sink tokens from pooling (see the module docstring) or ``keep``.
    sink_ratio: the norm ratio (to the sentence's median) that marks a sink.
    layers: layer numbers to keep (0 = embeddings); ``None`` keeps all.
    template: a prompt holding ``{sentence}``, e.g. ``'Sentence: "{sentence}" means in one word:'``.
    span: with a template, pool over the ``sentence`` tokens only or over the whole ``prompt``.
    """

    poolings: tuple[str, ...] = ("mean",)
    layers: tuple[int, ...] | None = None
    template: str | None = None
    span: str = "sentence"
    max_length: int = 256
    sinks: str = "exclude"
    sink_ratio: float = SINK_RATIO

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
        check_number(self.max_length, "max_length", MIN_LENGTH)
        if self.sinks not in SINK_MODES:
            raise DataError(f"unknown sinks mode {self.sinks!r}; choose from {', '.join(SINK_MODES)}")
        check_number(self.sink_ratio, "sink_ratio", RATIO)


@dataclass
class Encoded:
    """Token ids of each text, the mask of tokens to pool, and whether the first token is a real
    token (no BOS before it: an attention sink, left out under ``sinks="exclude"``)."""

    input_ids: list[list[int]]
    pool_masks: list[list[bool]]
    first_is_real: list[bool]
    texts: list[str]
    truncated: int = 0

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


TRUNCATED_SHARE = 0.05  # more sentences than this cut by --max-length is warned about
KEPT_AT_LEAST = 0.5  # as is any sentence that keeps less than this fraction of its tokens


@dataclass(frozen=True)
class Truncation:
    """What ``max_length`` cuts, counted from the tokenizer's untruncated lengths."""

    max_length: int
    total: int  # texts
    sentences: int  # texts cut
    worst_kept_fraction: float  # of the most cut text's tokens (1.0: none cut)

    @property
    def share(self) -> float:
        return self.sentences / self.total if self.total else 0.0

    @property
    def serious(self) -> bool:
        """More than 5 % of the sentences cut, or any by more than half."""
        return self.share > TRUNCATED_SHARE or self.worst_kept_fraction < KEPT_AT_LEAST

    def to_dict(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "sentences": self.sentences,
                "share": round(self.share, 4),
                "worst_kept_fraction": round(self.worst_kept_fraction, 4)}

    def warning(self) -> str:
        return (f"--max-length {self.max_length} truncates {self.sentences} of {self.total} "
                f"sentences ({self.share:.0%}); the most cut keeps "
                f"{self.worst_kept_fraction:.0%} of its tokens, and its states describe only "
                "that part (raise --max-length)")


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


@dataclass
class SinkRecord:
    """What sink exclusion left out over a run, per layer (layer number -> count)."""

    mode: str = "exclude"
    ratio: float = SINK_RATIO
    sentences: int = 0
    first_token: int = 0  # sentences whose first token was real, hence excluded
    first_ratio_sum: dict[int, float] = field(default_factory=dict)  # its norm / median, summed
    massive: dict[int, int] = field(default_factory=dict)  # tokens over the ratio
    massive_max_ratio: dict[int, float] = field(default_factory=dict)
    tokens: Counter = field(default_factory=Counter)  # token text -> times excluded (any layer)
    positions: Counter = field(default_factory=Counter)  # position in the text -> times

    def merge(self, other: SinkRecord) -> None:
        self.sentences += other.sentences
        self.first_token += other.first_token
        for mine, theirs in ((self.first_ratio_sum, other.first_ratio_sum),
                             (self.massive, other.massive)):
            for layer, value in theirs.items():
                mine[layer] = mine.get(layer, 0) + value
        for layer, value in other.massive_max_ratio.items():
            self.massive_max_ratio[layer] = max(self.massive_max_ratio.get(layer, 0.0), value)
        self.tokens.update(other.tokens)
        self.positions.update(other.positions)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for the manifest and chunk metadata); ``from_dict`` reads it back."""
        massive_layers = sorted(layer for layer, n in self.massive.items() if n)
        return {
            "mode": self.mode, "ratio": self.ratio, "sentences": self.sentences,
            "first_token_excluded": self.first_token,
            "first_token_mean_ratio": {str(k): round(v / self.first_token, 2)
                                       for k, v in sorted(self.first_ratio_sum.items())
                                       if self.first_token},
            "massive_tokens": {str(k): v for k, v in sorted(self.massive.items()) if v},
            "massive_max_ratio": {str(k): round(v, 1)
                                  for k, v in sorted(self.massive_max_ratio.items()) if v},
            "massive_from_layer": massive_layers[0] if massive_layers else None,
            "top_tokens": self.tokens.most_common(10),
            "top_positions": [[int(p), n] for p, n in self.positions.most_common(10)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SinkRecord:
        first = data.get("first_token_excluded", 0)
        return cls(
            data.get("mode", "exclude"), data.get("ratio", SINK_RATIO), data.get("sentences", 0),
            first, {int(k): v * first for k, v in data.get("first_token_mean_ratio", {}).items()},
            {int(k): v for k, v in data.get("massive_tokens", {}).items()},
            {int(k): v for k, v in data.get("massive_max_ratio", {}).items()},
            Counter(dict(map(tuple, data.get("top_tokens", [])))),
            Counter({int(p): n for p, n in data.get("top_positions", [])}))

    def summary(self) -> str:
        """One line for the report and the CLI."""
        if self.mode == "keep":
            return "Attention sinks kept: every non-special token is pooled (--sinks keep)."
        parts = []
        if self.first_token:
            ratios = {k: v / self.first_token for k, v in self.first_ratio_sum.items()}
            peak = max(ratios, key=ratios.get)
            parts.append(f"the first token of {self.first_token} of {self.sentences} sentences "
                         f"(no BOS before it; its norm reaches {ratios[peak]:.0f}× the median at "
                         f"layer {peak})")
        total = sum(self.massive.values())
        if total:
            first = min(layer for layer, n in self.massive.items() if n)
            common = ", ".join(repr(t) for t, _ in self.tokens.most_common(3))
            parts.append(f"{total} token states over {self.ratio:g}× the median norm (from layer "
                         f"{first}; most often {common})")
        if not parts:
            return (f"Attention sinks: none found in the pooled tokens (BOS excluded; no token over "
                    f"{self.ratio:g}× the median norm).")
        return "Left out of mean/weighted pooling as attention sinks: " + "; ".join(parts) + "."


class NonFiniteStates(ModelError):
    """A layer produced NaN or infinite states."""


def pooling_weights(keep: torch.Tensor, poolings: Sequence[str],
                    pool: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pooling token weights (P, B, T) over the tokens in ``keep`` (B, T); each row sums to 1.
    ``weighted`` numbers positions within ``pool`` (the sentence's poolable tokens, default
    ``keep``), so leaving a sink out does not renumber the others."""
    keep_f = keep.float()
    out = []
    for pooling in poolings:
        if pooling == "mean":
            weights = keep_f
        elif pooling == "weighted":
            weights = (keep if pool is None else pool).float().cumsum(-1) * keep_f
        else:  # last kept token, whichever side the padding is on
            last = (keep_f * torch.arange(1, keep.shape[1] + 1, device=keep.device)).argmax(-1)
            weights = torch.zeros_like(keep_f).scatter_(1, last[:, None], 1.0)
        out.append(weights / weights.sum(-1, keepdim=True))
    return torch.stack(out)


class Extractor:
    """Pooled per-layer states of a loaded model for lists of sentences."""

    def __init__(self, loaded: LoadedModel, config: ExtractionConfig, padding_side: str = "right"):
        self.loaded = loaded
        self.config = config
        self.parts: DecoderParts = find_decoder(loaded.model)
        self.layers = check_layers(config.layers, self.parts.num_layers - 1)
        self.padding_side = padding_side
        self.sink_record = self.new_sink_record()
        self._takes_positions = "position_ids" in inspect.signature(self.parts.body.forward).parameters
        if not getattr(loaded.tokenizer, "is_fast", False) and config.template is not None:
            raise ModelError("templates need a fast tokenizer (character offsets); this one is slow")

    def new_sink_record(self) -> SinkRecord:
        """An empty record under this extraction's sink settings."""
        return SinkRecord(self.config.sinks, self.config.sink_ratio)

    def take_sink_record(self) -> SinkRecord:
        """What was left out since the last call (the record is reset)."""
        record, self.sink_record = self.sink_record, self.new_sink_record()
        return record

    # ---------------------------------------------------------------------------------- encoding

    def texts(self, sentences: Sequence[str]) -> tuple[list[str], list[int]]:
        """What is tokenised (each sentence in the template) and where each sentence starts."""
        template = self.config.template
        if template is None:
            return list(sentences), [0] * len(sentences)
        prefix = template.split(SENTENCE_SLOT)[0]
        return ([template.replace(SENTENCE_SLOT, s) for s in sentences],
                [len(prefix)] * len(sentences))

    def truncation(self, sentences: Sequence[str]) -> Truncation:
        """How many of ``sentences`` ``max_length`` cuts, and by how much at most."""
        limit = self.config.max_length
        lengths = [len(ids) for ids in self.loaded.tokenizer(
            self.texts(sentences)[0], add_special_tokens=True, truncation=False,
            verbose=False)["input_ids"]]
        cut = [length for length in lengths if length > limit]
        return Truncation(limit, len(lengths), len(cut),
                          min((limit / length for length in cut), default=1.0))

    def encode(self, sentences: Sequence[str]) -> Encoded:
        """Tokenise (with the template) and mark which tokens each pooling may use."""
        template = self.config.template
        texts, starts = self.texts(sentences)
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
        ids, masks, first_real, truncated = [], [], [], 0
        exclude = self.config.sinks == "exclude"
        for i, token_ids in enumerate(enc["input_ids"]):
            special = enc["special_tokens_mask"][i]
            keep = [not s for s in special]
            if use_offsets:
                start, end = starts[i], starts[i] + len(sentences[i])
                offsets = enc["offset_mapping"][i]
                keep = [k and a < end and b > start for k, (a, b) in zip(keep, offsets, strict=True)]
            first_is_real = not special[0]
            if not any(keep[first_is_real and exclude:]):
                why = (" once the first token is left out as an attention sink (the tokenizer adds "
                       "no BOS; --sinks keep pools it)" if any(keep) else "")
                raise DataError(f"sentence {i} ({sentences[i][:40]!r}) has no token to pool{why}")
            if len(token_ids) >= self.config.max_length:
                truncated += 1
            ids.append(token_ids)
            masks.append(keep)
            first_real.append(first_is_real)
        return Encoded(ids, masks, first_real, list(sentences), truncated)

    @staticmethod
    def batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
        """Indices sorted by length (longest first, stable) cut into batches: little padding."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    # ----------------------------------------------------------------------------------- forward

    def collate(self, encoded: Encoded, batch: Sequence[int], padding_side: str | None = None
                ) -> tuple[torch.Tensor, ...]:
        """ids, attention mask, pool mask and first-token mask (B, T), padded on
        ``padding_side`` (default: the extractor's)."""
        side = padding_side or self.padding_side
        width = max(len(encoded.input_ids[i]) for i in batch)
        pad_id = self.loaded.tokenizer.pad_token_id or 0
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.bool)
        pool = torch.zeros((len(batch), width), dtype=torch.bool)
        first = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, i in enumerate(batch):
            n = len(encoded.input_ids[i])
            cols = slice(0, n) if side == "right" else slice(width - n, width)
            ids[row, cols] = torch.tensor(encoded.input_ids[i])
            attention[row, cols] = True
            pool[row, cols] = torch.tensor(encoded.pool_masks[i])
            first[row, cols.start] = encoded.first_is_real[i]
        return ids, attention, pool, first

    def _sink_filter(self, norms: torch.Tensor, pool: torch.Tensor, first: torch.Tensor,
                     ids: torch.Tensor, positions: torch.Tensor, layer: int, record: SinkRecord
                     ) -> torch.Tensor:
        """The tokens to pool at this layer: ``pool`` less the first real token and any token
        whose norm exceeds ``sink_ratio`` × the median of the sentence's other pooled tokens."""
        candidates = pool & ~first
        median = norms.masked_fill(~candidates, float("nan")).nanmedian(-1).values[:, None]
        ratio = norms / median
        massive = candidates & (ratio > self.config.sink_ratio)
        has_first = first & pool
        if bool(has_first.any()):
            record.first_ratio_sum[layer] = (record.first_ratio_sum.get(layer, 0.0)
                                             + float(ratio[has_first].sum()))
        count = int(massive.sum())
        record.massive[layer] = record.massive.get(layer, 0) + count
        if count:
            record.massive_max_ratio[layer] = max(record.massive_max_ratio.get(layer, 0.0),
                                                  float(ratio[massive].max()))
            record.tokens.update(self._token_text(i) for i in ids[massive].tolist())
            record.positions.update(positions[massive].tolist())
        return candidates & ~massive

    def _token_text(self, token_id: int) -> str:
        """A token as text; a byte fragment (no text of its own) as the tokenizer's piece."""
        text = self.loaded.tokenizer.decode([token_id])
        return self.loaded.tokenizer.convert_ids_to_tokens(token_id) if "\ufffd" in text else text

    def run_batch(self, encoded: Encoded, batch: Sequence[int], stats: BatchStats | None = None,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled states of one batch: float32 tensor (poolings, layers, batch, hidden).
        ``weights`` (P, batch, tokens) replaces the poolings (and sink exclusion) with given
        weights over the padded tokens, e.g. one-hot rows that pick states at positions."""
        device = self.loaded.device
        ids, attention, pool, first = (t.to(device) for t in self.collate(encoded, batch))
        exclude = self.config.sinks == "exclude" and weights is None
        record = self.new_sink_record()
        record.sentences = len(batch)
        record.first_token = int((first & pool).any(-1).sum()) if exclude else 0
        fixed = (weights.to(device) if weights is not None
                 else None if exclude else pooling_weights(pool, self.config.poolings))
        # Positions count real tokens only, so left and right padding give the same states.
        positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
        pooled: dict[int, torch.Tensor] = {}
        last_layer = self.layers[-1]
        pad_rows = ~attention[..., None]

        def pool_layer(layer: int, hidden: torch.Tensor) -> None:
            if hidden.device != attention.device:  # a device-mapped model: blocks on several
                hidden = hidden.to(attention.device)
            hidden = hidden.float().masked_fill(pad_rows, 0.0)  # pad rows may hold NaN
            norms = hidden.norm(dim=-1)  # NaN or inf wherever any component is
            bad = attention & ~torch.isfinite(norms)
            if bool(bad.any()):
                self._non_finite(encoded, batch, layer, bad, positions)
            if fixed is None:
                keep = self._sink_filter(norms, pool, first, ids, positions, layer, record)
                weights = pooling_weights(keep, self.config.poolings, pool)
            else:
                weights = fixed
            pooled[layer] = torch.einsum("pbt,btd->pbd", weights, hidden)
            if layer == last_layer:
                raise StopForward

        def embedding_hook(_module, args, kwargs):
            pool_layer(0, args[0] if args else kwargs["hidden_states"])

        def block_hook(layer: int) -> Callable:
            def hook(_module, _inputs, output):
                pool_layer(layer, hidden_of(output))

            return hook

        blocks = self.parts.blocks
        installs = on_outputs(blocks, {layer: block_hook(layer) for layer in self.layers if layer})
        if self.layers[0] == 0:
            installs.append(lambda: blocks[0].register_forward_pre_hook(embedding_hook,
                                                                        with_kwargs=True))
        with hooked(installs), suppress(StopForward), torch.inference_mode():
            self.run_body(ids, attention)
        self.sink_record.merge(record)
        if stats is not None:
            real = int(attention.sum())
            stats.real_tokens += real
            stats.padded_tokens += attention.numel() - real
            stats.batches += 1
        return torch.stack([pooled[layer] for layer in self.layers], dim=1).cpu()

    def run_body(self, ids: torch.Tensor, attention: torch.Tensor) -> None:
        """The decoder body on a padded batch, positions counting real tokens only (so left
        and right padding give the same states); forward hooks collect what they need."""
        positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
        extra = {"position_ids": positions} if self._takes_positions else {}
        self.parts.body(input_ids=ids, attention_mask=attention.long(), use_cache=False, **extra)

    def _non_finite(self, encoded: Encoded, batch: Sequence[int], layer: int, bad: torch.Tensor,
                    positions: torch.Tensor) -> None:
        row, column = (int(v) for v in torch.nonzero(bad)[0])
        index, token = batch[row], int(positions[row, column])
        dtype = str(self.loaded.dtype).removeprefix("torch.")
        hint = (" float16 overflows in many LLMs (states reach ~3e4): use --dtype float32 or "
                "bfloat16" if self.loaded.dtype == torch.float16 else
                " Check the weights (a broken conversion or adapter) or try --dtype float32")
        raise NonFiniteStates(
            f"{self.loaded.name} ({dtype}) produced non-finite states at layer {layer} for "
            f"sentence {index} ({encoded.texts[index][:50]!r}), token {token} of {int(bad.sum())} "
            f"bad in this batch.{hint}")

    def iter_batches(self, encoded: Encoded, indices: Sequence[int], batch_size: int,
                     stats: BatchStats | None = None) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Yield (sentence indices, pooled states) over ``indices`` in length-sorted batches."""
        lengths = [len(encoded.input_ids[i]) for i in indices]
        for batch in self.batches(lengths, batch_size):
            chosen = [indices[j] for j in batch]
            yield chosen, self.run_batch(encoded, chosen, stats)

    def states_at(self, encoded: Encoded, picks: Sequence[Sequence[int]], batch_size: int = 32
                  ) -> torch.Tensor:
        """(layers, Σ picks, hidden): text i's states at its token indices ``picks[i]`` (in the
        order of the texts, then of the picks), one forward pass per batch of texts."""
        if self.padding_side != "right":
            raise ValueError("states_at picks padded columns: use right padding")
        offsets = [0]
        for chosen in picks:
            offsets.append(offsets[-1] + len(chosen))
        out = torch.empty(len(self.layers), offsets[-1], self.hidden_size)
        width = max((len(p) for p in picks), default=0)
        for batch in self.batches(encoded.lengths, batch_size):
            longest = max(encoded.lengths[i] for i in batch)
            weights = torch.zeros(width, len(batch), longest)
            for row, i in enumerate(batch):
                weights[range(len(picks[i])), row, list(picks[i])] = 1.0
            states = self.run_batch(encoded, batch, weights=weights)  # (width, L, B, d)
            for row, i in enumerate(batch):
                out[:, offsets[i] : offsets[i + 1]] = states[: len(picks[i]), :, row].transpose(0, 1)
        return out

    def extract(self, sentences: Sequence[str], batch_size: int = 32,
                stats: BatchStats | None = None) -> torch.Tensor:
        """Pooled states of ``sentences`` in their order: (poolings, layers, n, hidden), float32."""
        return self.extract_encoded(self.encode(sentences), batch_size, stats)

    def extract_encoded(self, encoded: Encoded, batch_size: int = 32,
                        stats: BatchStats | None = None) -> torch.Tensor:
        """``extract`` of texts encoded already (e.g. once, to be probed many times)."""
        n = len(encoded.texts)
        out = torch.empty(len(self.config.poolings), len(self.layers), n, self.hidden_size)
        for chosen, states in self.iter_batches(encoded, range(n), batch_size, stats):
            out[:, :, chosen] = states
        return out

    @property
    def hidden_size(self) -> int:
        return self.parts.embeddings.weight.shape[1]

