"""``transfer`` (zero-shot transfer of a linear probe per layer, SIB-200), ``correlate``
(alignment vs downstream scores across languages) and ``export-mexa`` (MEXA-format JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from layer_analysis.probe.checks import COUNT_OR_NONE, POSITIVE, RATIO, SEED
from layer_analysis.probe.correlate import (
    METHODS,
    REPORT,
    CorrelationConfig,
    correlate_files,
    parse_covariates,
)
from layer_analysis.probe.correlate import (
    TABLE as CORRELATION,
)
from layer_analysis.probe.extract import (
    MIN_LENGTH,
    POOLINGS,
    SINK_MODES,
    SINK_RATIO,
    ExtractionConfig,
)
from layer_analysis.probe.files import writer_lock
from layer_analysis.probe.mexa_export import export_mexa
from layer_analysis.probe.runs import read_model_run
from layer_analysis.probe.tokenization import COVARIATES
from layer_analysis.probe.transfer import ProbeConfig
from layer_analysis.probe.transfer_run import (
    SUMMARY,
    TABLE,
    TransferRequest,
    best_layers,
    compare_transfer_runs,
    execute_transfer,
)

from .options import (
    DefaultsFormatter,
    add_device_options,
    add_limit_option,
    add_model_options,
    add_progress_option,
    add_run_directory_options,
    parse_layers,
    real,
    run_settings,
    whole,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    transfer = sub.add_parser(
        "transfer", formatter_class=DefaultsFormatter,
        help="per-layer zero-shot transfer of a linear probe (SIB-200 topics), raw and centered",
        description="Pool every SIB-200 sentence of the chosen languages (the activation store "
                    "of 'run': same pooling and sink rule, cached, resumable), train a probe "
                    "(StandardScaler + LogisticRegression) per layer on the source's train "
                    "split and test it on every target's test split; beside it the in-language "
                    "ceiling, the transfer ratio and chance, accuracy and macro-F1 with 95 % "
                    "bootstrap CIs, on raw states and on states centered per language. Writes "
                    "OUTPUT/NAME/{transfer.csv,summary.csv,predictions.parquet,"
                    "tokenization.csv,manifest.json}.")
    add_model_options(transfer)
    transfer.add_argument("--data", default="sib200",
                          help="sib200 or a directory in its layout (<code>/{train,dev,test}.tsv)")
    transfer.add_argument("--languages", default="all",
                          help="comma-separated languages (any accepted spelling), or all")
    transfer.add_argument("--source", default="en", help="the language the probe is trained on")
    add_limit_option(transfer, what=", a seeded random sample of every split (SIB-200's test "
                                    "split is sorted by topic)")
    transfer.add_argument("--c", type=real(POSITIVE), default=1.0, help="LogisticRegression's C")
    transfer.add_argument("--max-iter", type=whole(), default=1000, help="solver iterations")
    transfer.add_argument("--no-ceiling", action="store_true",
                          help="skip the in-language probes (one fit per target and layer)")
    transfer.add_argument("--bootstrap", type=whole(), default=1000, help="bootstrap resamples")
    transfer.add_argument("--seed", type=whole(SEED), default=0)
    transfer.add_argument("--pooling", default="mean", choices=POOLINGS)
    transfer.add_argument("--layers", type=parse_layers, default=None, metavar="all|0,4,8|2-10")
    transfer.add_argument("--sinks", default="exclude", choices=SINK_MODES)
    transfer.add_argument("--sink-ratio", type=real(RATIO), default=SINK_RATIO)
    transfer.add_argument("--max-length", type=whole(MIN_LENGTH), default=256)
    transfer.add_argument("--batch-size", type=whole(), default=32)
    transfer.add_argument("--group-size", type=whole(), default=16,
                          help="languages extracted and held in memory at once")
    add_device_options(transfer)
    transfer.add_argument("--store", type=Path, help="activation store (default: OUTPUT/store)")
    add_progress_option(transfer)
    add_run_directory_options(transfer, "MODEL-transfer-DATA-SOURCE-KEY", static=False)

    corr = sub.add_parser(
        "correlate", formatter_class=DefaultsFormatter,
        help="does alignment predict downstream scores? correlation across languages per layer",
        description="Per layer of an alignment run (and for MEXA's mean and max over layers): "
                    "Pearson and Spearman across languages between alignment with English and "
                    "each downstream score table, with bootstrap CIs over languages, permutation "
                    "p-values, and partial correlations controlling for the run's tokenization "
                    "(tokenization.csv). Writes OUTPUT/{correlation.csv,scores.csv,"
                    "correlation.html,manifest.json}.")
    corr.add_argument("alignment", type=Path,
                      help="an alignment run directory, or a directory of MEXA <code>.json files")
    corr.add_argument("--scores", type=Path, nargs="+", required=True,
                      help="transfer run directories, 'evaluate' .json outputs, or CSVs with "
                           "language and score columns")
    corr.add_argument("--metric", default="p@1", help="alignment metric of the run's table "
                                                      "(p@1, mexa, mrr, ...)")
    corr.add_argument("--normalisation", default="centered")
    corr.add_argument("--score-column", default="score", help="the CSVs' score column")
    corr.add_argument("--transfer-variant", default="centered", choices=["raw", "centered"])
    corr.add_argument("--transfer-metric", default="accuracy", choices=["accuracy", "macro_f1"])
    corr.add_argument("--transfer-layer", type=whole(COUNT_OR_NONE),
                      help="transfer score at this layer (default: the variant's best layer)")
    corr.add_argument("--covariates", default=",".join(COVARIATES),
                      help="tokenization covariates to partial out (also: script), or none")
    corr.add_argument("--layer", type=whole(COUNT_OR_NONE),
                      help="layer of the labelled scatter (default: the alignment's peak, "
                           "averaged over languages)")
    corr.add_argument("--bootstrap", type=whole(), default=1000)
    corr.add_argument("--permutations", type=whole(), default=2000)
    corr.add_argument("--seed", type=whole(SEED), default=0)
    corr.add_argument("--output", type=Path, required=True, help="directory to write")
    corr.add_argument("--overwrite", action="store_true",
                      help="replace an earlier correlation in --output")

    paired = sub.add_parser(
        "transfer-compare", formatter_class=DefaultsFormatter,
        help="two transfer runs on the same data (base vs adapter): paired per-sentence "
             "differences of accuracy per layer",
        description="Run B minus run A per test sentence (correct or not), per variant, target "
                    "and layer: the mean difference with a 95 % bootstrap CI over sentences, a "
                    "sign-flip p-value and Benjamini-Hochberg q over layers. Writes OUTPUT.")
    paired.add_argument("a", type=Path, help="the reference transfer run (e.g. the base model)")
    paired.add_argument("b", type=Path, help="the other transfer run (e.g. an adapter)")
    paired.add_argument("--output", type=Path, required=True, help="CSV to write")
    paired.add_argument("--bootstrap", type=whole(), default=1000)
    paired.add_argument("--seed", type=whole(SEED), default=0)

    export = sub.add_parser(
        "export-mexa", formatter_class=DefaultsFormatter,
        help="write a run's scores as MEXA's per-language JSON files (every run does so too)",
        description="OUTPUT/strict/<code>.json (MEXA's strict score on raw cosines) and "
                    "OUTPUT/centered_p1/<code>.json (centered P@1), each {layer: score}, as "
                    "cisnlp/Mexa's compute_mexa.py writes them.")
    export.add_argument("run", type=Path, help="an alignment run directory")
    export.add_argument("--output", type=Path, help="default: RUN/mexa_export")
    export.add_argument("--pooling", choices=POOLINGS,
                        help="the pooling exported (default: the run's first)")


def cmd_transfer(args: argparse.Namespace) -> None:
    request = TransferRequest(
        **run_settings(args), data=args.data,
        languages=None if args.languages == "all" else args.languages.split(","),
        source=args.source, limit=args.limit,
        probe=ProbeConfig(c=args.c, max_iter=args.max_iter, bootstrap=args.bootstrap,
                          seed=args.seed, ceiling=not args.no_ceiling),
        extraction=ExtractionConfig(poolings=(args.pooling,), layers=args.layers,
                                    max_length=args.max_length, sinks=args.sinks,
                                    sink_ratio=args.sink_ratio),
        batch_size=args.batch_size, group_size=args.group_size, store=args.store,
        progress_bars=not args.no_progress)
    run_dir = execute_transfer(request, ["layer-analysis", *sys.argv[1:]])
    if run_dir is None:
        return
    summary = pd.read_csv(run_dir / SUMMARY)
    grid = summary[summary.metric == "accuracy"].pivot_table(
        index="layer", columns=["variant", "setting"], values="mean")
    print("Mean accuracy over targets (transfer from the source, in-language ceiling, ratio):")
    print(grid.to_string(float_format=lambda v: f"{v:.3f}"))
    for row in best_layers(summary).itertuples():
        print(f"best transfer layer ({row.variant}): {row.layer} ({row.mean:.3f}; chance "
              f"{row.chance:.3f})")
    print(f"\nrun: {run_dir}\ntable: {run_dir / TABLE}")


def cmd_correlate(args: argparse.Namespace) -> None:
    config = CorrelationConfig(bootstrap=args.bootstrap, permutations=args.permutations,
                               seed=args.seed, covariates=parse_covariates(args.covariates))
    alignment, output, table = correlate_files(
        args.alignment, args.scores, args.output, config, args.metric, args.normalisation,
        args.score_column, args.transfer_variant, args.transfer_metric, args.transfer_layer,
        args.layer, ["layer-analysis", *sys.argv[1:]], args.overwrite)
    shown = table[table.method.isin(METHODS)]
    grid = shown.pivot_table(index=["score", "aggregation", "layer"], columns="method",
                             values="r", dropna=False, sort=False)
    print(f"Correlation across languages with {alignment.name} (r):")
    print(grid.to_string(float_format=lambda v: f"{v:+.2f}"))
    print("\n".join(json.loads((output / "manifest.json").read_text())["summary"]))
    print(f"\ntable: {output / CORRELATION}\nreport: {output / REPORT}")


def cmd_transfer_compare(args: argparse.Namespace) -> None:
    table = compare_transfer_runs(args.a, args.b, args.output, args.bootstrap, seed=args.seed)
    moved = table[(table.setting == "transfer") & (table.q_value < 0.05)]
    print(f"{len(moved)} of {int((table.setting == 'transfer').sum())} transfer curves' layers "
          "moved (q < 0.05):")
    if not moved.empty:
        print(moved.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    print(f"\ntable: {args.output}")


def cmd_export_mexa(args: argparse.Namespace) -> None:
    results = read_model_run(args.run)
    with writer_lock(args.run):  # it writes into the run directory (by default)
        target = export_mexa(args.run, results.table, args.pooling, args.output)
    if target is not None:
        print(target)


HANDLERS = {"transfer": cmd_transfer, "transfer-compare": cmd_transfer_compare,
            "correlate": cmd_correlate, "export-mexa": cmd_export_mexa}
