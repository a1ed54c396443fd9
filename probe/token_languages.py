"""Which language each vocabulary token belongs to, from how often it occurs in each language's
text of a parallel corpus (relative frequencies, so a language with longer sentences does not
claim more tokens). A token whose frequency share is below ``min_share`` for every language, or
that occurs fewer than ``min_count`` times, belongs to none ("shared": digits, punctuation,
pieces common to several languages)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pandas as pd
import torch

from .data import ParallelCorpus
from .errors import DataError


@dataclass(frozen=True)
class TokenLanguages:
    """The assignment of token ids to languages, and the counts it came from."""

    languages: list[str]
    language_of: dict[int, str]  # only tokens assigned to a language
    table: pd.DataFrame  # token_id, token, count, language ('' = shared), share

    def index(self, vocabulary: int) -> torch.Tensor:
        """(vocabulary,) language index per token id (len(languages) = shared or unseen)."""
        out = torch.full((vocabulary,), len(self.languages), dtype=torch.long)
        position = {x: i for i, x in enumerate(self.languages)}
        for token, language in self.language_of.items():
            if token < vocabulary:
                out[token] = position[language]
        return out


def build_token_languages(tokenizer, corpus: ParallelCorpus, min_share: float = 0.5,
                          min_count: int = 3) -> TokenLanguages:
    """Count every token of every side (special tokens excluded) and assign it to the language
    holding at least ``min_share`` of its relative frequency."""
    if not 0.5 <= min_share <= 1:
        raise DataError(f"min_share must be in [0.5, 1] (one language at most), got {min_share}")
    counts: dict[str, Counter] = {}
    for side in corpus.sides.values():
        ids = tokenizer(list(side.sentences), add_special_tokens=False)["input_ids"]
        counts.setdefault(side.language, Counter()).update(t for row in ids for t in row)
    languages = list(counts)
    if len(languages) < 2:
        raise DataError("a token-language table needs text in two or more languages")
    tokens = sorted(set().union(*counts.values()))
    frame = pd.DataFrame({x: [counts[x][t] for t in tokens] for x in languages}, index=tokens)
    relative = frame / frame.sum(axis=0)
    share = relative.div(relative.sum(axis=1), axis=0)
    best, best_share = share.idxmax(axis=1), share.max(axis=1)
    total = frame.sum(axis=1)
    assigned = (best_share >= min_share) & (total >= min_count)
    table = pd.DataFrame({
        "token_id": tokens, "token": tokenizer.convert_ids_to_tokens(tokens),
        "count": total.to_numpy(), "language": best.where(assigned, "").to_numpy(),
        "share": best_share.round(4).to_numpy()})
    language_of = {int(t): x for t, x, keep in zip(tokens, best, assigned, strict=True) if keep}
    return TokenLanguages(languages, language_of, table)
