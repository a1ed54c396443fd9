"""Shared pieces of the command line: the help formatter and option parsers (numbers are
checked by ``probe.checks``, the same check the library's requests make)."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layer_analysis.probe.checks import COUNT, Range
from layer_analysis.probe.runs import RunSettings


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is unset (None/False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text \
                or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def _checked(text: str, kind: type, valid: Range) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None
    problem = valid.problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def whole(valid: Range = COUNT, everything: bool = False) -> Callable[[str], int | None]:
    """An argparse ``type``: a whole number in ``valid``; with ``everything`` also ``all``
    (-> None, no limit)."""
    def parse(text: str) -> int | None:
        if everything and text.strip().lower() == "all":
            return None
        return _checked(text, int, valid)
    parse.__name__ = "whole number"
    return parse


def real(valid: Range) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``valid``."""
    def parse(text: str) -> float:
        return _checked(text, float, valid)
    parse.__name__ = "number"
    return parse


def listed(valid: Range, kind: type = int) -> Callable[[str], tuple]:
    """An argparse ``type``: one or more comma-separated numbers, each in ``valid``."""
    def parse(text: str) -> tuple:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
        return tuple(_checked(part, kind, valid) for part in parts)
    parse.__name__ = "list of numbers"
    return parse


def parse_layers(text: str) -> tuple[int, ...] | None:
    """``all``, ``0,4,8`` or ``2-10`` (inclusive) -> layer numbers."""
    if text == "all":
        return None
    layers: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"layers must look like 'all', '0,4,8' or '2-10': {text!r}")
        start, stop = int(match[1]), int(match[2] or match[1])
        if stop < start:
            raise argparse.ArgumentTypeError(f"layer range {part.strip()!r} runs backwards")
        layers += range(start, stop + 1)
    return tuple(layers)


def add_device_options(group: argparse._ActionsContainer) -> None:
    """``--device`` and ``--dtype``, the same for every command that loads a model."""
    group.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, "
                                                        "cuda, cuda:N")
    group.add_argument("--dtype", default="auto",
                       help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")


def add_static_option(group: argparse._ActionsContainer) -> None:
    group.add_argument("--no-static", action="store_true",
                       help="write report.html only, no PNG/PDF (which need Chromium)")


def add_run_directory_options(group: argparse._ActionsContainer, default_name: str) -> None:
    """Where a run goes: ``--output``, ``--name``, ``--overwrite``, ``--no-static``."""
    group.add_argument("--output", type=Path, default=Path("runs"), help="directory of runs")
    group.add_argument("--name", help=f"run name, a plain name (default: {default_name})")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an existing run of the same --name")
    add_static_option(group)


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options every command that writes a run directory shares (``RunSettings``' fields:
    model, adapter, device, dtype, output, name, overwrite), as keyword arguments."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(RunSettings)}
