"""Parallel sentences: the shipped default, FLORES-style directories, pair files, TSV/JSONL, Hub.

A corpus is a set of *sides*. Each side is one language's sentences; sides in the same *group*
are line-aligned. A FLORES-style directory is one group with a side per language; Tatoeba-style
pair files (``x.ara-eng.ara`` / ``x.ara-eng.eng``) give one group per pair, because the English
side differs from pair to pair.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import DataError
from .languages import ENGLISH, canonical, is_language
from .readers import check_file, read_jsonl, read_lines

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages/layer_analysis)
DATA_ROOT = REPO_ROOT / "data"  # the project's own data, installed as layer_analysis/data
_PAIR_FILE = re.compile(r"^(?:.*\.)?(?P<a>[A-Za-z_]+)-(?P<b>[A-Za-z_]+)\.(?P<lang>[A-Za-z_]+)$")
_METADATA_COLUMNS = {"id"}  # 'id' is also ISO 639-1 for Indonesian
_LANGUAGE_FILE = re.compile(r"^(?P<lang>[a-z]{2,3}(?:_[A-Z][a-z]{3})?)(?:\.[\w-]+)?$")


@dataclass(frozen=True)
class Side:
    """One language's sentences; ``group`` names the sides it is line-aligned with."""

    key: str
    language: str
    group: str
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class ParallelCorpus:
    """Sides of parallel text, keyed by side key (the language code where it is unique)."""

    name: str
    sides: dict[str, Side]

    @property
    def languages(self) -> list[str]:
        return list(dict.fromkeys(side.language for side in self.sides.values()))

    def __len__(self) -> int:
        return sum(len(side.sentences) for side in self.sides.values())

    def select(self, languages: Iterable[str] | None = None, limit: int | None = None
               ) -> ParallelCorpus:
        """Keep the sides of ``languages`` (any spelling) and the first ``limit`` lines of each."""
        sides = dict(self.sides)
        languages = None if languages is None or list(languages) == ["all"] else list(languages)
        if languages is not None:
            wanted = [canonical(name, "--languages") for name in languages]
            if not wanted:
                raise DataError("the language selection is empty")
            missing = [code for code in wanted if code not in self.languages]
            if missing:
                raise DataError(f"{self.name} has no {', '.join(missing)}; it has "
                                f"{', '.join(self.languages)}")
            sides = {k: s for k, s in sides.items() if s.language in wanted}
        if limit is not None:
            if limit < 1:
                raise DataError(f"the sentence limit must be at least 1, got {limit}")
            sides = {k: replace(s, sentences=s.sentences[:limit]) for k, s in sides.items()}
        return ParallelCorpus(self.name, sides)

    def pairs(self, pivot: str | None = ENGLISH) -> list[tuple[str, str]]:
        """Aligned (source, target) side pairs: pivot -> every other side, or all pairs if None."""
        groups: dict[str, list[str]] = {}
        for key, side in self.sides.items():
            groups.setdefault(side.group, []).append(key)
        out = []
        for keys in groups.values():
            for i, a in enumerate(keys):
                for b in keys[i + 1 :]:
                    la, lb = self.sides[a].language, self.sides[b].language
                    if pivot is None:
                        out.append((a, b))
                    elif pivot in (la, lb):
                        out.append((a, b) if la == pivot else (b, a))
        return out

    def fingerprint(self) -> str:
        """Content hash of every side's key, language, group and sentences."""
        digest = hashlib.sha256()
        for key in sorted(self.sides):
            side = self.sides[key]
            digest.update(f"{key}\t{side.language}\t{side.group}\t{len(side.sentences)}\n".encode())
            for sentence in side.sentences:
                digest.update(sentence.encode())
                digest.update(b"\n")
        return digest.hexdigest()


# ------------------------------------------------------------------------------ reading files


def _check_aligned(columns: dict[Path, list[str]]) -> None:
    (first, first_lines), *rest = columns.items()
    for path, lines in rest:
        if len(lines) != len(first_lines):
            raise DataError(f"{path} has {len(lines)} lines but {first} has {len(first_lines)}; "
                            "parallel files must be line-aligned")


def _unique_keys(entries: list[tuple[str, str, tuple[str, ...]]], name: str) -> ParallelCorpus:
    """Build sides from (language, group, sentences); a language seen twice gets ``code@group``;
    twice in one group (``en`` and ``eng`` columns) is an error, never a silent overwrite."""
    twice = [f"{lang} (group {group})" if group != "all" else lang
             for (lang, group), n in Counter((lang, group) for lang, group, _ in entries).items()
             if n > 1]
    if twice:
        raise DataError(f"{name}: more than one column for {', '.join(twice)}; keep one per language")
    counts = Counter(language for language, _, _ in entries)
    sides = {}
    for language, group, sentences in entries:
        key = language if counts[language] == 1 else f"{language}@{group}"
        sides[key] = Side(key, language, group, sentences)
    return ParallelCorpus(name, sides)


def load_directory(directory: Path) -> ParallelCorpus:
    """A FLORES-style directory (``eng_Latn.devtest``, ``de.txt``) or Tatoeba-style pair files."""
    # not only regular files: a language-named FIFO or device is refused by read_lines, not skipped
    files = sorted(p for p in directory.iterdir() if not p.is_dir() and not p.name.startswith("."))
    pair_files = [p for p in files if _PAIR_FILE.match(p.name)]
    if pair_files:
        return _load_pair_files(directory, pair_files)
    columns: dict[Path, list[str]] = {}
    languages: dict[Path, str] = {}
    for path in files:
        match = _LANGUAGE_FILE.match(path.name)
        if match is None:
            continue  # README, LICENSE, metadata_*.tsv and the like
        if not is_language(match["lang"]):
            canonical(match["lang"], f"file {path}")  # raises with the file named
        languages[path] = canonical(match["lang"], f"file {path}")
        columns[path] = read_lines(path)
    if not columns:
        raise DataError(f"{directory} holds no language files (expected names like eng_Latn.devtest "
                        "or en.txt, or pair files like tatoeba.deu-eng.deu)")
    _check_aligned(columns)
    seen: dict[str, Path] = {}
    for path, language in languages.items():
        if language in seen:
            raise DataError(f"{path} and {seen[language]} are both {language}")
        seen[language] = path
    entries = [(languages[p], "all", tuple(lines)) for p, lines in columns.items()]
    return _unique_keys(entries, directory.name)


def _load_pair_files(directory: Path, pair_files: list[Path]) -> ParallelCorpus:
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    for path in pair_files:
        match = _PAIR_FILE.match(path.name)
        a, b, lang = match["a"], match["b"], match["lang"]
        if lang not in (a, b):
            raise DataError(f"{path}: its suffix {lang!r} is neither side of the pair {a}-{b}")
        groups.setdefault((a, b), {})[lang] = path
    entries = []
    for (a, b), paths in sorted(groups.items()):
        if len(paths) != 2:
            raise DataError(f"{directory}: pair {a}-{b} has only {next(iter(paths.values()))}")
        columns = {paths[a]: read_lines(paths[a]), paths[b]: read_lines(paths[b])}
        _check_aligned(columns)
        group = f"{canonical(a, f'file {paths[a]}')}-{canonical(b, f'file {paths[b]}')}"
        for lang in (a, b):
            entries.append((canonical(lang, f"file {paths[lang]}"), group, tuple(columns[paths[lang]])))
    return _unique_keys(entries, directory.name)


def load_tsv(path: Path) -> ParallelCorpus:
    """A TSV file whose header names the languages, one aligned tuple per row."""
    try:
        rows = read_lines(path)
    except DataError as exc:
        raise DataError(str(exc).replace("every line must hold a sentence", "a row per line")) from None
    header = rows[0].split("\t")
    languages = [canonical(name, f"{path}, header column {i + 1}") for i, name in enumerate(header)]
    columns: list[list[str]] = [[] for _ in header]
    for number, row in enumerate(csv.reader(rows[1:], delimiter="\t", quoting=csv.QUOTE_NONE), 2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {number}: {len(row)} fields, the header has {len(header)}")
        for column, cell in zip(columns, row, strict=False):
            if not cell.strip():
                raise DataError(f"{path}, line {number}: empty cell")
            column.append(cell.strip())
    if not columns[0]:
        raise DataError(f"{path} has a header but no rows")
    return _unique_keys([(lang, "all", tuple(col)) for lang, col in zip(languages, columns, strict=False)],
                        path.stem)


def load_jsonl(path: Path) -> ParallelCorpus:
    """A JSONL file of objects mapping language -> sentence, every object the same languages
    (``readers.read_jsonl``: split on line breaks only, blank lines skipped)."""
    columns: dict[str, list[str]] = {}
    for number, record in read_jsonl(path):
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected an object of language -> sentence")
        named = [canonical(k, f"{path}, line {number}") for k in record]
        if len(set(named)) < len(named):
            raise DataError(f"{path}, line {number}: keys {', '.join(record)} name one language "
                            "twice; keep one per language")
        record = dict(zip(named, record.values(), strict=True))
        if not columns:
            columns = {language: [] for language in record}
        if set(record) != set(columns):
            raise DataError(f"{path}, line {number}: languages {sorted(record)} differ from the "
                            f"first record's {sorted(columns)}")
        for language, sentence in record.items():
            if not isinstance(sentence, str) or not sentence.strip():
                raise DataError(f"{path}, line {number}: {language} is empty or not a string")
            columns[language].append(sentence.strip())
    if not columns:
        raise DataError(f"{path} holds no records")
    return _unique_keys([(lang, "all", tuple(col)) for lang, col in columns.items()], path.stem)


def hub_table(name: str, split: str, config: str | None = None) -> Any:
    """One split of a Hugging Face Hub dataset (``datasets.Dataset``), or one clear error."""
    try:
        import datasets
    except ImportError as exc:
        raise DataError("reading a Hub dataset needs the 'datasets' package "
                        "(pip install datasets)") from exc
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many types for "cannot reach / no such dataset"
        raise DataError(f"cannot load dataset {name!r} (split {split!r}): {exc}") from exc


def load_hub_dataset(name: str, split: str = "devtest", config: str | None = None) -> ParallelCorpus:
    """A Hub dataset whose columns are named after languages (``sentence_eng_Latn`` counts too)."""
    table = hub_table(name, split, config)
    return corpus_from_columns({c: table[c] for c in table.column_names}, name)


def corpus_from_columns(columns: dict[str, list[str]], name: str) -> ParallelCorpus:
    """Sides from table columns named after languages; other columns (``id``, ``url``) are ignored."""
    entries = []
    for column, values in columns.items():
        code = column.removeprefix("sentence_")
        if is_language(code) and code not in _METADATA_COLUMNS:
            for row, value in enumerate(values):
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"{name}, column {column}, row {row}: empty or not a string")
            entries.append((canonical(code), "all", tuple(v.strip() for v in values)))
    if len(entries) < 2:
        raise DataError(f"{name}: fewer than two columns are named after a known language")
    return _unique_keys(entries, name)


# --------------------------------------------------------------------------- named data sets


def shared_data_root() -> Path | None:
    """``$LAYER_ANALYSIS_SHARED_DATA`` or ``../shared/data`` beside the repository, if present."""
    root = Path(os.environ.get("LAYER_ANALYSIS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return root if root.is_dir() else None


def named_datasets() -> dict[str, tuple[Path | None, str]]:
    """Named data sets -> (directory or None if absent here, description)."""
    shared = shared_data_root()

    def under(rel: str) -> Path | None:
        return shared / rel if shared and (shared / rel).is_dir() else None

    return {
        "default": (DATA_ROOT / "parallel",
                    "the project's own parallel sentences (shipped, written for this project)"),
        "flores-devtest": (under("flores200/devtest"), "FLORES-200 devtest, 1012 lines (CC BY-SA 4.0)"),
        "flores-dev": (under("flores200/dev"), "FLORES-200 dev, 997 lines (CC BY-SA 4.0)"),
        "tatoeba": (under("tatoeba"), "LASER/XTREME Tatoeba xxx-eng pairs (CC BY 2.0 FR)"),
        "sib200": (under("sib200"), "SIB-200 train+dev+test, 1004 lines × 205 languages, "
                   "topic-labelled (CC BY-SA 4.0)"),
    }


def load_parallel(source: str = "default") -> ParallelCorpus:
    """Load a named data set, a directory, a .tsv/.jsonl file, or ``hf:NAME[:CONFIG]@SPLIT``."""
    from .sib200 import sib_parallel  # SIB-200 and its layout (a module built on this one)

    sib = sib_parallel(source)
    if sib is not None:
        return sib
    if source.startswith("hf:"):
        spec, _, split = source[3:].partition("@")
        name, _, config = spec.partition(":")
        return load_hub_dataset(name, split or "devtest", config or None)
    named = named_datasets()
    if source in named:
        directory, _ = named[source]
        if directory is None:
            raise DataError(f"data set {source!r} lives in ../shared/data, which is absent here; "
                            "set LAYER_ANALYSIS_SHARED_DATA or pass a directory")
        corpus = load_directory(directory)
        return ParallelCorpus(source, corpus.sides)
    path = Path(source).expanduser()
    if path.is_dir():
        return load_directory(path)
    if path.exists():
        check_file(path)  # a device, FIFO or socket is named as such, as is an oversized file
        if path.suffix == ".tsv":
            return load_tsv(path)
        if path.suffix in (".jsonl", ".json"):
            return load_jsonl(path)
        raise DataError(f"{path}: unsupported file type (use a directory, .tsv or .jsonl)")
    raise DataError(f"no data set, directory or file named {source!r}; named sets: "
                    f"{', '.join(named)}")


def corpus_from_sentences(sentences: dict[str, Sequence[str]], name: str = "sentences"
                          ) -> ParallelCorpus:
    """Line-aligned sentences per language (any spelling: ``en``, ``eng_Latn``, ``English``), as
    the Python API takes them: every key a language, every list as long as the others, every
    sentence a non-empty string (stripped, as files are read)."""
    if not isinstance(sentences, dict) or not sentences:
        raise DataError("sentences must be a non-empty dict of language -> list of sentences")
    for key, values in sentences.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sized):
            what = "one string" if isinstance(values, str | bytes) else type(values).__name__
            raise DataError(f"each language maps to a list of sentences; {key!r} maps to {what}")
    lengths = {key: len(values) for key, values in sentences.items()}
    if len(set(lengths.values())) > 1:
        raise DataError("parallel sentences must be line-aligned; the lists have "
                        + ", ".join(f"{n} ({key})" for key, n in lengths.items()))
    entries = []
    for key, values in sentences.items():
        code = canonical(str(key), f"{name}, key {key!r}")
        for row, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{name}, {key}, sentence {row}: empty or not a string")
        entries.append((code, "all", tuple(v.strip() for v in values)))
    return _unique_keys(entries, name)
