"""``layer-analysis sweep``, ``fit-law`` and ``allocate``: the translation-data scaling law
and the budgeted MuIT mixture it recommends."""

from __future__ import annotations

import argparse
from pathlib import Path

from layer_analysis.probe.checks import COUNT_OR_NONE
from layer_analysis.train.law import FAMILIES
from layer_analysis.train.law_run import (
    METRICS,
    AllocationRequest,
    LawRequest,
    execute_allocation,
    execute_fit_law,
)

from .options import DefaultsFormatter, add_model_options, add_static_option, listed, whole
from .training import PAIRS, TRAIN_MODEL, training_config, training_options


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
    fit.add_argument("--overwrite", action="store_true",
                     help="replace an existing law (and remove the allocations made from it in "
                          "its directory)")

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


def cmd_fit_law(args: argparse.Namespace) -> None:
    request = LawRequest(sweep=args.sweep, metric=args.metric, family=args.family,
                         output=args.output, static=not args.no_static, overwrite=args.overwrite)
    _, lines = execute_fit_law(request)
    print("\n".join(lines))


def cmd_allocate(args: argparse.Namespace) -> None:
    request = AllocationRequest(
        law=args.law, budget=args.budget, caps=args.caps, objective=args.objective,
        family=args.family, instructions=args.instructions, step=args.step, output=args.output,
        static=not args.no_static, overwrite=args.overwrite)
    _, lines = execute_allocation(request)
    print("\n".join(lines))


HANDLERS = {"sweep": cmd_sweep, "fit-law": cmd_fit_law, "allocate": cmd_allocate}
