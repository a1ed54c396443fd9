"""``transfer``: zero-shot cross-lingual transfer of a linear probe per layer (SIB-200)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from layer_analysis.probe.extract import POOLINGS, SINK_MODES, SINK_RATIO, ExtractionConfig
from layer_analysis.probe.models import DEFAULT_MODEL
from layer_analysis.probe.transfer import ProbeConfig
from layer_analysis.probe.transfer_run import (
    SUMMARY,
    TABLE,
    TransferRequest,
    best_layers,
    execute_transfer,
)

from .options import DefaultsFormatter, add_device_options, parse_layers, run_settings


def add_parsers(sub: argparse._SubParsersAction) -> None:
    transfer = sub.add_parser(
        "transfer", formatter_class=DefaultsFormatter,
        help="per-layer zero-shot transfer of a linear probe (SIB-200 topics), raw and centered",
        description="Pool every SIB-200 sentence of the chosen languages (the activation store "
                    "of 'run': same pooling and sink rule, cached, resumable), train a probe "
                    "(StandardScaler + LogisticRegression) per layer on the source's train "
                    "split and test it on every target's test split; beside it the in-language "
                    "ceiling, the transfer ratio and chance, accuracy and macro-F1 with 95 %% "
                    "bootstrap CIs, on raw states and on states centered per language. Writes "
                    "OUTPUT/NAME/{transfer.csv,summary.csv,predictions.parquet,"
                    "tokenization.csv,manifest.json}.")
    transfer.add_argument("--model", default=DEFAULT_MODEL)
    transfer.add_argument("--adapter", help="PEFT adapter directory to apply on top of --model")
    transfer.add_argument("--data", default="sib200",
                          help="sib200 or a directory in its layout (<code>/{train,dev,test}.tsv)")
    transfer.add_argument("--languages", default="all",
                          help="comma-separated languages (any accepted spelling), or all")
    transfer.add_argument("--source", default="en", help="the language the probe is trained on")
    transfer.add_argument("--limit", type=int, help="the first N rows of every split")
    transfer.add_argument("--c", type=float, default=1.0, help="LogisticRegression's C")
    transfer.add_argument("--max-iter", type=int, default=1000, help="solver iterations")
    transfer.add_argument("--no-ceiling", action="store_true",
                          help="skip the in-language probes (one fit per target and layer)")
    transfer.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    transfer.add_argument("--seed", type=int, default=0)
    transfer.add_argument("--pooling", default="mean", choices=POOLINGS)
    transfer.add_argument("--layers", type=parse_layers, default=None, metavar="all|0,4,8|2-10")
    transfer.add_argument("--sinks", default="exclude", choices=SINK_MODES)
    transfer.add_argument("--sink-ratio", type=float, default=SINK_RATIO)
    transfer.add_argument("--max-length", type=int, default=256)
    transfer.add_argument("--batch-size", type=int, default=32)
    transfer.add_argument("--group-size", type=int, default=16,
                          help="languages extracted and held in memory at once")
    add_device_options(transfer)
    transfer.add_argument("--store", type=Path, help="activation store (default: OUTPUT/store)")
    transfer.add_argument("--no-progress", action="store_true")
    transfer.add_argument("--output", type=Path, default=Path("runs"), help="directory of runs")
    transfer.add_argument("--name", help="run name (default: MODEL-transfer-DATA-SOURCE)")
    transfer.add_argument("--overwrite", action="store_true")


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


HANDLERS = {"transfer": cmd_transfer}
