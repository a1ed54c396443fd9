"""``layer-analysis mine``: bitext mining between two files (BUCC style), at scale."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from layer_analysis.probe.checks import COUNT_OR_NONE
from layer_analysis.probe.extract import MIN_LENGTH
from layer_analysis.probe.mining import MARGIN_K
from layer_analysis.probe.mining_run import SCORES, MiningRequest, execute_mining

from .options import (
    DefaultsFormatter,
    add_device_options,
    add_model_options,
    add_progress_option,
    add_run_directory_options,
    run_settings,
    whole,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    mine = sub.add_parser(
        "mine", formatter_class=DefaultsFormatter,
        help="bitext mining between two monolingual files (ratio margin; BUCC F1, xSIM)",
        description="Pool every sentence of SOURCE and TARGET at one layer (the activation "
                    "store: cached, resumable, several processes under accelerate/torchrun), "
                    "find each sentence's best partner by ratio margin (Artetxe & Schwenk 2019) "
                    "in row blocks of bounded memory, and with --gold score the candidates as "
                    "BUCC does (F1 at the best threshold) and xSIM. Writes OUTPUT/NAME/"
                    "{mined.tsv,scores.json,manifest.json}.")
    mine.add_argument("source", type=Path,
                      help="one sentence per line (ids: line numbers from 1), or BUCC's "
                           "ID<TAB>sentence on every line: BUCC when line 1 holds a tab, and "
                           "then every line must be (the first that is not is named)")
    mine.add_argument("target", type=Path, help="the other side, in either format")
    mine.add_argument("--source-language", required=True)
    mine.add_argument("--target-language", required=True)
    mine.add_argument("--gold", type=Path, help="SOURCE_ID<TAB>TARGET_ID lines (plain files: "
                                                 "line numbers from 1)")
    add_model_options(mine)
    mine.add_argument("--layer", type=whole(COUNT_OR_NONE),
                      help="layer to pool (default: the middle block's output)")
    mine.add_argument("--k", type=whole(), default=MARGIN_K, help="neighbours of the margin")
    mine.add_argument("--cosine", action="store_true", help="rank by cosine, not margin")
    mine.add_argument("--batch-size", type=whole(), default=32)
    mine.add_argument("--max-length", type=whole(MIN_LENGTH), default=256)
    mine.add_argument("--store", type=Path, help="activation store (default: OUTPUT/store)")
    add_device_options(mine)
    add_run_directory_options(mine, "MODEL-mine-KEY", static=False)
    add_progress_option(mine)


def cmd_mine(args: argparse.Namespace) -> None:
    request = MiningRequest(
        **run_settings(args), source=args.source, target=args.target,
        source_language=args.source_language, target_language=args.target_language,
        gold=args.gold, layer=args.layer, k=args.k, margin=not args.cosine,
        batch_size=args.batch_size, max_length=args.max_length, store=args.store,
        progress_bars=not args.no_progress)
    run_dir = execute_mining(request, ["layer-analysis", *sys.argv[1:]])
    if run_dir is None:
        return
    scores = json.loads((run_dir / SCORES).read_text())
    print(json.dumps(scores, indent=2))
    print(f"\nrun: {run_dir}\nmined pairs: {run_dir / 'mined.tsv'}")


HANDLERS = {"mine": cmd_mine}
