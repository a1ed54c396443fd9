"""Tokenization controls per model × language, from the run's own parallel text.

    fertility              the side's tokens / its group's English side's tokens (same sentences)
    chars_per_token        characters / tokens
    byte_fallback_share    share of tokens that are the unknown token or byte fallback: a
                           SentencePiece byte piece (``<0xE4>``) or a token that alone decodes to
                           an incomplete character (U+FFFD; byte-level BPE's split characters)
    type_overlap_english   share of the side's token types that also occur in English's
    script                 the FLORES code's script (``Latn``, ``Arab``)

Tokens are counted without special tokens (BOS/EOS). Low-resource languages are often both
poorly tokenized and poorly aligned: ``confound`` says when alignment and fertility correlate
across a run's languages, and ``probe.correlate`` partials these columns out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
from scipy.stats import spearmanr

from .analysis import english_peaks
from .data import ParallelCorpus
from .errors import DataError
from .languages import ENGLISH

FILE = "tokenization.csv"
COLUMNS = ["model", "side", "language", "script", "sentences", "tokens", "tokens_per_sentence",
           "fertility", "chars_per_token", "byte_fallback_share", "type_overlap_english"]
COVARIATES = ("fertility", "chars_per_token", "byte_fallback_share", "type_overlap_english")
CONFOUND_THRESHOLD = 0.7
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def script_of(code: str) -> str:
    """The script part of a FLORES code (``arb_Arab`` -> ``Arab``), else ``unknown``."""
    script = code.split("@")[0].partition("_")[2]
    return script or "unknown"


def token_ids(tokenizer: Any, sentences: list[str]) -> list[list[int]]:
    """Token ids of each sentence, no special tokens."""
    return tokenizer(list(sentences), add_special_tokens=False)["input_ids"]


def fallback_ids(tokenizer: Any, ids: set[int]) -> set[int]:
    """Which of ``ids`` are the unknown token or byte fallback (see the module docstring)."""
    unknown = tokenizer.unk_token_id
    out = set()
    for i in ids:
        piece = tokenizer.convert_ids_to_tokens(i)
        if (i == unknown or (isinstance(piece, str) and _BYTE_PIECE.fullmatch(piece))
                or "\ufffd" in tokenizer.decode([i])):
            out.add(i)
    return out


def tokenization_table(tokenizer: Any, model: str, corpus: ParallelCorpus) -> pd.DataFrame:
    """One row per side of ``corpus``; fertility and type overlap against the English side of
    the same aligned group (NaN where the group has none)."""
    ids = {key: token_ids(tokenizer, list(side.sentences)) for key, side in corpus.sides.items()}
    english = {side.group: key for key, side in corpus.sides.items() if side.language == ENGLISH}
    fallback = fallback_ids(tokenizer, {t for side in ids.values() for seq in side for t in seq})
    rows = []
    for key, side in corpus.sides.items():
        flat = [t for seq in ids[key] for t in seq]
        tokens = len(flat)
        chars = sum(len(s) for s in side.sentences)
        reference = english.get(side.group)
        if reference is not None:
            ref_tokens = sum(len(seq) for seq in ids[reference])
            ref_types = {t for seq in ids[reference] for t in seq}
            fertility = tokens / ref_tokens if ref_tokens else math.nan
            types = set(flat)
            overlap = len(types & ref_types) / len(types) if types else math.nan
        else:
            fertility = overlap = math.nan
        rows.append({"model": model, "side": key, "language": side.language,
                     "script": script_of(side.language), "sentences": len(side.sentences),
                     "tokens": tokens, "tokens_per_sentence": tokens / len(side.sentences),
                     "fertility": fertility,
                     "chars_per_token": chars / tokens if tokens else math.nan,
                     "byte_fallback_share": (sum(t in fallback for t in flat) / tokens
                                             if tokens else math.nan),
                     "type_overlap_english": overlap})
    return pd.DataFrame(rows, columns=COLUMNS)


def confound(alignment: Mapping[str, float], tokenization: pd.DataFrame,
             threshold: float = CONFOUND_THRESHOLD, what: str = "alignment") -> str | None:
    """A one-line warning when ``alignment`` (language -> score) and fertility are strongly
    rank-correlated (|Spearman| >= ``threshold``) across the languages other than English;
    None otherwise (or with fewer than 3 languages)."""
    fertility = (tokenization[tokenization.language != ENGLISH]
                 .groupby("language").fertility.mean().dropna())
    shared = [lang for lang in fertility.index if lang in alignment
              and math.isfinite(alignment[lang])]
    if len(shared) < 3:
        return None
    rho = float(spearmanr([alignment[x] for x in shared], fertility[shared]).statistic)
    if not math.isfinite(rho) or abs(rho) < threshold:
        return None
    return (f"{what} and tokenizer fertility are strongly correlated across the "
            f"{len(shared)} languages (Spearman {rho:+.2f}): a confound; see tokenization.csv "
            "and 'layer-analysis correlate' (partial correlations)")


def run_confound(table: pd.DataFrame, tokenization: pd.DataFrame) -> str | None:
    """``confound`` for an alignment run: each language's peak-layer centered P@1 (with
    English, both directions averaged) against its fertility."""
    try:
        peaks = english_peaks(table[(table.metric == "p@1") & (table.normalisation == "centered")])
    except DataError:
        return None
    return confound(dict(zip(peaks.language, peaks.value, strict=True)), tokenization,
                    what="peak-layer centered P@1")
