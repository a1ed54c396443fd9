"""Shared pieces of the command line: the help formatter and option parsers (numbers are
checked by ``probe.checks``, the same check the library's requests make)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layer_analysis.probe.checks import COUNT, Range
from layer_analysis.probe.errors import notice
from layer_analysis.probe.models import DEFAULT_MODEL
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


class DeprecatedOption(argparse.Action):
    """An old spelling kept for one release: stores into the new option's ``dest`` and prints
    ``note: --old is deprecated; use --new``."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        notice(f"{option_string} is deprecated; use {self.new}")
        setattr(namespace, self.dest, values)


class NotedOption(argparse._StoreAction):
    """A plain option that prints a one-line note when given (an option whose meaning changed
    in this release)."""

    def __init__(self, option_strings: list[str], dest: str, note: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.note = note

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        notice(self.note)
        super().__call__(parser, namespace, values, option_string)


def deprecated(group: argparse._ActionsContainer, old: str, new: argparse.Action) -> None:
    """Keep ``old`` working for one release as a spelling of ``new`` (hidden from --help)."""
    group.add_argument(old, action=DeprecatedOption, new=new.option_strings[0], dest=new.dest,
                       type=new.type, metavar=new.metavar, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)


def add_model_options(group: argparse._ActionsContainer, default: str = DEFAULT_MODEL,
                      help: str = "packaged name, model directory, .gguf file, Hub id or PEFT "
                                  "adapter", adapter: bool = True) -> None:
    """``--model`` (and ``--adapter``): what every command that loads a model loads."""
    group.add_argument("--model", default=default, help=help)
    if adapter:
        group.add_argument("--adapter", help="PEFT adapter directory to apply on top of --model")


def add_device_options(group: argparse._ActionsContainer) -> None:
    """``--device`` and ``--dtype``, the same for every command that loads a model."""
    group.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, "
                                                        "cuda, cuda:N")
    group.add_argument("--dtype", default="auto",
                       help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")


def add_limit_option(group: argparse._ActionsContainer, default: int | None = None,
                     what: str = "", valid: Range = COUNT, everything: bool = True,
                     note: str | None = None) -> argparse.Action:
    """``--limit``: sentences per language, in every command that reads parallel text (a
    second size has its own name: ``--concepts``, ``--eval-sentences``). ``what`` says what the
    sentences are for; ``note`` is printed when the option is given (a changed meaning)."""
    shown = "all" if default is None else default
    extra = {"action": NotedOption, "note": note} if note else {}
    return group.add_argument(
        "--limit", type=whole(valid, everything), default=default,
        metavar="N|all" if everything else "N",
        help=f"sentences per language{what} (default: {shown})", **extra)


def add_progress_option(group: argparse._ActionsContainer, help: str = "hide progress bars "
                        "and stage lines (warnings are still printed)") -> None:
    group.add_argument("--no-progress", action="store_true", help=help)


def add_static_option(group: argparse._ActionsContainer) -> None:
    group.add_argument("--no-static", action="store_true",
                       help="write report.html only, no PNG/PDF (which need Chromium)")


def add_run_directory_options(group: argparse._ActionsContainer, default_name: str,
                              static: bool = True) -> None:
    """Where a run goes: ``--output``, ``--name``, ``--overwrite`` (and ``--no-static`` for a
    run with figures)."""
    group.add_argument("--output", type=Path, default=Path("runs"), help="directory of runs")
    group.add_argument("--name", help=f"run name, a plain name (default: {default_name})")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an existing run of the same --name")
    if static:
        add_static_option(group)


def stage_printer(command: str, progress: bool) -> Callable[[str], None]:
    """The ``say`` of a run that reports its stages: ``COMMAND: line`` on stderr; with
    ``--no-progress`` only its warnings."""
    def say(line: str) -> None:
        if progress or line.startswith("warning:"):
            print(f"{command}: {line}", file=sys.stderr, flush=True)
    return say


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options every command that writes a run directory shares (``RunSettings``' fields:
    model, adapter, device, dtype, output, name, overwrite), as keyword arguments."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(RunSettings)}
