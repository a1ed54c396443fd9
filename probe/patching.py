"""Cross-lingual activation patching (Dumas et al., ACL 2025, "Separating Tongue from Thought").

A *source* few-shot word-translation prompt translates concept C from language A to B; a
*target* prompt translates C′ from A′ to B′ (the lens's prompts, ``latent.prompt_for``, with the
same solved examples in both). For each layer l the target runs with the state at its last
position (the output of block l: layer l, 1..blocks, the project's numbering) replaced by the
source's, and the output distribution is read at that position: the probability of each of four
first-token sets (``latent.starting_tokens`` on the target prompt, summed as the lens does):

    p_target   P(C′ in B′)  nothing moved
    p_concept  P(C in B′)   the concept moved, the language stayed
    p_both     P(C in B)    both moved
    p_language P(C′ in B)   only the language moved

Modes: ``single`` patches layer l alone; ``onward`` patches every layer from l to the last with
the source's state there. At the last position ``onward`` includes layer L, the state the output
is read from, so its output is the source's own at every l: it is kept as the check Dumas et
al.'s code allows, not as a finding.

Conditions, each a replacement state per pair and layer: ``patch`` (the source's latent),
``mean`` (the mean of C's latents over k ≥ 2 source languages A₁…A_k → B), and the controls
``random_concept`` (a prompt with a random other concept C″ in A → B), ``random_direction`` (a
seeded random vector with the norm of the source's latent) and ``self`` (the target's own state:
it must change nothing, bit for bit). Effects are paired differences per concept pair against
each control, with 95 % percentile bootstrap CIs over concept pairs (``metrics.bootstrap_ci``).

Switch layers (per concept pair, from the ``single`` curves of a condition, over the layers
patched): the *language* switch is the first layer from which on (at it and every later layer
patched) the output puts more mass on the source's output language than on the target's,
p_both + p_language > p_target + p_concept; the *concept* switch the first layer from which on
it puts more mass on the source's concept, p_concept + p_both > p_target + p_language. A pair
whose inequality fails at the last layer has no switch (counted, left out of the mean).

Speed: the source prompts (patch, controls, every mean language) run as one batched pass that
captures the last position at every layer needed and stops after the deepest; the target's
baseline pass captures its own states for the self-patch; then each condition × layer is one
batched forward of the targets, in the same batches as the baseline (so a self-patch is
bit-identical). A patch at the last position changes nothing before it, so each target batch's
prefix (all but its last token, left-padded) runs once and is kept as a key/value cache; the
baseline and every patched pass are then one-token forwards on a copy of it (models whose
positions cannot be passed run the whole prompt each time). On the packaged models the cached
and the whole-prompt probabilities agree to 1e-6.
"""

from __future__ import annotations

import copy
import inspect
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from .errors import DataError
from .extract import Encoded
from .hooks import StopForward, check_layers, editing, hidden_of, hooked, on_outputs
from .interventions import random_direction
from .languages import display_name
from .latent import WordList, first_token, prompt_for, starting_tokens
from .lens import LogitLens
from .metrics import bootstrap_ci

MEASURES = ("p_target", "p_concept", "p_both", "p_language")
MODES = ("single", "onward")
CONDITIONS = ("patch", "mean", "random_concept", "random_direction", "self")
CONTROLS = ("random_concept", "random_direction", "self")
SWITCHES = ("language", "concept")


@dataclass(frozen=True)
class Setting:
    """The source prompts translate A → B, the target prompts A′ → B′ (FLORES codes)."""

    source_in: str
    source_out: str
    target_in: str
    target_out: str

    @property
    def label(self) -> str:
        def short(x: str) -> str:
            return x.split("_")[0]
        return (f"{short(self.source_in)}>{short(self.source_out)} into "
                f"{short(self.target_in)}>{short(self.target_out)}")


def check_setting(setting: Setting, words: WordList, mean_languages: Sequence[str]) -> None:
    """Every language has a word-list column; the prompts can differ in language; the mean has
    k ≥ 2 distinct source languages, none of them the source's output language."""
    languages = [setting.source_in, setting.source_out, setting.target_in, setting.target_out,
                 *mean_languages]
    missing = [x for x in dict.fromkeys(languages) if x not in words.languages]
    if missing:
        raise DataError(f"the word list has no {', '.join(display_name(x) for x in missing)} "
                        f"column (it has {', '.join(words.languages)})")
    if setting.source_in == setting.source_out or setting.target_in == setting.target_out:
        raise DataError(f"{setting.label}: a prompt translates a language into itself")
    if setting.source_out == setting.target_out:
        raise DataError(f"{setting.label}: source and target prompts answer in the same "
                        f"language ({display_name(setting.target_out)}), so the output language "
                        "cannot switch (with the same input language too the prompts would be "
                        "identical but for the concept); choose another target output")
    if len(mean_languages) < 2 or len(set(mean_languages)) != len(mean_languages):
        raise DataError(f"mean-latent patching needs at least 2 different source languages, got "
                        f"{', '.join(mean_languages) or 'none'}")
    if setting.source_out in mean_languages:
        raise DataError(f"{setting.label}: the mean's source languages include the output "
                        f"language {display_name(setting.source_out)}")


@dataclass(frozen=True)
class PatchPair:
    """One concept pair of a setting: its prompts and the four token sets (``MEASURES``' order)
    read after the target prompt."""

    target_concept: str  # C′
    source_concept: str  # C
    control_concept: str  # C″, the random-concept control
    target_prompt: str
    source_prompt: str
    control_prompt: str
    mean_prompts: tuple[str, ...]  # C from each mean language into B
    token_sets: tuple[tuple[int, ...], ...]


def build_pairs(words: WordList, tokenizer, setting: Setting, mean_languages: Sequence[str],
                shots: int = 4, limit: int | None = None, seed: int = 0
                ) -> tuple[list[PatchPair], list[dict[str, str]]]:
    """One pair per target concept C′ (the first ``limit`` concepts), its source concept C drawn
    by a seeded derangement, its control concept C″ ≠ C, C′ at random; every prompt of a pair
    shares its ``shots`` solved examples (none of C, C′, C″). Returns the pairs and those left
    out with why (colliding first-token sets, an answer merging with the prompt's quote)."""
    concepts = list(words.words)[:limit]
    if len(concepts) < shots + 3:
        raise DataError(f"{len(concepts)} concepts are too few for {shots}-shot prompts of three "
                        "different concepts (target, source, control)")
    rng = random.Random(seed)
    order = list(range(len(concepts)))
    while any(i == j for i, j in enumerate(order)):
        rng.shuffle(order)
    s = setting
    unknown = getattr(tokenizer, "unk_token_id", None)
    pairs, skipped = [], []
    for i, target in enumerate(concepts):
        source = concepts[order[i]]
        control = rng.choice([c for c in concepts if c not in (target, source)])
        examples = rng.sample([c for c in concepts if c not in (target, source, control)], shots)

        def prompt(concept: str, given: str, answer: str, ex: list[str] = examples) -> str:
            return prompt_for("translation", words, concept, ex, given, answer)

        target_prompt = prompt(target, s.target_in, s.target_out)
        source_prompt = prompt(source, s.source_in, s.source_out)
        if source_prompt == target_prompt:
            raise DataError(f"{s.label}: source and target prompts for {target!r} are identical")
        cells = [(target, s.target_out), (source, s.target_out), (source, s.source_out),
                 (target, s.source_out)]
        sets = [starting_tokens(tokenizer, target_prompt, words.word(c, x)) for c, x in cells]
        why = None
        if first_token(tokenizer, target_prompt, words.word(target, s.target_out)) is None:
            why = "the answer merges with the prompt's closing quote"
        elif unknown is not None and any(unknown in ids for ids in sets):
            why = "the tokenizer has no token for the start of a word (unknown token)"
        elif any(not ids for ids in sets):
            why = "a word has no first token"
        else:
            clashes = [f"{MEASURES[a]}/{MEASURES[b]}" for a in range(4) for b in range(a + 1, 4)
                       if set(sets[a]) & set(sets[b])]
            if clashes:
                why = "first-token sets collide: " + ", ".join(clashes)
        if why:
            skipped.append({"setting": s.label, "target_concept": target,
                            "source_concept": source, "reason": why})
            continue
        pairs.append(PatchPair(
            target, source, control, target_prompt, source_prompt,
            prompt(control, s.source_in, s.source_out),
            tuple(prompt(source, x, s.source_out) for x in mean_languages), tuple(sets)))
    return pairs, skipped


# ------------------------------------------------------------------------------ the forward


@contextmanager
def replaced_last(blocks: torch.nn.ModuleList, last: torch.Tensor,
                  states: dict[int, torch.Tensor]) -> Iterator[None]:
    """Inside the block, the output of block l at row r's position ``last[r]`` is
    ``states[l][r]`` (layers 1..blocks); the hooks are removed on exit, whatever happens."""
    if states:
        check_layers(list(states), len(blocks), first=1, acting="patching acts")

    def edit_for(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def edit(hidden: torch.Tensor) -> torch.Tensor:
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            out = hidden.clone()
            out[rows, last.to(hidden.device)] = states[layer].to(hidden.device, hidden.dtype)
            return out
        return edit

    with hooked(on_outputs(blocks, {layer: editing(edit_for(layer)) for layer in states})):
        yield


class Patcher:
    """Batched last-position passes of a loaded model: capture states, patch them, read the
    output distribution (through the lens's final norm and head: equal to the model's logits)."""

    def __init__(self, lens: LogitLens, reuse_prefix: bool = True):
        self.lens = lens
        self.extractor = lens.extractor
        self.blocks = self.extractor.parts.blocks
        # A patch at the last position changes nothing before it (causal attention), so the
        # prompt's prefix runs once per batch and every reading pass is a one-token forward on
        # its key/value cache. Only for models whose positions can be given (left padding).
        self.reuse_prefix = reuse_prefix and self.extractor._takes_positions
        taken = inspect.signature(self.extractor.parts.body.forward).parameters
        self._cache_argument = "cache" if "cache" in taken else "past_key_values"  # 5.x renamed it
        self._prefixes: tuple[Encoded, dict[tuple[int, ...], Any]] | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def encode(self, prompts: Sequence[str]) -> Encoded:
        encoded = self.extractor.encode(prompts)
        if encoded.truncated:
            raise DataError(f"{encoded.truncated} prompt(s) reach the limit of "
                            f"{self.extractor.config.max_length} tokens; use fewer shots")
        return encoded

    def run(self, encoded: Encoded, batch_size: int, capture: Sequence[int] = (),
            patches: dict[int, torch.Tensor] | None = None,
            token_sets: Sequence[Sequence[Sequence[int]]] | None = None
            ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
        """Over every prompt of ``encoded`` (length-sorted batches, always the same ones): the
        states at the last position after each layer of ``capture`` ((n, hidden), the model's
        dtype, after any patch), and with ``token_sets`` the output probability of each set
        ((n, sets), float32; without them the pass stops after the deepest captured layer).
        ``patches[l]`` (n, hidden) replaces the last position's state after block l."""
        n = len(encoded.texts)
        patches = patches or {}
        wanted = sorted(set(capture) | ({self.num_blocks} if token_sets is not None else set()))
        check_layers(wanted, self.num_blocks, first=1, acting="patching acts")
        captured = {layer: None for layer in wanted}
        probs = None
        if token_sets is not None:
            width = max(len(ids) for sets in token_sets for ids in sets)
            asked = torch.zeros(n, len(token_sets[0]), width, dtype=torch.long)
            mask = torch.zeros(asked.shape, dtype=torch.bool)
            for i, sets in enumerate(token_sets):
                for j, ids in enumerate(sets):
                    asked[i, j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    mask[i, j, : len(ids)] = True
            probs = torch.empty(n, asked.shape[1])
        stop = max(wanted) if token_sets is None else None
        cached = (token_sets is not None and self.reuse_prefix
                  and min(encoded.lengths) > 1)
        for batch in self.extractor.batches(encoded.lengths, batch_size):
            if cached:
                ids, attention, positions, prefix = self._prefix(encoded, batch)
                last = torch.zeros(len(batch), dtype=torch.long)
            else:
                ids, attention, _, _ = self.extractor.collate(encoded, batch)
                ids = ids.to(self.lens.loaded.device)
                attention = attention.to(self.lens.loaded.device)
                last = attention.long().sum(-1) - 1
            taken: dict[int, torch.Tensor] = {}

            def take(layer: int, taken: dict = taken, last: torch.Tensor = last) -> Callable:
                def hook(_module, _inputs, output):
                    hidden = hidden_of(output)
                    rows = torch.arange(hidden.shape[0], device=hidden.device)
                    taken[layer] = hidden[rows, last.to(hidden.device)].detach().cpu()
                    if layer == stop:
                        raise StopForward
                return hook

            with replaced_last(self.blocks, last, {j: s[batch] for j, s in patches.items()}), \
                    hooked(on_outputs(self.blocks, {layer: take(layer) for layer in wanted})), \
                    suppress(StopForward), torch.inference_mode():
                if cached:  # the last token alone, on a copy of the prefix's cache
                    self.extractor.parts.body(
                        input_ids=ids[:, -1:], attention_mask=attention.long(),
                        position_ids=positions[:, -1:], use_cache=True,
                        **{self._cache_argument: copy.deepcopy(prefix)})
                else:
                    self.extractor.run_body(ids, attention)
            for layer in wanted:
                if captured[layer] is None:
                    captured[layer] = torch.empty(n, taken[layer].shape[-1],
                                                  dtype=taken[layer].dtype)
                captured[layer][batch] = taken[layer]
            if probs is not None:
                p = self.lens.log_probs(taken[self.num_blocks]).cpu().exp()
                picked = p.gather(1, asked[batch].flatten(1)).view(asked[batch].shape)
                probs[batch] = (picked * mask[batch]).sum(-1)
        return {layer: captured[layer] for layer in capture}, probs

    def _prefix(self, encoded: Encoded, batch: Sequence[int]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Left-padded ids, attention and positions of a batch (its last token in the last
        column) and the key/value cache of everything before that token, computed once per
        batch of the latest ``encoded`` prompts and kept."""
        device = self.lens.loaded.device
        ids, attention, _, _ = self.extractor.collate(encoded, batch, padding_side="left")
        ids, attention = ids.to(device), attention.to(device)
        positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
        if self._prefixes is None or self._prefixes[0] is not encoded:
            self._prefixes = (encoded, {})
        kept = self._prefixes[1]
        if tuple(batch) not in kept:
            with torch.inference_mode():
                out = self.extractor.parts.body(
                    input_ids=ids[:, :-1], attention_mask=attention[:, :-1].long(),
                    position_ids=positions[:, :-1], use_cache=True)
            cache = getattr(out, "cache", None)
            kept[tuple(batch)] = cache if cache is not None else out.past_key_values
        return ids, attention, positions, kept[tuple(batch)]


# ------------------------------------------------------------------------------ experiment


@dataclass
class PatchResult:
    """Probabilities of one setting: ``probs[condition][mode]`` is (layers, pairs, measures);
    ``baseline`` (pairs, measures) is the unpatched target."""

    layers: list[int]
    baseline: torch.Tensor
    probs: dict[str, dict[str, torch.Tensor]]
    self_identical: bool
    self_max_change: float
    prompt_forwards: int = 0  # prompts run through the model, source pass included


def patch_experiment(patcher: Patcher, pairs: Sequence[PatchPair], layers: Sequence[int],
                     modes: Sequence[str] = ("single",), batch_size: int = 16, seed: int = 0,
                     say: Callable[[str], None] = lambda _: None) -> PatchResult:
    """Every condition of ``CONDITIONS`` at every layer and mode over ``pairs``."""
    layers = check_layers(layers, patcher.num_blocks, first=1, acting="patching acts")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise DataError(f"unknown patching mode {unknown or '(none)'}; choose from "
                        f"{', '.join(MODES)}")
    if len(pairs) < 2:
        raise DataError(f"{len(pairs)} usable concept pair(s): too few for CIs")
    needed = (list(range(layers[0], patcher.num_blocks + 1)) if "onward" in modes else layers)
    # One batched pass over every source prompt (deduplicated), stopping after the deepest layer.
    prompts = list(dict.fromkeys(p for pair in pairs for p in
                                 (pair.source_prompt, pair.control_prompt, *pair.mean_prompts)))
    index = {p: i for i, p in enumerate(prompts)}
    say(f"source pass: {len(prompts)} prompts, layers {needed[0]}..{needed[-1]}")
    sources, _ = patcher.run(patcher.encode(prompts), batch_size, capture=needed)

    def pick(field: Callable[[PatchPair], str]) -> dict[int, torch.Tensor]:
        rows = torch.tensor([index[field(pair)] for pair in pairs])
        return {layer: sources[layer][rows] for layer in needed}

    targets = patcher.encode([pair.target_prompt for pair in pairs])
    sets = [pair.token_sets for pair in pairs]
    own, baseline = patcher.run(targets, batch_size, capture=needed, token_sets=sets)
    patch = pick(lambda pair: pair.source_prompt)
    k = len(pairs[0].mean_prompts)
    mean = {layer: torch.stack([pick(lambda pair, j=j: pair.mean_prompts[j])[layer]
                                for j in range(k)]).float().mean(0).to(patch[layer].dtype)
            for layer in needed}
    replacements = {
        "patch": patch, "mean": mean, "random_concept": pick(lambda pair: pair.control_prompt),
        "random_direction": {layer: torch.stack([
            random_direction(state, seed=seed + 100_003 * layer + i)
            for i, state in enumerate(patch[layer])]).to(patch[layer].dtype) for layer in needed},
        "self": own}
    probs: dict[str, dict[str, torch.Tensor]] = {c: {} for c in CONDITIONS}
    worst = 0.0
    for mode in modes:
        for condition in CONDITIONS:
            say(f"{mode}: {condition} at {len(layers)} layers")
            out = torch.empty(len(layers), len(pairs), len(MEASURES))
            for i, layer in enumerate(layers):
                chosen = [layer] if mode == "single" else [j for j in needed if j >= layer]
                _, out[i] = patcher.run(targets, batch_size, token_sets=sets, patches={
                    j: replacements[condition][j] for j in chosen})
            probs[condition][mode] = out
        worst = max(worst, float((probs["self"][mode] - baseline).abs().max()))
    identical = all(torch.equal(probs["self"][m], baseline.expand_as(probs["self"][m]))
                    for m in modes)
    forwards = len(prompts) + len(pairs) * (1 + len(modes) * len(CONDITIONS) * len(layers))
    return PatchResult(layers, baseline, probs, identical, worst, forwards)


# ------------------------------------------------------------------------------ statistics


def _ci_row(values: torch.Tensor, bootstrap: int, seed: int) -> dict[str, float]:
    """Mean and 95 % bootstrap CI of a 1-D tensor (NaN CI below two values)."""
    if len(values) == 0:
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    if len(values) < 2:
        return {"value": float(values.mean()), "ci_low": float("nan"), "ci_high": float("nan")}
    low, high = bootstrap_ci(values, bootstrap, seed=seed)
    return {"value": float(values.float().mean()), "ci_low": float(low), "ci_high": float(high)}


def patch_table(result: PatchResult, bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Tidy rows ``mode, condition, control, layer, measure, value, ci_low, ci_high, pairs``:
    each condition's mean probability (``control`` empty), the unpatched target
    (condition ``none``), each of ``patch`` and ``mean`` minus each control (paired per concept
    pair), and ``mean`` minus ``patch``."""
    rows = []
    n = result.baseline.shape[0]
    comparisons = [(c, "") for c in CONDITIONS] + [
        (c, control) for c in ("patch", "mean") for control in CONTROLS] + [("mean", "patch")]
    for mode in next(iter(result.probs.values())):
        for i, layer in enumerate(result.layers):
            for m, measure in enumerate(MEASURES):
                base = {"mode": mode, "layer": layer, "measure": measure, "pairs": n}
                values = result.baseline[:, m]
                low, high = bootstrap_ci(values, bootstrap, seed=seed)
                rows.append({**base, "condition": "none", "control": "",
                             "value": float(values.mean()), "ci_low": float(low),
                             "ci_high": float(high)})
                for condition, control in comparisons:
                    values = result.probs[condition][mode][i, :, m]
                    if control:
                        values = values - result.probs[control][mode][i, :, m]
                    rows.append({**base, "condition": condition, "control": control,
                                 **_ci_row(values, bootstrap, seed)})
    columns = ["mode", "condition", "control", "layer", "measure", "value", "ci_low", "ci_high",
               "pairs"]
    return pd.DataFrame(rows)[columns]


def switch_layers(probs: torch.Tensor, layers: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per pair (NaN: none) the language and concept switch layers of (layers, pairs, measures)
    curves, as the module docstring defines them."""
    p = {m: probs[..., i] for i, m in enumerate(MEASURES)}
    wins = {"language": p["p_both"] + p["p_language"] > p["p_target"] + p["p_concept"],
            "concept": p["p_concept"] + p["p_both"] > p["p_target"] + p["p_language"]}
    out = {}
    for name, win in wins.items():  # (layers, pairs)
        # from this layer on: every later layer wins too (a reversed cumulative "and")
        holds = win.flip(0).long().cumprod(0).flip(0).bool()
        first = torch.full((win.shape[1],), float("nan"))
        for pair in range(win.shape[1]):
            where = holds[:, pair].nonzero()
            if len(where):
                first[pair] = float(layers[int(where[0])])
        out[name] = first
    return out


def switch_table(result: PatchResult, bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per condition (``patch``, ``mean``; ``single`` mode): the mean language and concept
    switch layers over the pairs that have one, and the paired difference concept − language
    over the pairs that have both, each with a 95 % bootstrap CI; ``defined``: how many pairs."""
    rows = []
    if "single" not in result.probs["patch"]:
        return pd.DataFrame(columns=["condition", "switch", "value", "ci_low", "ci_high",
                                     "defined", "pairs"])
    n = result.baseline.shape[0]
    for condition in ("patch", "mean"):
        switches = switch_layers(result.probs[condition]["single"], result.layers)
        both = switches["concept"] - switches["language"]
        for name, values in [*switches.items(), ("concept - language", both)]:
            kept = values[~values.isnan()]
            rows.append({"condition": condition, "switch": name,
                         **_ci_row(kept, bootstrap, seed), "defined": len(kept), "pairs": n})
    return pd.DataFrame(rows)
