"""Budgeted allocation of translation pairs across languages for MuIT, from a fitted law.

Maximise the summed (``sum``) or the lowest (``min``) predicted score subject to
Σ n_L ≤ B and 0 ≤ n_L ≤ cap_L. Allocations are multiples of ``step`` pairs; on that grid the
dynamic programme is exact for any shape of law (concave or not), and spending less than the
budget is allowed when more data would lower a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layer_analysis.probe.data import read_lines
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.languages import ENGLISH

from .law import LawFit
from .mixture import translation_files

OBJECTIVES = ("sum", "min")


@dataclass
class Allocation:
    pairs: dict[str, int]  # language -> translation pairs
    predicted: dict[str, float]
    objective: str
    value: float  # summed or lowest predicted score

    def rows(self) -> list[dict]:
        return [{"language": x, "pairs": n, "predicted": self.predicted[x]}
                for x, n in self.pairs.items()]


def _check(fit: LawFit, budget: int, caps: dict[str, int], objective: str) -> list[str]:
    if objective not in OBJECTIVES:
        raise DataError(f"unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    if budget < 0:
        raise DataError(f"the budget must be ≥ 0 translation pairs, not {budget}")
    bad = {x: c for x, c in caps.items() if c < 0}
    if bad:
        raise DataError(f"caps must be ≥ 0: {bad}")
    unknown = [x for x in caps if x not in fit.baselines]
    if unknown:
        raise DataError(f"caps name languages the law was not fitted on: {', '.join(unknown)}")
    return list(fit.baselines)


def _evaluate(fit: LawFit, pairs: dict[str, int], objective: str) -> Allocation:
    predicted = {x: float(fit.predict(x, n)) for x, n in pairs.items()}
    values = list(predicted.values())
    return Allocation(pairs, predicted, objective, sum(values) if objective == "sum"
                      else min(values))


def allocate(fit: LawFit, budget: int, caps: dict[str, int] | None = None,
             objective: str = "sum", step: int | None = None) -> Allocation:
    """The best allocation of ``budget`` pairs on a grid of ``step`` (default ~1/400 of what the
    budget and caps let be spent). A grid too coarse to beat equal shares (by more than rounding
    each share to the grid can cost) is an error, never a printed "optimum" below uniform."""
    caps = caps or {}
    languages = _check(fit, budget, caps, objective)
    usable = min(budget, sum(caps.get(x, budget) for x in languages))
    step = step or max(1, usable // 400)
    if step <= 0:
        raise DataError("the allocation step must be ≥ 1 pair")
    if usable and step > usable:
        raise DataError(f"the allocation step ({step} pairs) exceeds what the budget and caps let "
                        f"be spent ({usable} pairs): lower --step")
    units = usable // step  # never more than the budget and caps let be spent
    k = np.arange(units + 1)
    best = None  # best[u]: objective of the languages so far using exactly u units
    choices = []
    for x in languages:
        value = fit.predict(x, k * step).astype(float)
        value[k * step > caps.get(x, budget)] = -np.inf
        if best is None:
            best, choice = value, k
        else:
            # grid[u, j]: previous languages use u - j units, this one j
            u, j = np.meshgrid(k, k, indexing="ij")
            prev = np.where(j <= u, best[np.clip(u - j, 0, None)], -np.inf)
            grid = prev + value[j] if objective == "sum" else np.minimum(prev, value[j])
            grid[j > u] = -np.inf
            choice = grid.argmax(axis=1)
            best = grid[k, choice]
        choices.append(choice)
    u = int(np.argmax(best))
    if not np.isfinite(best[u]):
        raise DataError("no allocation satisfies the caps")
    pairs = {}
    for x, choice in zip(reversed(languages), reversed(choices), strict=True):
        j = int(choice[u])  # the first language's choice is u itself
        pairs[x] = j * step
        u -= j
    best_allocation = _evaluate(fit, dict(reversed(list(pairs.items()))), objective)
    even = uniform(fit, budget, caps, objective)
    # what rounding each share to the grid can cost: one step of every language's law
    slack = sum(abs(float(fit.predict(x, n + step)) - float(fit.predict(x, n)))
                for x, n in even.pairs.items())
    if best_allocation.value < even.value - slack - 1e-9:
        raise DataError(f"on a grid of {step} pairs the best allocation ({best_allocation.value:.2f})"
                        f" is worse than equal shares ({even.value:.2f}): the grid is too coarse "
                        "for the caps; lower --step")
    return best_allocation


def uniform(fit: LawFit, budget: int, caps: dict[str, int] | None = None,
            objective: str = "sum") -> Allocation:
    """Equal shares of the budget; what a capped language cannot take goes to the others."""
    caps = caps or {}
    languages = _check(fit, budget, caps, objective)
    pairs = dict.fromkeys(languages, 0)
    left, open_ = budget, list(languages)
    while left > 0 and open_:
        share, extra = divmod(left, len(open_))
        for i, x in enumerate(list(open_)):
            give = min(share + (i < extra), caps.get(x, budget) - pairs[x])
            pairs[x] += give
            left -= give
            if pairs[x] >= caps.get(x, budget):
                open_.remove(x)
        if share == 0 and extra == 0:
            break
    return _evaluate(fit, pairs, objective)


def available_pairs(languages: list[str]) -> dict[str, int]:
    """English -> X translation pairs the data here holds, per language (0 where none)."""
    caps = {}
    for x in languages:
        try:
            caps[x] = len(read_lines(translation_files(ENGLISH, x)[0], allow_empty=True))
        except DataError:
            caps[x] = 0
    return caps
