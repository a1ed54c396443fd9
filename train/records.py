"""Training records: Alpaca-format instruction data and English -> X translation pairs, each
record keeping where it came from; bad records are counted by reason, never silently dropped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layer_analysis.probe.errors import DataError
from layer_analysis.probe.prompts import translation_instruction
from layer_analysis.probe.readers import read_json, read_jsonl


@dataclass(frozen=True)
class Record:
    """One Alpaca-format example; ``origin`` is ``component:index``."""

    instruction: str
    input: str
    output: str
    origin: str


@dataclass
class Report:
    """Records kept and rejected per component, rejections by reason."""

    kept: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)  # (component, reason) -> count

    def reject(self, component: str, reason: str) -> None:
        self.rejected[(component, reason)] += 1

    def lines(self) -> list[str]:
        """One line per component, in the order the components were read."""
        out = []
        for component in dict.fromkeys([*self.kept, *(c for c, _ in self.rejected)]):
            bad = {r: n for (c, r), n in self.rejected.items() if c == component}
            detail = ", ".join(f"{n} {r}" for r, n in sorted(bad.items())) or "none rejected"
            out.append(f"{component}: {self.kept[component]} kept ({detail})")
        return out

    def as_dict(self) -> dict:
        return {"kept": dict(self.kept),
                "rejected": {f"{c}: {r}": n for (c, r), n in sorted(self.rejected.items())}}


def read_alpaca(path: Path, component: str, report: Report, window: slice = slice(None)
                ) -> list[Record]:
    """Records of an Alpaca JSON array or JSONL file (``input`` may be missing or null), of the
    items in ``window`` (file order); ``origin`` holds each item's index in the file. Read by
    ``probe.readers`` (regular files under the size cap, lines split on line breaks only)."""
    jsonl = path.suffix == ".jsonl"
    items = [value for _, value in read_jsonl(path)] if jsonl else read_json(path)
    if not isinstance(items, list):
        raise DataError(f"{path} must hold a JSON array of records (or one record per line)")
    return alpaca_records(items, component, report, window)


def alpaca_records(items: Sequence[Any], component: str, report: Report,
                   window: slice = slice(None)) -> list[Record]:
    """Checked records of the Alpaca-format ``items`` in ``window`` (a list of dicts, or a Hub
    dataset); ``origin`` holds each item's index."""
    records = []
    for i in range(*window.indices(len(items))):
        item = items[i]
        if not isinstance(item, dict):
            report.reject(component, "not an object")
            continue
        why = next((f"{field} missing" if item.get(field) is None else f"{field} not text"
                    for field in ("instruction", "output")
                    if not isinstance(item.get(field), str)), None)
        if why is not None:  # a wrong type is named as such, not counted as missing
            report.reject(component, why)
            continue
        extra = item.get("input")
        if extra is not None and not isinstance(extra, str):
            report.reject(component, "input not text")
            continue
        if not item["instruction"].strip():
            report.reject(component, "empty instruction")
            continue
        if not item["output"].strip():
            report.reject(component, "empty output")
            continue
        records.append(Record(item["instruction"], extra or "", item["output"], f"{component}:{i}"))
    report.kept[component] += len(records)
    return records


def translation_records(sources: list[str], targets: list[str], source: str, target: str,
                        component: str, report: Report, offset: int = 0) -> list[Record]:
    """Translation examples from line-aligned text: instruction rotated by line, input = source
    sentence, output = its translation. Pairs with an empty side are rejected."""
    if len(sources) != len(targets):
        raise DataError(f"{component}: {len(sources)} source lines but {len(targets)} targets")
    records = []
    for i, (src, tgt) in enumerate(zip(sources, targets, strict=True), start=offset):
        if not src.strip() or not tgt.strip():
            report.reject(component, "empty side")
            continue
        records.append(Record(translation_instruction(source, target, i), src.strip(),
                              tgt.strip(), f"{component}:{i}"))
    report.kept[component] += len(records)
    return records
