"""Data mixtures described by a small spec, e.g.

    alpaca_en[:2000] + alpaca_zh[:2000] + translation_en-zh[:5000]

Components: ``alpaca_<language>`` (Alpaca-format instruction data), ``translation_<src>-<tgt>``
(line-aligned pairs as translation examples), a path to an Alpaca ``.json``/``.jsonl`` file, or
``hf:NAME[:CONFIG]@SPLIT`` — an Alpaca-format dataset on the Hugging Face Hub, when it is reachable.
A slice ``[start:stop]`` takes those records of the source, in file order, before shuffling.
Languages may be spelled any accepted way (``zh``, ``zho``, ``Chinese``).

Where the files come from: ``../shared/data`` (or ``$LAYER_ANALYSIS_SHARED_DATA``) —
``instruct/alpaca_<iso>.json[l]``, ``instruct/multialpaca_<iso>.jsonl`` and
``translation/eng-<xxx>/train.{eng,xxx}`` — then the project's own ``data/instruct/``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from layer_analysis.probe.data import DATA_ROOT, hub_table, read_lines, shared_data_root
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.languages import ENGLISH, canonical, is_language, iso639_1

from .records import (
    Record,
    Report,
    alpaca_records,
    read_alpaca,
    translation_records,
)

_COMPONENT = re.compile(r"^(?P<name>[^\[\]]+?)\s*(\[(?P<start>\d*):(?P<stop>\d*)\])?$")


@dataclass(frozen=True)
class Component:
    name: str
    start: int | None = None
    stop: int | None = None

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.name
        return f"{self.name}[{'' if self.start is None else self.start}:" \
               f"{'' if self.stop is None else self.stop}]"

    @property
    def size(self) -> int | None:
        """Records asked for, if the slice bounds it."""
        return None if self.stop is None else self.stop - (self.start or 0)


@dataclass(frozen=True)
class MixtureSpec:
    components: tuple[Component, ...]

    def __str__(self) -> str:
        return " + ".join(str(c) for c in self.components)


def parse_spec(text: str) -> MixtureSpec:
    """Parse ``a[:n] + b + c[i:j]``; one clear error for anything else."""
    parts = [p.strip() for p in text.split("+")]
    if not text.strip() or any(not p for p in parts):
        raise DataError(f"empty component in mixture spec {text!r} (expected e.g. "
                        "'alpaca_en[:2000] + translation_en-zh[:5000]')")
    components = []
    for part in parts:
        match = _COMPONENT.match(part)
        if match is None:
            raise DataError(f"cannot read mixture component {part!r}: expected NAME or "
                            "NAME[start:stop] with whole numbers")
        start = int(match["start"]) if match["start"] else None
        stop = int(match["stop"]) if match["stop"] else None
        if start is not None and stop is not None and stop < start:
            raise DataError(f"mixture component {part!r}: the slice ends before it starts")
        components.append(Component(match["name"].strip(), start, stop))
    return MixtureSpec(tuple(components))


@dataclass
class Mixture:
    """Shuffled records of a spec, with the report of what was kept and rejected."""

    spec: MixtureSpec
    records: list[Record]
    report: Report
    notes: list[str] = field(default_factory=list)
    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """English -> X translation pairs of the translation components, by X's code."""
    languages: set[str] = field(default_factory=set)
    """Languages the mixture's named components hold (English included when it is there)."""


def _roots() -> list[Path]:
    shared = shared_data_root()
    return [p for p in (shared, DATA_ROOT) if p is not None]


def alpaca_file(language: str) -> Path:
    """The Alpaca-format file for ``language``: shared data first, then the project's own."""
    code = canonical(language, "mixture")
    iso = iso639_1(code)
    names = [f"alpaca_{iso}.json", f"alpaca_{iso}.jsonl", f"multialpaca_{iso}.jsonl"]
    for root in _roots():
        for name in names:
            if (root / "instruct" / name).is_file():
                return root / "instruct" / name
    raise DataError(f"no Alpaca-format data for {code}: looked for {', '.join(names)} under "
                    f"{' and '.join(str(r / 'instruct') for r in _roots())}")


def translation_files(source: str, target: str) -> tuple[Path, Path]:
    """``translation/eng-xxx/train.{eng,xxx}`` for English -> target."""
    src, tgt = canonical(source, "mixture"), canonical(target, "mixture")
    if src != ENGLISH:
        raise DataError(f"translation pairs exist from English only, not from {src}")
    for root in _roots():
        for directory in sorted((root / "translation").glob("eng-*")):
            code = directory.name.split("-", 1)[1]
            if is_language(code) and canonical(code) == tgt:
                return directory / "train.eng", directory / f"train.{code}"
    raise DataError(f"no English-{tgt} translation pairs under "
                    f"{' or '.join(str(r / 'translation') for r in _roots())}")


def _load(component: Component, report: Report, notes: list[str], mixture: Mixture
          ) -> list[Record]:
    name = component.name
    window = slice(component.start, component.stop)
    kind, _, rest = name.partition("_")
    if name.startswith("hf:"):  # hf:NAME[:CONFIG]@SPLIT, Alpaca columns
        dataset, _, split = name[3:].partition("@")
        repo, _, config = dataset.partition(":")
        records = alpaca_records(hub_table(repo, split or "train", config or None), name, report,
                                 window)
    elif name.endswith((".json", ".jsonl")) or (kind == "alpaca" and rest):
        path = Path(name) if name.endswith((".json", ".jsonl")) else alpaca_file(rest)
        records = read_alpaca(path, name, report, window)
        if kind == "alpaca" and rest:
            mixture.languages.add(canonical(rest, "mixture"))
    elif kind == "translation" and "-" in rest:
        source, target = rest.split("-", 1)
        src_path, tgt_path = translation_files(source, target)
        sources = read_lines(src_path, allow_empty=True)[window]
        targets = read_lines(tgt_path, allow_empty=True)[window]
        records = translation_records(sources, targets, canonical(source), canonical(target),
                                      name, report, offset=component.start or 0)
        mixture.languages |= {canonical(source), canonical(target)}
        mixture.pairs.setdefault(canonical(target), []).extend(
            (r.input, r.output) for r in records)
    else:
        raise DataError(f"unknown mixture component {name!r}: use alpaca_<language>, "
                        "translation_en-<language>, hf:NAME@SPLIT, or a path to a .json/.jsonl "
                        "file")
    available = len(records) + sum(n for (c, _), n in report.rejected.items() if c == name)
    if component.size is not None and available < component.size:
        notes.append(f"{name}: asked for {component.size} records, the source has {available}")
    return records


def instruction_translation_spec(instructions: int, translations: dict[str, int]) -> str:
    """English Alpaca, then per language its Alpaca data and its English -> language pairs
    (left out where 0): the CoIT / MuIT mixture as a spec."""
    if instructions < 0 or any(n < 0 for n in translations.values()):
        raise DataError("record counts must be ≥ 0")
    parts = [f"alpaca_en[:{instructions}]"]
    for language, n in translations.items():
        iso = iso639_1(canonical(language, "mixture"))
        parts.append(f"alpaca_{iso}[:{instructions}]")
        if n:
            parts.append(f"translation_en-{iso}[:{n}]")
    return " + ".join(parts)


def build_mixture(spec: MixtureSpec | str, seed: int = 0) -> Mixture:
    """Load every component, then shuffle all records together with ``seed``."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    mixture = Mixture(spec, [], Report())
    for component in spec.components:
        mixture.records += _load(component, mixture.report, mixture.notes, mixture)
    if not mixture.records:
        raise DataError(f"the mixture {spec} holds no usable records")
    random.Random(seed).shuffle(mixture.records)
    return mixture


RECIPES = ("coit", "muit")


def recipe_spec(recipe: str, languages: list[str], instructions: int, translations: int) -> str:
    """CoIT (one language: x-model) or MuIT (several: m-model) as a mixture spec: English
    Alpaca, then per language its Alpaca data and English -> language translation pairs."""
    codes = [canonical(name, "--languages") for name in languages]
    if recipe == "coit" and len(codes) != 1:
        raise DataError("CoIT trains an x-model for one language: pass exactly one --languages")
    if recipe == "muit" and len(codes) < 2:
        raise DataError("MuIT trains an m-model on several languages: pass two or more")
    if ENGLISH in codes:
        raise DataError("English is always in the mixture; list the target languages only")
    return instruction_translation_spec(instructions, dict.fromkeys(codes, translations))
