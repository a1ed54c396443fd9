"""One ``fit-law`` and one ``allocate`` run: from a request to an output directory and the lines
the command prints (``la.fit_law`` and ``la.allocate`` call the same functions).

    fit-law   DIR/law.csv              every family's parameters, errors and fit quality, and
                                       the no-size-effect null's (default DIR: SWEEP/law)
              DIR/law.json             the fits and the null; written last: the law is complete
                                       with it (``train.law.load_fit`` reads it)
    allocate  DIR/allocated.spec,      MuIT mixture specs of the law-optimal and the uniform
              DIR/uniform.spec         split (``train --mixture``)
              DIR/allocation.json      both splits, their predictions and the settings; written
                                       last (default DIR: allocation/ beside law.json)
    both      DIR/report.html, DIR/figures/  the figures (``train.law_report``)

Each reads its input first (a missing sweep or law is said as such), then checks its output
directory before any work (``runs.check_run_directory``) and writes it as its one writer
(``runs.run_writer``). A law written again removes the allocations inside its directory that
were made from the earlier law (``earlier_allocations``: their ``allocation.json`` names it),
with a notice: their predictions were the old fit's. Only the files ``allocate`` writes go
(``allocation_files``); a directory holding anything else keeps it, and the notice says so. The
verdict (which law the points support, whether data size predicts the metric at all) is
``law_summary``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from layer_analysis.probe import report
from layer_analysis.probe.checks import COUNT, COUNT_OR_NONE, check_numbers
from layer_analysis.probe.errors import DataError, ProbeError, notice
from layer_analysis.probe.files import WRITER_LOCK, atomic_write_text, writer_lock
from layer_analysis.probe.languages import canonical, display_name
from layer_analysis.probe.readers import read_json
from layer_analysis.probe.runs import OUR_FILES, check_run_directory, run_writer

from .allocate import Allocation, allocate, available_pairs, uniform
from .law import LawFit, NoSizeEffect, compare_families, load_fit, no_size_effect
from .sweep import read_points

METRICS = ("chrf++", "spbleu", "xquad_f1", "xquad_f1_mlqa", "xquad_em", "xquad_contains",
           "alignment")
"""The sweep table's columns a law can be fitted to."""
LAW = "law.json"
LAW_TABLE = "law.csv"
ALLOCATION = "allocation.json"
ALLOCATION_FIGURE = "allocation"  # allocate's one figure (report.html, figures/RUN-allocation.*)


# ------------------------------------------------------------------------------- fit-law


@dataclass(frozen=True)
class LawRequest:
    """``fit-law``: the sweep (its directory, a CSV with language, pairs, similarity and the
    metric, or that table as a DataFrame), the metric, ``all`` families or one, the output
    directory (None: SWEEP/law, law/ beside a CSV; a DataFrame has no default)."""

    sweep: Path | pd.DataFrame
    metric: str = "chrf++"
    family: str = "all"
    output: Path | None = None
    static: bool = True
    overwrite: bool = False

    def directory(self) -> Path:
        if self.output is not None:
            return self.output
        if isinstance(self.sweep, pd.DataFrame):
            raise DataError("points given as a DataFrame have no sweep directory to write the law "
                            "beside: pass output= (the law's directory)")
        return (self.sweep if self.sweep.is_dir() else self.sweep.parent) / "law"


def fit_lines(fit: LawFit) -> list[str]:
    """One fitted family: its fit quality, shared parameters, baselines and notes."""
    p, e = fit.params, fit.errors
    lines = [f"{fit.family:<11} AICc {fit.aicc:8.2f}  RMSE {fit.rmse:.3f}  R² {fit.r2:.3f}  "
             f"leave-one-out RMSE {fit.loo_rmse:.3f}",
             f"    A = {p['A']:.3f} ± {e['A']:.3f}   β = {p['beta']:.3f} ± {e['beta']:.3f}   "
             f"γ = {p['gamma']:.3f} ± {e['gamma']:.3f}",
             "    b_L: " + ", ".join(f"{display_name(x)} {b:.2f} ± {fit.baseline_errors[x]:.2f}"
                                    for x, b in fit.baselines.items())]
    return lines + [f"    note: {n}" for n in fit.notes]


def family_lines(fits: list[LawFit]) -> list[str]:
    """Which family the points support (``fits`` best first): ΔAICc ≥ 2 to the next decides."""
    if len(fits) > 1 and math.isfinite(fits[1].aicc):
        delta = fits[1].aicc - fits[0].aicc
        verdict = (f"the data support the {fits[0].family} law" if delta >= 2 else
                   f"the {fits[0].family} law fits best, but not decisively (ΔAICc < 2: the "
                   "points do not tell the families apart)")
        return [f"{verdict}; ΔAICc to {fits[1].family}: {delta:.2f}"]
    if len(fits) > 1:
        return ["too few points beyond the parameters to compare the families (AICc undefined)"]
    return []


def size_effect_lines(best: LawFit, null: NoSizeEffect) -> list[str]:
    """Whether data size predicts the metric at all: the best law against no size effect."""
    head = (f"{'no size effect':<11} AICc {null.aicc:8.2f}  RMSE {null.rmse:.3f}  "
            f"leave-one-out RMSE {null.loo_rmse:.3f}  (each language's mean, whatever n)")
    delta = null.aicc - best.aicc
    if not math.isfinite(delta):
        return [head, "too few points to weigh a size effect (AICc undefined)"]
    if best.loo_points != null.loo_points:  # compare held-out errors on the same points only
        return [head, f"size effect: ΔAICc {delta:+.2f} against no size effect; leave-one-out "
                      f"predicted {best.loo_points} points for the law and {null.loo_points} for "
                      "the null, so their errors are not compared: not settled by these points"]
    predicts = best.loo_rmse < null.loo_rmse  # out of sample, the law beats each language's mean
    if delta >= 2 and predicts:
        verdict = "data size predicts it"
    elif delta <= -2 and not predicts:
        verdict = "no size effect fits better: these points do not show that data size predicts it"
    elif predicts:
        verdict = ("the law predicts held-out points better but AICc does not accept its "
                   "parameters: suggestive, not settled by these points")
    else:
        verdict = "these points do not show that data size predicts it"
    return [head, f"size effect: the {best.family} law explains {null.explained(best):.0%} of "
                  f"the within-language variance, leave-one-out RMSE {best.loo_rmse:.3f} vs "
                  f"{null.loo_rmse:.3f}, ΔAICc {delta:+.2f} against no size effect: {verdict}"]


def law_summary(fits: list[LawFit], null: NoSizeEffect) -> list[str]:
    """What ``fit-law`` prints before the file it wrote: every family (best first), which one
    the points support, and whether data size predicts the metric at all."""
    return [line for fit in fits for line in fit_lines(fit)] + family_lines(fits) \
        + size_effect_lines(fits[0], null)


def law_table(fits: list[LawFit], null: NoSizeEffect) -> pd.DataFrame:
    """``law.csv``: family, parameter, value, stderr (shared parameters, baselines ``b[L]``, fit
    quality, the share of the within-language variance explained; the null's quality)."""
    rows = [{"family": f.family, "parameter": k, "value": v, "stderr": f.errors[k]}
            for f in fits for k, v in f.params.items()]
    rows += [{"family": f.family, "parameter": f"b[{x}]", "value": v,
              "stderr": f.baseline_errors[x]} for f in fits for x, v in f.baselines.items()]
    rows += [{"family": f.family, "parameter": q, "value": getattr(f, q), "stderr": None}
             for f in fits for q in ("rmse", "r2", "aicc", "loo_rmse")]
    rows += [{"family": f.family, "parameter": "explained_within", "value": null.explained(f),
              "stderr": None} for f in fits]
    rows += [{"family": "no size effect", "parameter": q, "value": getattr(null, q),
              "stderr": None} for q in ("rmse", "aicc", "loo_rmse")]
    return pd.DataFrame(rows)


def execute_fit_law(request: LawRequest) -> tuple[Path, list[str]]:
    """Fit the families (and the null) to the sweep's points and write the law: its directory
    and the lines ``fit-law`` prints. The points are read first, then the directory is checked,
    both before any work."""
    if request.metric not in METRICS:  # the command's choices
        raise DataError(f"unknown metric {request.metric!r}; choose from {', '.join(METRICS)}")
    points = read_points(request.sweep, request.metric)  # a missing sweep said before --output
    out = request.directory()
    check_run_directory(out, "law", request.overwrite)  # before any work
    similarity = dict(zip(points.language, points.similarity, strict=True))
    families = None if request.family == "all" else [request.family]
    fits = compare_families(list(points.language), list(points.pairs),
                            list(points[request.metric]), similarity, families)
    null = no_size_effect(list(points.language), list(points[request.metric]))
    with run_writer(out, "law", request.overwrite):
        _write_law(request, out, points, fits, null, similarity)
    return out, [*law_summary(fits, null),
                 f"law: {out / LAW}  (allocate: layer-analysis allocate {out / LAW} --budget N)"]


def _write_law(request: LawRequest, out: Path, points: pd.DataFrame, fits: list[LawFit],
               null: NoSizeEffect, similarity: dict[str, float]) -> None:
    from .law_report import law_curves, predicted_vs_measured

    (out / LAW).unlink(missing_ok=True)  # written last: the law is complete with it
    for earlier in earlier_allocations(out):  # their predictions were the earlier law's
        kept = _remove_allocation(earlier)
        if kept:
            shown = ", ".join(kept[:5]) + (", ..." if len(kept) > 5 else "")
            notice(f"removed the files of the allocation in {earlier}, made from the earlier "
                   f"law in {out} (run allocate again on the new one); kept the directory and "
                   f"what else it holds ({shown})")
        else:
            notice(f"removed {earlier}: an allocation made from the earlier law in {out} (run "
                   "allocate again on the new one)")
    atomic_write_text(out / LAW_TABLE, law_table(fits, null).to_csv(index=False))
    metric = request.metric
    measured = points.assign(model="x-models (sweep)", measured=points[metric],
                             predicted=[float(fits[0].predict(x, n)) for x, n in
                                        zip(points.language, points.pairs, strict=True)])
    figures = {"law_curves": law_curves(points, fits, metric),
               "law_predicted_vs_measured": predicted_vs_measured(measured, metric)}
    report.export(figures, out, f"Scaling law of {metric}",
                  ["s_L: " + ", ".join(f"{display_name(x)} {s:.3f}"
                                       for x, s in similarity.items())],
                  static=request.static, model="x-models (sweep)")
    atomic_write_text(out / LAW, json.dumps(
        {"metric": metric, "best": fits[0].family, "fits": [
            {**f.as_dict(), "explained_within": null.explained(f)} for f in fits],
         "no_size_effect": asdict(null), "verdict": law_summary(fits, null)}, indent=2))


def earlier_allocations(directory: Path) -> list[Path]:
    """The allocations inside a law's ``directory`` that were made from its law: each
    subdirectory (``allocation/``, ``allocate``'s default, or any other) whose
    ``allocation.json`` is an allocation's and names this ``law.json``. An allocation of another
    law, and a directory without such an ``allocation.json``, stay."""
    law = (directory / LAW).resolve()
    found = []
    children = sorted(directory.iterdir()) if directory.is_dir() else []
    for child in children:
        if child.is_symlink() or not child.is_dir():
            continue
        try:
            saved = read_json(child / ALLOCATION)
            named = Path(saved["law"]) if {"allocated", "uniform"} <= saved.keys() else None
        except (ProbeError, KeyError, TypeError, AttributeError):
            continue
        if named is not None and named.resolve() == law:
            found.append(child)
    return found


def allocation_files(directory: Path) -> list[Path]:
    """The files ``allocate`` writes into ``directory`` (``_write_allocation``, its figures and
    its writer's marks included): all that removing an allocation removes."""
    figures = directory / "figures"
    return [*(directory / name for name in (ALLOCATION, "allocated.spec", "uniform.spec",
                                            "report.html", *sorted(OUR_FILES))),
            *(figures / report.export_name(directory, ALLOCATION_FIGURE, ext)
              for ext in ("png", "pdf"))]


def _remove_allocation(directory: Path) -> list[str]:
    """Remove an allocation's files (``allocation_files``) as its one writer (an ``allocate``
    writing it now makes this a ``StoreError``: the law is not written), and the directory when
    nothing else is left; the names of what else it holds, kept."""
    with writer_lock(directory):
        figures = directory / "figures"
        for path in allocation_files(directory):
            if path.name == WRITER_LOCK or (path.parent == figures and figures.is_symlink()):
                continue  # the lock goes once released; never through a link
            if path.is_symlink() or path.is_file():
                path.unlink()
        if figures.is_dir() and not figures.is_symlink() and not any(figures.iterdir()):
            figures.rmdir()
        kept = sorted(p.name for p in directory.iterdir() if p.name not in OUR_FILES)
    for name in OUR_FILES:
        (directory / name).unlink(missing_ok=True)
    if not kept:
        directory.rmdir()
    return kept


def read_law(directory: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """``law.json`` and ``law.csv`` of a finished ``fit-law`` output (read strictly)."""
    directory = Path(directory)
    saved = read_json(directory / LAW)
    if not isinstance(saved, dict) or not {"best", "fits"} <= saved.keys():
        raise DataError(f"{directory / LAW} is not a law.json written by fit-law")
    try:
        table = pd.read_csv(directory / LAW_TABLE)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {directory / LAW_TABLE}: {exc}") from None
    return saved, table


# ------------------------------------------------------------------------------- allocate


@dataclass(frozen=True)
class AllocationRequest:
    """``allocate``: the law (``law.json``), the budget in pairs, per-language caps
    (``el=500,zh=8000``; default: the pairs the data holds), the objective (``sum`` or
    ``min``), the family (None: the best), Alpaca records per language in the written specs,
    the grid step (None: about budget / 400), the output directory (None: allocation/ beside
    law.json)."""

    law: Path
    budget: int
    caps: str | None = None
    objective: str = "sum"
    family: str | None = None
    instructions: int = 100
    step: int | None = None
    output: Path | None = None
    static: bool = True
    overwrite: bool = False

    def directory(self) -> Path:
        return self.output or self.law.parent / "allocation"


def parse_caps(text: str | None, languages: list[str]) -> dict[str, int]:
    """Per-language caps: the pairs the data holds, overridden by ``--caps el=500,zh=8000``."""
    caps = available_pairs(languages)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, value = item.partition("=")
        try:
            caps[canonical(name.strip(), "--caps")] = int(value)
        except ValueError as exc:
            raise DataError(f"--caps: expected LANGUAGE=PAIRS, got {item!r}") from exc
    return caps


def allocation_lines(best: Allocation, even: Allocation, caps: dict[str, int]) -> list[str]:
    """The law-optimal split beside the uniform one, per language, and both objectives."""
    lines = [f"{'language':<12}{'cap':>8}{'law-optimal':>13}{'predicted':>11}{'uniform':>9}"
             f"{'predicted':>11}"]
    lines += [f"{display_name(x):<12}{caps[x]:>8}{best.pairs[x]:>13}{best.predicted[x]:>11.2f}"
              f"{even.pairs[x]:>9}{even.predicted[x]:>11.2f}" for x in best.pairs]
    return [*lines, f"{best.objective} of predicted scores: law-optimal {best.value:.2f}, "
                    f"uniform {even.value:.2f}"]


def execute_allocation(request: AllocationRequest) -> tuple[Path, list[str]]:
    """Split the budget by the law (and uniformly) and write the allocation: its directory and
    the lines ``allocate`` prints. The law and the caps are read first, then the directory is
    checked, both before any work."""
    check_numbers({"--budget": (request.budget, COUNT_OR_NONE), "--step": (request.step, COUNT),
                   "--instructions": (request.instructions, COUNT_OR_NONE)})  # the command's
    fit = load_fit(request.law, request.family)  # a missing law said before --output's state
    caps = parse_caps(request.caps, list(fit.baselines))
    out = request.directory()
    check_run_directory(out, "allocation", request.overwrite)  # before any work
    best = allocate(fit, request.budget, caps, request.objective, request.step)
    even = uniform(fit, request.budget, caps, request.objective)
    with run_writer(out, "allocation", request.overwrite):
        specs = _write_allocation(request, out, fit, caps, best, even)
    return out, [*allocation_lines(best, even, caps), f"spec: {specs['allocated']}",
                 f"train it: layer-analysis train --mixture \"$(cat {out / 'allocated.spec'})\" "
                 "--output DIR"]


def _write_allocation(request: AllocationRequest, out: Path, fit: LawFit, caps: dict[str, int],
                      best: Allocation, even: Allocation) -> dict[str, str]:
    from .law_report import allocation_bars
    from .mixture import instruction_translation_spec

    (out / ALLOCATION).unlink(missing_ok=True)  # written last: complete with it
    specs = {name: instruction_translation_spec(request.instructions, a.pairs)
             for name, a in (("allocated", best), ("uniform", even))}
    for name, spec in specs.items():
        atomic_write_text(out / f"{name}.spec", spec + "\n")
    figures = {ALLOCATION_FIGURE: allocation_bars(best, even, request.budget)}
    report.export(figures, out, "Budgeted allocation of translation data",
                  static=request.static, model=f"{fit.family} law of {request.law}")
    atomic_write_text(out / ALLOCATION, json.dumps({
        "law": str(request.law), "family": fit.family, "budget": request.budget, "caps": caps,
        "objective": request.objective, "allocated": best.rows(), "uniform": even.rows(),
        "value": {"allocated": best.value, "uniform": even.value}, "specs": specs}, indent=2))
    return specs


def saved_allocations(saved: dict[str, Any]) -> dict[str, Allocation]:
    """The law-optimal (``allocated``) and ``uniform`` splits of an ``allocation.json``."""
    return {name: Allocation({r["language"]: r["pairs"] for r in saved[name]},
                             {r["language"]: r["predicted"] for r in saved[name]},
                             saved["objective"], saved["value"][name])
            for name in ("allocated", "uniform")}


def read_allocation(directory: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """``allocation.json`` of a finished ``allocate`` output (read strictly) and its tidy table:
    allocation (allocated or uniform), language, cap, pairs, predicted."""
    directory = Path(directory)
    saved = read_json(directory / ALLOCATION)
    try:
        splits = saved_allocations(saved)
        caps = saved["caps"]
        table = pd.DataFrame([{"allocation": name, "language": x, "cap": caps.get(x),
                               "pairs": n, "predicted": split.predicted[x]}
                              for name, split in splits.items() for x, n in split.pairs.items()])
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{directory / ALLOCATION} is not an allocation.json written by "
                        f"allocate ({exc!r})") from None
    return saved, table


def allocation_figures(saved: dict[str, Any]) -> dict[str, Any]:
    """The figure ``allocate`` exported, from its ``allocation.json``."""
    from .law_report import allocation_bars

    splits = saved_allocations(saved)
    return {"allocation": allocation_bars(splits["allocated"], splits["uniform"],
                                          saved["budget"])}
