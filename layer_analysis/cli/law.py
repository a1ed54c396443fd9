"""``layer-analysis sweep``, ``fit-law`` and ``allocate``: the translation-data scaling law
and the budgeted MuIT mixture it recommends."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from layer_analysis.probe import report
from layer_analysis.probe.checks import COUNT_OR_NONE
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.files import atomic_write_text
from layer_analysis.probe.languages import canonical, display_name
from layer_analysis.probe.runs import check_run_directory, run_writer
from layer_analysis.train.allocate import Allocation, available_pairs
from layer_analysis.train.law import (
    FAMILIES,
    LawFit,
    NoSizeEffect,
    compare_families,
    load_fit,
    no_size_effect,
)
from layer_analysis.train.sweep import read_points

from .options import DefaultsFormatter, add_model_options, add_static_option, listed, whole
from .training import PAIRS, TRAIN_MODEL, training_config, training_options

METRICS = ("chrf++", "spbleu", "xquad_f1", "xquad_f1_mlqa", "xquad_em", "xquad_contains",
           "alignment")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = DefaultsFormatter
    sweep = sub.add_parser(
        "sweep", formatter_class=fmt,
        help="x-models on growing amounts of translation data, each evaluated (resumable)",
        description="For every language and size: CoIT training on --instructions Alpaca "
                    "records (English and the language) plus SIZE English -> language pairs, "
                    "then chrF++ on FLORES devtest (and XQuAD with --xquad). The base model's "
                    "similarity to English is measured once by the probe. Rerun the same "
                    "command to resume; OUTPUT/sweep.csv holds the results.")
    sweep.add_argument("--languages", required=True, help="target languages, comma-separated")
    sweep.add_argument("--sizes", type=listed(COUNT_OR_NONE), default=[0, 250, 500, 1000, 2000, 4000],
                       help="translation pairs per point, comma-separated")
    sweep.add_argument("--instructions", type=whole(COUNT_OR_NONE), default=100,
                       help="Alpaca records per language at every point")
    add_model_options(sweep, TRAIN_MODEL, "base model", adapter=False)
    sweep.add_argument("--output", type=Path, required=True, help="sweep directory")
    sweep.add_argument("--eval-sentences", type=whole(), default=50, help="FLORES devtest sentences")
    sweep.add_argument("--max-new-tokens", type=whole(), default=100)
    sweep.add_argument("--xquad", type=whole(COUNT_OR_NONE), default=0,
                       help="XQuAD questions per point (0: none)")
    sweep.add_argument("--similarity-data", default="flores-dev",
                       help="parallel data for the similarity score")
    sweep.add_argument("--similarity-sentences", type=whole(PAIRS), default=200)
    training_options(sweep)

    fit = sub.add_parser(
        "fit-law", formatter_class=fmt,
        help="fit scaling laws to a sweep and say which family the data support",
        description="Fits P_L(n) = b_L + A·exp(γ(s_L − s̄))·g(n; β) for g = power, log, "
                    "saturating (see train/law.py) by least squares; ranks them by AICc and "
                    "leave-one-out RMSE. Writes DIR/law.json, law.csv and a report.")
    fit.add_argument("sweep", type=Path, help="sweep directory (or a CSV with language, pairs, "
                                              "similarity and the metric)")
    fit.add_argument("--metric", default="chrf++", choices=METRICS)
    fit.add_argument("--family", default="all", choices=["all", *FAMILIES])
    fit.add_argument("--output", type=Path, help="directory (default: SWEEP/law)")
    add_static_option(fit)
    fit.add_argument("--overwrite", action="store_true", help="replace an existing law")

    alloc = sub.add_parser(
        "allocate", formatter_class=fmt,
        help="split a budget of translation pairs across languages by the fitted law",
        description="Maximises the summed (or lowest) predicted score subject to the budget and "
                    "per-language caps (default: the pairs available in ../shared/data), and "
                    "compares with the uniform split. Writes a MuIT mixture spec for "
                    "`layer-analysis train --mixture \"$(cat DIR/allocated.spec)\"`.")
    alloc.add_argument("law", type=Path, help="law.json written by fit-law")
    alloc.add_argument("--budget", type=whole(COUNT_OR_NONE), required=True, help="total translation pairs")
    alloc.add_argument("--caps", help="per-language limits, e.g. 'el=500,zh=8000'")
    alloc.add_argument("--objective", default="sum", choices=["sum", "min"])
    alloc.add_argument("--family", help="which fitted family (default: the best)")
    alloc.add_argument("--instructions", type=whole(COUNT_OR_NONE), default=100,
                       help="Alpaca records per language in the written specs")
    alloc.add_argument("--step", type=whole(), help="allocation granularity in pairs "
                                                "(default: budget / 400)")
    alloc.add_argument("--output", type=Path, help="directory (default: beside law.json)")
    add_static_option(alloc)
    alloc.add_argument("--overwrite", action="store_true", help="replace an existing allocation")


def cmd_sweep(args: argparse.Namespace) -> None:
    from layer_analysis.train.sweep import SweepConfig, run_sweep

    config = SweepConfig(
        languages=args.languages.split(","), sizes=args.sizes, output=args.output,
        training=training_config(args, "", args.output), instructions=args.instructions,
        eval_sentences=args.eval_sentences, max_new_tokens=args.max_new_tokens,
        xquad=args.xquad, similarity_data=args.similarity_data,
        similarity_sentences=args.similarity_sentences)
    table = run_sweep(config)
    columns = [c for c in ("name", "pairs", "similarity", "chrf++", "xquad_f1", "steps")
               if c in table]
    print(table[columns].to_string(index=False))
    print(f"table: {args.output / 'sweep.csv'}  (fit it: layer-analysis fit-law {args.output})")


def _fit_lines(fit: LawFit) -> list[str]:
    p, e = fit.params, fit.errors
    lines = [f"{fit.family:<11} AICc {fit.aicc:8.2f}  RMSE {fit.rmse:.3f}  R² {fit.r2:.3f}  "
             f"leave-one-out RMSE {fit.loo_rmse:.3f}",
             f"    A = {p['A']:.3f} ± {e['A']:.3f}   β = {p['beta']:.3f} ± {e['beta']:.3f}   "
             f"γ = {p['gamma']:.3f} ± {e['gamma']:.3f}",
             "    b_L: " + ", ".join(f"{display_name(x)} {b:.2f} ± {fit.baseline_errors[x]:.2f}"
                                    for x, b in fit.baselines.items())]
    return lines + [f"    note: {n}" for n in fit.notes]


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


def cmd_fit_law(args: argparse.Namespace) -> None:
    out = args.output or (args.sweep if args.sweep.is_dir() else args.sweep.parent) / "law"
    check_run_directory(out, "law", args.overwrite)  # before any work
    points = read_points(args.sweep, args.metric)
    similarity = dict(zip(points.language, points.similarity, strict=True))
    families = None if args.family == "all" else [args.family]
    fits = compare_families(list(points.language), list(points.pairs), list(points[args.metric]),
                            similarity, families)
    null = no_size_effect(list(points.language), list(points[args.metric]))
    with run_writer(out, "law", args.overwrite):
        _write_law(args, out, points, fits, null, similarity)


def _write_law(args: argparse.Namespace, out: Path, points: pd.DataFrame, fits: list[LawFit],
               null: NoSizeEffect, similarity: dict[str, float]) -> None:
    from layer_analysis.train.law_report import law_curves, predicted_vs_measured

    (out / "law.json").unlink(missing_ok=True)  # written last: the law is complete with it
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
    atomic_write_text(out / "law.csv", pd.DataFrame(rows).to_csv(index=False))
    for fit in fits:
        print("\n".join(_fit_lines(fit)))
    if len(fits) > 1 and math.isfinite(fits[1].aicc):
        delta = fits[1].aicc - fits[0].aicc
        verdict = (f"the data support the {fits[0].family} law" if delta >= 2 else
                   f"the {fits[0].family} law fits best, but not decisively (ΔAICc < 2: the "
                   "points do not tell the families apart)")
        print(f"{verdict}; ΔAICc to {fits[1].family}: {delta:.2f}")
    elif len(fits) > 1:
        print("too few points beyond the parameters to compare the families (AICc undefined)")
    print("\n".join(size_effect_lines(fits[0], null)))
    measured = points.assign(model="x-models (sweep)", measured=points[args.metric],
                             predicted=[float(fits[0].predict(x, n)) for x, n in
                                        zip(points.language, points.pairs, strict=True)])
    figures = {"law_curves": law_curves(points, fits, args.metric),
               "law_predicted_vs_measured": predicted_vs_measured(measured, args.metric)}
    report.export(figures, out, f"Scaling law of {args.metric}",
                  ["s_L: " + ", ".join(f"{display_name(x)} {s:.3f}"
                                       for x, s in similarity.items())],
                  static=not args.no_static, model="x-models (sweep)")
    atomic_write_text(out / "law.json", json.dumps(
        {"metric": args.metric, "best": fits[0].family, "fits": [
            {**f.as_dict(), "explained_within": null.explained(f)} for f in fits],
         "no_size_effect": asdict(null)}, indent=2))
    print(f"law: {out / 'law.json'}  (allocate: layer-analysis allocate {out / 'law.json'} "
          "--budget N)")


def _caps(text: str | None, languages: list[str]) -> dict[str, int]:
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


def cmd_allocate(args: argparse.Namespace) -> None:
    from layer_analysis.train.allocate import allocate, uniform

    out = args.output or args.law.parent / "allocation"
    check_run_directory(out, "allocation", args.overwrite)  # before any work
    fit = load_fit(args.law, args.family)
    caps = _caps(args.caps, list(fit.baselines))
    best = allocate(fit, args.budget, caps, args.objective, args.step)
    even = uniform(fit, args.budget, caps, args.objective)
    with run_writer(out, "allocation", args.overwrite):
        _write_allocation(args, out, fit, caps, best, even)


def _write_allocation(args: argparse.Namespace, out: Path, fit: LawFit, caps: dict[str, int],
                      best: Allocation, even: Allocation) -> None:
    from layer_analysis.train.law_report import allocation_bars
    from layer_analysis.train.mixture import instruction_translation_spec

    (out / "allocation.json").unlink(missing_ok=True)  # written last: complete with it
    specs = {name: instruction_translation_spec(args.instructions, a.pairs)
             for name, a in (("allocated", best), ("uniform", even))}
    for name, spec in specs.items():
        atomic_write_text(out / f"{name}.spec", spec + "\n")
    print(f"{'language':<12}{'cap':>8}{'law-optimal':>13}{'predicted':>11}{'uniform':>9}"
          f"{'predicted':>11}")
    for x in best.pairs:
        print(f"{display_name(x):<12}{caps[x]:>8}{best.pairs[x]:>13}{best.predicted[x]:>11.2f}"
              f"{even.pairs[x]:>9}{even.predicted[x]:>11.2f}")
    print(f"{args.objective} of predicted scores: law-optimal {best.value:.2f}, uniform "
          f"{even.value:.2f}")
    print(f"spec: {specs['allocated']}")
    figures = {"allocation": allocation_bars(best, even, args.budget)}
    report.export(figures, out, "Budgeted allocation of translation data",
                  static=not args.no_static, model=f"{fit.family} law of {args.law}")
    atomic_write_text(out / "allocation.json", json.dumps({
        "law": str(args.law), "family": fit.family, "budget": args.budget, "caps": caps,
        "objective": args.objective, "allocated": best.rows(), "uniform": even.rows(),
        "value": {"allocated": best.value, "uniform": even.value}, "specs": specs}, indent=2))
    print(f"train it: layer-analysis train --mixture \"$(cat {out / 'allocated.spec'})\" "
          "--output DIR")


HANDLERS = {"sweep": cmd_sweep, "fit-law": cmd_fit_law, "allocate": cmd_allocate}
