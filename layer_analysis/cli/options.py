"""Shared pieces of the command line: the help formatter and option parsers."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from layer_analysis.probe.runs import RunSettings


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is unset (None/False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text \
                or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


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
