"""Checks of numeric settings, one for every caller: the library's requests, the command line's
option parsers (``layer_analysis/cli/options.py``) and the dashboard. A number is finite and in
its setting's ``Range``; a requested count above what the data holds is said (``capped``)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .errors import DataError, notice

if TYPE_CHECKING:
    from .data import ParallelCorpus


@dataclass(frozen=True)
class Range:
    """The values a setting allows: finite, between ``low`` and ``high`` (``None``: unbounded;
    each end included unless ``*_open``), whole numbers only with ``whole``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False

    def describe(self) -> str:
        """``at least 1``, ``above 0``, ``in [0, 1)``..."""
        def show(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.low is None and self.high is None:
            return "any value"
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {show(self.low)}"
        if self.low is None:
            return f"{'below' if self.high_open else 'at most'} {show(self.high)}"
        return (f"in {'(' if self.low_open else '['}{show(self.low)}, {show(self.high)}"
                f"{')' if self.high_open else ']'}")

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not allowed (``must be ..., got ...``), or None when it is."""
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not number or (self.whole and not whole) or not math.isfinite(value):
            kind = "a whole number" if self.whole else "a finite number"
            return f"must be {kind} {self.describe()}, got {value!r}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open
                                           else value > self.high)
        return f"must be {self.describe()}, got {value!r}" if below or above else None


COUNT = Range(1, whole=True)  # limits, batch sizes, resamples, steps between events
COUNT_OR_NONE = Range(0, whole=True)  # counts where 0 means "none"; layer numbers
SEED = Range(0, 2**32 - 1, whole=True)  # what numpy and torch both accept
POSITIVE = Range(0, low_open=True)  # temperatures, epochs
NON_NEGATIVE = Range(0)  # weights
SHARE = Range(0, 1, high_open=True)  # dropout, warm-up share: [0, 1)
OPEN_SHARE = Range(0, 1, low_open=True, high_open=True)  # quantiles, shares kept: (0, 1)
RATE = Range(0, 1, low_open=True)  # learning rates: (0, 1]
RATIO = Range(1, low_open=True)  # "times the median": above 1

Number = TypeVar("Number", int, float)


def check_number(value: Number, name: str, valid: Range) -> Number:
    """``value`` when ``valid`` allows it, else a ``DataError`` naming ``name``."""
    problem = valid.problem(value)
    if problem is not None:
        raise DataError(f"{name} {problem}")
    return value


def check_numbers(values: dict[str, tuple[object, Range]]) -> None:
    """Every ``name: (value, range)``; ``None`` values (an unset option) pass."""
    for name, (value, valid) in values.items():
        if value is not None:
            check_number(value, name, valid)


def capped(requested: int | None, available: int, what: str, where: str) -> int:
    """How many of ``available`` items to use when ``requested`` (None: all) were asked for; a
    request above what exists is said in a notice, and zero items is an error (a score over
    nothing is never printed)."""
    if available < 1:
        raise DataError(f"no {what} in {where}")
    if requested is not None and requested > available:
        notice(f"only {available} {what} in {where}; using {available}")
    return available if requested is None else min(requested, available)


def select_capped(corpus: ParallelCorpus, languages: Iterable[str] | None, limit: int | None,
                  what: str = "sentences") -> ParallelCorpus:
    """``corpus.select(languages, limit)``, saying so when ``limit`` is more than a selected
    language has (and refusing a selection with no sentences)."""
    chosen = corpus.select(languages)
    fewest = min((len(side.sentences) for side in chosen.sides.values()), default=0)
    return chosen.select(None, capped(limit, fewest, f"{what} per language", corpus.name))
