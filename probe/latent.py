"""Latent language per layer, in the style of Wendler et al. 2024 ("Do Llamas work in English?").

A few-shot prompt asks for a word in language X (``translation``: from a source language;
``repetition``: copy a word of X; ``cloze``: fill the blank in a sentence of X taken from a
corpus, e.g. FLORES). At every layer the logit lens gives, at the answer's position,
the probability of the answer's first token in X, of its English translation's first token, and
the entropy of the next-token distribution. A word's "first token" is the set of ids that can
start it: its first token *in context* (prompt and word tokenised together) and its first token
alone with and without a leading space (middle layers favour the spaced form); their
probabilities are summed. Concepts whose two sets share an id are left out (they cannot tell the
languages apart), and so are answers that merge with the prompt's closing quote; both are
reported.

Over running text (``sentence_latent``), the lens's top tokens at sampled positions of parallel
sentences are mapped to languages by a token → language table built from a corpus
(``token_languages``): per layer, the share of the next-token mass in the text's own language,
in English, in other languages and in shared tokens.

The word list (``data/lens/words.tsv``) is the project's own: 114 everyday concepts in English and
ten other languages, one row per concept, one column per language (FLORES codes).
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .data import DATA_ROOT, ParallelCorpus
from .errors import DataError
from .languages import ENGLISH, canonical, display_name
from .lens import LogitLens
from .metrics import bootstrap_ci
from .readers import numbered_lines
from .token_languages import TokenLanguages

WORDS = DATA_ROOT / "lens" / "words.tsv"
TASKS = ("translation", "repetition", "cloze")
BLANK = "___"
NO_SPACES = ("zho_Hans", "zho_Hant", "jpn_Jpan", "tha_Thai")  # words found as substrings
MEASURES = ("p_target", "p_english", "entropy")
ENDONYMS = {  # how the prompt names a language: in that language, as Wendler et al. do
    "eng_Latn": "English", "deu_Latn": "Deutsch", "fra_Latn": "Français", "spa_Latn": "Español",
    "rus_Cyrl": "Русский", "zho_Hans": "中文", "arb_Arab": "العربية", "hin_Deva": "हिन्दी",
    "ell_Grek": "Ελληνικά", "tur_Latn": "Türkçe", "vie_Latn": "Tiếng Việt",
}


@dataclass(frozen=True)
class WordList:
    """Concepts (keyed by their English word) with their word in each language."""

    languages: list[str]
    words: dict[str, dict[str, str]]  # concept -> language -> word

    def word(self, concept: str, language: str) -> str:
        word = self.words[concept].get(language, "")
        if not word:
            raise DataError(f"the word list has no {display_name(language)} word for {concept!r}")
        return word


def load_words(path: Path = WORDS) -> WordList:
    """Read a word list: a TSV with a header of languages (English among them), a row per concept."""
    rows = list(csv.reader((line for _, line in numbered_lines(path)), delimiter="\t"))
    if len(rows) < 2:
        raise DataError(f"the word list {path} holds no concepts")
    languages = [canonical(name, str(path)) for name in rows[0]]
    if len(set(languages)) != len(languages):
        raise DataError(f"{path}: a language appears twice in the header")
    if ENGLISH not in languages:
        raise DataError(f"{path}: the word list needs an English column (the concepts' names)")
    words: dict[str, dict[str, str]] = {}
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(languages):
            raise DataError(f"{path}, line {number}: {len(row)} columns, the header has "
                            f"{len(languages)}")
        entry = {x: w.strip() for x, w in zip(languages, row, strict=True)}
        concept = entry[ENGLISH]
        if not concept:
            raise DataError(f"{path}, line {number}: no English word (the concept's name)")
        if concept in words:
            raise DataError(f"{path}, line {number}: concept {concept!r} listed twice")
        words[concept] = entry
    return WordList(languages, words)


@dataclass(frozen=True)
class WordProbe:
    """One prompt and the token sets read at its answer position: the ways the answer (in the
    target language) and its English translation can start."""

    concept: str
    prompt: str
    target_tokens: tuple[int, ...]
    english_tokens: tuple[int, ...]


def _name(language: str) -> str:
    return ENDONYMS.get(language, display_name(language))


def prompt_for(task: str, words: WordList, concept: str, examples: Sequence[str], source: str,
               target: str, blanks: dict[str, str] | None = None) -> str:
    """The few-shot prompt, ending where the answer (``concept`` in ``target``) would start.
    ``cloze`` lines are a sentence of the target language with the word blanked, then the word:
    ``"Die ___ scheint." → "Sonne"`` (no language named, so no English word in the frame)."""
    given = source if task == "translation" else target

    def line(c: str) -> str:
        if task == "cloze":
            return f'"{(blanks or {})[c]}" → "'
        return f'{_name(given)}: "{words.word(c, given)}" - {_name(target)}: "'

    return "\n".join([line(c) + words.word(c, target) + '"' for c in examples] + [line(concept)])


def cloze_sentences(words: WordList, sentences: Sequence[str], target: str) -> dict[str, str]:
    """For each concept whose ``target`` word occurs in one of ``sentences`` (as a whole word;
    a substring in scripts written without spaces): the first such sentence, the word blanked."""
    found = {}
    for concept, entry in words.words.items():
        word = entry.get(target, "")
        if not word:
            continue
        pattern = re.compile(re.escape(word) if target in NO_SPACES
                             else rf"(?<!\w){re.escape(word)}(?!\w)")
        for sentence in sentences:
            if pattern.search(sentence) and BLANK not in sentence:
                found[concept] = pattern.sub(BLANK, sentence, count=1)
                break
    return found


def first_token(tokenizer, prompt: str, answer: str) -> int | None:
    """The id that starts ``answer`` right after ``prompt`` (tokenised together), or None when
    the answer's first characters merge into the prompt's last token."""
    before = tokenizer(prompt)["input_ids"]
    after = tokenizer(prompt + answer)["input_ids"]
    if len(after) <= len(before) or after[: len(before)] != before:
        return None
    return after[len(before)]


def starting_tokens(tokenizer, prompt: str, word: str) -> tuple[int, ...]:
    """The ids a layer may use to start ``word``: its first token in context, and alone with and
    without a leading space (as Wendler et al. count a word's prefixes); whitespace-only tokens
    are left out (they start every word)."""
    ids = [first_token(tokenizer, prompt, word)]
    for text in (word, " " + word):
        alone = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.append(alone[0] if alone else None)
    return tuple(dict.fromkeys(i for i in ids if i is not None
                               and tokenizer.decode([i]).strip()))


def build_probes(words: WordList, tokenizer, task: str, source: str, target: str, shots: int = 4,
                 limit: int | None = None, seed: int = 0, blanks: dict[str, str] | None = None
                 ) -> tuple[list[WordProbe], list[dict[str, str]]]:
    """The prompts of one task and target language, and the concepts left out (with why);
    ``cloze`` needs ``blanks`` (``cloze_sentences``) and uses the concepts that have one."""
    if task not in TASKS:
        raise DataError(f"unknown lens task {task!r}; choose from {', '.join(TASKS)}")
    for language in {source, target}:
        if language not in words.languages:
            raise DataError(f"the word list has no {display_name(language)} column (it has "
                            f"{', '.join(words.languages)})")
    if target == ENGLISH:
        raise DataError("English is the reference the lens compares with; choose other targets")
    concepts = list(words.words)[:limit]
    skipped = []
    if task == "cloze":
        skipped = [{"task": task, "target": target, "concept": c,
                    "reason": "no sentence of the data holds the word"}
                   for c in concepts if c not in (blanks or {})]
        concepts = [c for c in concepts if c in (blanks or {})]
    if len(concepts) < shots + 2:
        raise DataError(f"{len(concepts)} concepts are too few for {shots}-shot {task} prompts"
                        + (f" in {display_name(target)}" if task == "cloze" else ""))
    unknown = getattr(tokenizer, "unk_token_id", None)
    probes = []
    rng = random.Random(seed)
    for concept in concepts:
        examples = rng.sample([c for c in concepts if c != concept], shots)
        prompt = prompt_for(task, words, concept, examples, source, target, blanks)
        answer = starting_tokens(tokenizer, prompt, words.word(concept, target))
        english = starting_tokens(tokenizer, prompt, words.word(concept, ENGLISH))
        if unknown is not None and unknown in (*answer, *english):
            raise DataError(f"{concept!r}: the tokenizer has no token for the start of the "
                            f"{display_name(target)} or English word (unknown token)")
        if first_token(tokenizer, prompt, words.word(concept, target)) is None:
            why = "the word merges with the prompt's closing quote"
        elif set(answer) & set(english):
            why = "the word and its English translation can start with the same token"
        else:
            why = None
        if why:
            skipped.append({"task": task, "target": target, "concept": concept, "reason": why})
            continue
        probes.append(WordProbe(concept, prompt, answer, english))
    return probes, skipped


def word_probe_table(lens: LogitLens, probes: Sequence[WordProbe], bootstrap: int = 1000,
                     seed: int = 0, batch_size: int = 16, translator=None
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per layer: mean probability of the answer's and of English's first token and the mean
    entropy over concepts, each with a 95 % bootstrap CI over concepts (tidy); and per layer the
    most frequent top-1 token of the lens with its share of prompts (what the layer "says")."""
    if len(probes) < 2:
        raise DataError(f"{len(probes)} usable concept(s): too few for curves with CIs")
    readout = lens.readout([p.prompt for p in probes],
                           [[p.target_tokens, p.english_tokens] for p in probes],
                           batch_size=batch_size, translator=translator)
    values = torch.stack([readout.probs[..., 0], readout.probs[..., 1], readout.entropy])
    low, high = bootstrap_ci(values, bootstrap, seed=seed)  # (measures, layers)
    mean = values.mean(-1)
    table = pd.DataFrame([
        {"layer": layer, "measure": measure, "value": float(mean[m, i]),
         "ci_low": float(low[m, i]), "ci_high": float(high[m, i]), "concepts": len(probes)}
        for m, measure in enumerate(MEASURES) for i, layer in enumerate(readout.layers)])
    top = []
    for i, layer in enumerate(readout.layers):
        ids, counts = readout.top[i, :, 0].unique(return_counts=True)
        best = int(counts.argmax())
        top.append({"layer": layer, "token_id": int(ids[best]),
                    "share": float(counts[best]) / len(probes)})
    return table, pd.DataFrame(top)


SENTENCE_MEASURES = ("p_target", "p_english", "p_other", "p_shared", "entropy")


def sentence_latent(lens: LogitLens, corpus: ParallelCorpus, token_languages: TokenLanguages,
                    positions: int = 4, top_k: int = 10, bootstrap: int = 1000, seed: int = 0,
                    batch_size: int = 16, translator=None) -> pd.DataFrame:
    """Per non-English side and layer: how the logit lens's top-``top_k`` next-token mass at
    sampled positions of its sentences divides between the text's own language (``p_target``),
    English, other languages and shared tokens (token → language from ``token_languages``),
    and the entropy; means over positions with 95 % bootstrap CIs (tidy)."""
    vocabulary = lens.head.weight.shape[0]
    index = token_languages.index(vocabulary)
    shared = len(token_languages.languages)
    rows = []
    for side in corpus.sides.values():
        if side.language == ENGLISH:
            continue
        if side.language not in token_languages.languages:
            raise DataError(f"the token-language table has no {display_name(side.language)}: "
                            "build it from data in that language")
        states, _ = lens.position_states(list(side.sentences), positions, seed, batch_size)
        readout = lens.read_states(states, top_k=top_k, batch_size=batch_size,
                                   translator=translator)
        mass = readout.top_probs / readout.top_probs.sum(-1, keepdim=True)  # (L, n, k)
        owner = index[readout.top]  # (L, n, k) language index of each top token
        own = token_languages.languages.index(side.language)
        english = (token_languages.languages.index(ENGLISH)
                   if ENGLISH in token_languages.languages else -1)
        parts = [(mass * (owner == own)).sum(-1), (mass * (owner == english)).sum(-1)]
        parts.append((mass * (owner == shared)).sum(-1))
        parts.insert(2, 1 - parts[0] - parts[1] - parts[2])  # other languages
        values = torch.stack([*parts, readout.entropy])  # (measures, L, n)
        low, high = bootstrap_ci(values, bootstrap, seed=seed)
        mean = values.mean(-1)
        rows += [{"target": side.language, "layer": layer, "measure": measure,
                  "value": float(mean[m, i]), "ci_low": float(low[m, i]),
                  "ci_high": float(high[m, i]), "concepts": values.shape[-1]}
                 for m, measure in enumerate(SENTENCE_MEASURES)
                 for i, layer in enumerate(readout.layers)]
    return pd.DataFrame(rows)
