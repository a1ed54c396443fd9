"""SIB-200 (Adelani et al. 2024): topic labels of FLORES-200 sentences in 205 languages.

Layout (``../shared/data/sib200`` or any directory like it)::

    ROOT/<FLORES code>/{train,dev,test}.tsv      index_id<TAB>category<TAB>text, with a header

The splits are parallel: every language has the same ``index_id``s and categories in the same
order. The data set is two things at once: labelled splits for the ``transfer`` probe, and a
parallel corpus (train + dev + test, in that order) for ``run``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import ParallelCorpus, Side, read_lines, shared_data_root
from .errors import DataError
from .languages import canonical, is_language

NAME = "sib200"
SPLITS = ("train", "dev", "test")
HEADER = ("index_id", "category", "text")


@dataclass(frozen=True)
class Split:
    """One split of one language; ``path`` and ``lines`` (each row's line number in it) name
    the file and line in messages."""

    path: Path
    ids: tuple[str, ...]
    categories: tuple[str, ...]
    texts: tuple[str, ...]
    lines: tuple[int, ...] = ()

    def line(self, row: int) -> int:
        return self.lines[row] if self.lines else row + 2


@dataclass(frozen=True)
class LabelledCorpus:
    """Labelled parallel splits: ``splits[language][split]``."""

    name: str
    root: Path
    splits: dict[str, dict[str, Split]]

    @property
    def languages(self) -> list[str]:
        return list(self.splits)

    def sizes(self) -> dict[str, int]:
        """Sentences per split (the same in every language)."""
        first = next(iter(self.splits.values()))
        return {split: len(first[split].ids) for split in SPLITS}

    def labels(self, split: str) -> list[str]:
        return list(next(iter(self.splits.values()))[split].categories)

    def parallel(self) -> ParallelCorpus:
        """One side per language: train, dev and test sentences in that order."""
        return ParallelCorpus(self.name, {
            code: Side(code, code, "all", tuple(t for s in SPLITS for t in splits[s].texts))
            for code, splits in self.splits.items()})

    def subset(self, languages: Iterable[str]) -> LabelledCorpus:
        return LabelledCorpus(self.name, self.root, {c: self.splits[c] for c in languages})


def resolve_root(source: str | Path) -> Path | None:
    """The directory ``source`` names when it is SIB-200 (``sib200``) or in its layout, else None."""
    if str(source) == NAME:
        shared = shared_data_root()
        if shared is None or not (shared / NAME).is_dir():
            raise DataError(f"data set {NAME!r} lives in ../shared/data/{NAME}, which is absent "
                            "here; set LAYER_ANALYSIS_SHARED_DATA or pass a directory in its layout")
        return shared / NAME
    path = Path(source).expanduser()
    return path if path.is_dir() and language_directories(path) else None


def language_directories(root: Path) -> dict[str, Path]:
    """FLORES code -> directory, for the subdirectories that hold a ``train.tsv``."""
    return {p.name: p for p in sorted(root.iterdir())
            if p.is_dir() and (p / "train.tsv").is_file() and is_language(p.name)}


def read_split(path: Path) -> Split:
    """One ``index_id<TAB>category<TAB>text`` file; any fault names the file and line."""
    if not path.is_file():
        raise DataError(f"{path} is missing (every language needs {', '.join(SPLITS)} .tsv)")
    lines = read_lines(path)
    header = tuple(lines[0].split("\t"))
    if header != HEADER:
        raise DataError(f"{path}, line 1: header {lines[0][:60]!r}, expected "
                        f"{chr(9).join(HEADER)!r} (tab-separated)")
    ids, categories, texts = [], [], []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) != 3 or not all(f.strip() for f in fields):
            raise DataError(f"{path}, line {number}: expected index_id<TAB>category<TAB>text, "
                            f"got {line[:60]!r}")
        ids.append(fields[0].strip())
        categories.append(fields[1].strip())
        texts.append(fields[2].strip())
    if not ids:
        raise DataError(f"{path} has a header but no rows")
    seen: dict[str, int] = {}
    for number, index in enumerate(ids, 2):
        if index in seen:
            raise DataError(f"{path}, line {number}: index_id {index} repeats line {seen[index]}")
        seen[index] = number
    return Split(path, tuple(ids), tuple(categories), tuple(texts),
                 tuple(range(2, len(ids) + 2)))


def select_languages(available: Iterable[str], languages: Iterable[str] | str | None,
                     where: str) -> list[str]:
    """Canonical codes of ``languages`` (any accepted spelling; ``all`` or None: every one
    ``available``), each of which must be there."""
    available = list(available)
    if languages is None or languages == "all" or list(languages) == ["all"]:
        return available
    wanted = list(dict.fromkeys(canonical(name, "--languages") for name in languages))
    missing = [code for code in wanted if code not in available]
    if missing:
        shown = ", ".join(available[:12]) + (f", … ({len(available)} in all)"
                                              if len(available) > 12 else "")
        raise DataError(f"{where} has no {', '.join(missing)} (no {missing[0]}/train.tsv); it "
                        f"has {shown}")
    if not wanted:
        raise DataError("the language selection is empty")
    return wanted


def load_sib(source: str | Path, languages: Iterable[str] | str | None = None,
             reference: str | None = None) -> LabelledCorpus:
    """Read the chosen languages of SIB-200 (or a directory in its layout) and check that their
    splits are parallel with ``reference``'s (default: the first language's): same index_ids
    and categories, line by line."""
    root = resolve_root(source)
    if root is None:
        raise DataError(f"{source} is not SIB-200 or a directory in its layout "
                        "(<code>/{train,dev,test}.tsv)")
    directories = language_directories(root)
    if not directories:
        raise DataError(f"{root} holds no language directories with train.tsv")
    codes = select_languages(directories, languages, str(root))
    if reference is not None and reference in codes:
        codes = [reference, *[c for c in codes if c != reference]]
    splits = {code: {s: read_split(directories[code] / f"{s}.tsv") for s in SPLITS}
              for code in codes}
    check_parallel(splits)
    name = NAME if str(source) == NAME else root.name
    return LabelledCorpus(name, root, splits)


def check_parallel(splits: dict[str, dict[str, Split]]) -> None:
    """Every language's splits against the first's: same rows, index_ids and categories."""
    first = next(iter(splits.values()))
    for own in list(splits.values())[1:]:
        for split in SPLITS:
            ref, other = first[split], own[split]
            if len(other.ids) != len(ref.ids):
                raise DataError(f"{other.path} has {len(other.ids)} rows but {ref.path} has "
                                f"{len(ref.ids)}; the splits must be parallel")
            for i, pair in enumerate(zip(ref.ids, other.ids, ref.categories, other.categories,
                                         strict=True)):
                a_id, b_id, a_cat, b_cat = pair
                if a_id != b_id or a_cat != b_cat:
                    raise DataError(
                        f"{other.path}, line {other.line(i)}: index_id {b_id} ({b_cat}) but "
                        f"{ref.path} has {a_id} ({a_cat}) on that line; the splits must be "
                        "parallel (same index_ids and categories in the same order)")


def check_categories(corpus: LabelledCorpus, source: str) -> None:
    """Every test category of every language must occur in ``source``'s training split."""
    seen = set(corpus.splits[source]["train"].categories)
    test = corpus.splits[source]["test"]
    if len(set(test.categories)) < 2:
        raise DataError(f"{test.path}: the test rows used hold one category only "
                        f"({test.categories[0]!r}); chance would be 100 %")
    for code, own in corpus.splits.items():
        test = own["test"]
        for i, category in enumerate(test.categories):
            if category not in seen:
                raise DataError(f"{test.path}, line {test.line(i)}: category {category!r} never occurs "
                                f"in {corpus.splits[source]['train'].path} (training split); "
                                "a probe cannot predict it")
        train = own["train"]
        if code != source and len(set(train.categories)) < 2:
            raise DataError(f"{train.path}: one category only; the in-language probe needs two")


def sample_rows(categories: Sequence[str], limit: int, seed: int = 0) -> list[int]:
    """``limit`` row indices drawn at random (seeded) within each category, in file order; all
    if ``limit`` >= the rows. Stratified: each category keeps its share of the rows (rounded),
    and at least one row while ``limit`` allows, so a small sample of the train split still
    covers the categories its test split has. Not the first rows: SIB-200's test split is
    sorted by category."""
    n = len(categories)
    if limit >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, category in enumerate(categories):
        groups.setdefault(category, []).append(i)
    order = sorted(groups, key=lambda c: (-len(groups[c]), c))  # largest first
    share = {c: max(1, round(limit * len(groups[c]) / n)) for c in order}
    while sum(share.values()) > limit:  # rounding and the minimum of one: trim the largest
        largest = max((c for c in order if share[c] > (1 if limit >= len(order) else 0)),
                      key=lambda c: share[c])
        share[largest] -= 1
    while sum(share.values()) < limit:  # add to the categories with rows left, largest first
        for c in order:
            if sum(share.values()) < limit and share[c] < len(groups[c]):
                share[c] += 1
    picked = [int(i) for c in order if share[c]
              for i in rng.choice(groups[c], share[c], replace=False)]
    return sorted(picked)


def limit_splits(corpus: LabelledCorpus, limit: int | None, seed: int = 0) -> LabelledCorpus:
    """At most ``limit`` rows of every split, a seeded random sample in file order (the same
    rows in every language)."""
    if limit is None:
        return corpus
    if limit < 1:
        raise DataError(f"the sentence limit must be at least 1, got {limit}")

    def cut(s: Split) -> Split:
        keep = sample_rows(s.categories, limit, seed)
        return Split(s.path, *(tuple(column[i] for i in keep)
                               for column in (s.ids, s.categories, s.texts)),
                     tuple(s.line(i) for i in keep))

    return LabelledCorpus(corpus.name, corpus.root, {
        code: {k: cut(s) for k, s in splits.items()} for code, splits in corpus.splits.items()})


def sib_parallel(source: str) -> ParallelCorpus | None:
    """The parallel corpus of SIB-200 or of a directory in its layout (every language), or None
    when ``source`` is neither: the hook ``data.load_parallel`` calls first."""
    if source != NAME and not Path(source).expanduser().is_dir():
        return None
    if resolve_root(source) is None:
        return None
    return load_sib(source).parallel()
