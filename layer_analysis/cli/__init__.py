"""``layer-analysis``: the command line, one front door to ``probe`` and ``train``."""

from __future__ import annotations

import argparse
import os
import sys

from layer_analysis.probe.errors import ProbeError

from . import interventions, law, lens, mining, patching, probing, training, transfer

DESCRIPTION = """\
Probe how a language model aligns languages layer by layer.

  layer-analysis run                       # default model (gemma3-270m) on the shipped data
  layer-analysis run --data flores-devtest --languages en,de,zh --limit 200
  layer-analysis run --model smollm2-135m --adapter out/x-zh --pooling mean last
  layer-analysis report runs/NAME            # rebuild figures of a finished run
  layer-analysis compare runs/base runs/x-zh # base vs adapters
  layer-analysis list-models | list-data
  layer-analysis mine de.txt en.txt --source-language de --target-language en --gold gold.tsv
  torchrun --nproc_per_node 2 -m layer_analysis run ...   # several processes (or accelerate launch)
  layer-analysis lens --model smollm2-135m   # latent language per layer (logit lens)
  layer-analysis patch --model smollm2-135m  # cross-lingual activation patching
  layer-analysis neurons --model smollm2-135m --languages en,de,zh,el
  layer-analysis intervene steer --language el   # or: intervene map --language el
  layer-analysis transfer --data sib200 --languages en,de,zh,sw --limit 40  # probe transfer

Train and evaluate x-models (CoIT) and m-models (MuIT), fit the translation-data scaling law:
  layer-analysis train --recipe coit --languages zh --output out/x-zh
  layer-analysis train --recipe muit --languages ar,el,hi,tr,vi,zh --output out/m
  layer-analysis evaluate --model out/x-zh --languages zh
  layer-analysis sweep --languages el,zh --sizes 0,250,500,1000 --output out/sweep
  layer-analysis fit-law out/sweep && layer-analysis allocate out/sweep/law/law.json --budget 2000
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layer-analysis", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for commands in (probing, mining, lens, patching, interventions, training, law, transfer):
        commands.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error prints one line and returns its exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and one error line (or the help)
        return exc.code if isinstance(exc.code, int) else 2
    handlers = {**probing.HANDLERS, **mining.HANDLERS, **lens.HANDLERS, **patching.HANDLERS,
                **interventions.HANDLERS, **training.HANDLERS, **law.HANDLERS,
                **transfer.HANDLERS}
    try:
        handlers[args.command](args)
    except ProbeError as exc:
        if os.environ.get("RANK", "0") == "0":  # a multi-process launch: the main one says it
            print(f"layer-analysis: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("layer-analysis: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
