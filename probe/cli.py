"""``layer-analysis``: extract per-layer pooled states of parallel sentences and measure alignment."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from .data import load_parallel, named_datasets
from .errors import DataError, ProbeError
from .extract import POOLINGS, SPANS, ExtractionConfig, Extractor
from .languages import canonical
from .metrics import precision_at_1
from .models import DEFAULT_MODEL, PACKAGED, atomic_write_text, load_model
from .store import Activations, ActivationStore

DESCRIPTION = """\
Probe how a language model aligns languages layer by layer.

  layer-analysis run                       # default model (gemma3-270m) on the shipped data
  layer-analysis run --data flores-devtest --languages en,de,zh --limit 200
  layer-analysis run --model smollm2-135m --adapter out/x-zh --pooling mean last
  layer-analysis list-models | list-data
"""


def parse_layers(text: str) -> tuple[int, ...] | None:
    """``all``, ``0,4,8`` or ``2-10`` (inclusive) -> layer numbers."""
    if text == "all":
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            start, _, stop = part.partition("-")
            layers += range(int(start), int(stop or start) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"layers must look like 'all', '0,4,8' or '2-10': {text!r}") from None
    return tuple(layers)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layer-analysis", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="extract pooled states per layer and report retrieval P@1",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--model", default=DEFAULT_MODEL,
                     help="packaged name, model directory, .gguf file, Hub id or PEFT adapter dir")
    run.add_argument("--adapter", help="PEFT adapter directory to apply on top of --model")
    run.add_argument("--data", default="default",
                     help="named set (see list-data), directory, .tsv/.jsonl file or hf:NAME@SPLIT")
    run.add_argument("--languages", help="comma-separated languages (en, eng, eng_Latn); default all")
    run.add_argument("--limit", type=int, help="use the first N sentences of each language")
    run.add_argument("--pooling", nargs="+", default=["mean"], choices=POOLINGS,
                     help="one or more poolings, all filled in the same forward pass")
    run.add_argument("--template", help="prompt holding {sentence}, e.g. 'Text: {sentence}'")
    run.add_argument("--span", default="sentence", choices=SPANS,
                     help="with --template, pool over the sentence tokens or the whole prompt")
    run.add_argument("--layers", type=parse_layers, default=None, metavar="all|0,4,8|2-10",
                     help="layers to keep (0 = embeddings); default all")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    run.add_argument("--dtype", default="auto",
                     help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--max-length", type=int, default=256, help="tokens per sentence, with template")
    run.add_argument("--pivot", default="en", help="pivot language for the P@1 summary")
    run.add_argument("--output", type=Path, default=Path("runs"),
                     help="output directory; activations go to OUTPUT/store/<key>")
    run.add_argument("--trust-remote-code", action="store_true",
                     help="allow a Hub model's own Python code (off by default)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    sub.add_parser("list-models", help="packaged models that work offline")
    sub.add_parser("list-data", help="named parallel data sets")
    return parser


def _summary(acts: Activations, pivot: str) -> tuple[list[str], list[list[str]]]:
    """Centered P@1 per layer for pivot -> every other side, both directions averaged."""
    sides = acts.manifest["sides"]
    pivots = [k for k, s in sides.items() if s["language"] == pivot]
    pairs = [(p, k) for k, s in sides.items() for p in pivots
             if k != p and s["group"] == sides[p]["group"]]
    if not pairs:
        raise DataError(f"no side is aligned with pivot {pivot}; add it to --languages")
    header = ["layer"] + [f"{sides[p]['language'][:3]}-{sides[k]['language'][:3]}" for p, k in pairs]
    scores = []
    for p, k in pairs:
        forward = precision_at_1(acts.get(p), acts.get(k))
        backward = precision_at_1(acts.get(k), acts.get(p))
        scores.append((forward + backward) / 2)
    rows = [[str(layer)] + [f"{s[i]:.3f}" for s in scores] for i, layer in enumerate(acts.layers)]
    return header, rows


def cmd_run(args: argparse.Namespace) -> None:
    config = ExtractionConfig(poolings=tuple(args.pooling), layers=args.layers,
                              template=args.template, span=args.span, max_length=args.max_length)
    languages = args.languages.split(",") if args.languages else None
    corpus = load_parallel(args.data).select(languages, args.limit)
    pivot = canonical(args.pivot, "--pivot")
    if pivot not in corpus.languages:
        raise DataError(f"pivot {pivot} is not among the selected languages "
                        f"({', '.join(corpus.languages)})")
    loaded = load_model(args.model, args.adapter, args.device, args.dtype, args.trust_remote_code)
    extractor = Extractor(loaded, config)
    store = ActivationStore(args.output / "store")
    acts = store.extract(extractor, corpus, batch_size=args.batch_size, progress=not args.no_progress)
    header, rows = _summary(acts, pivot)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    summary = acts.directory / "p_at_1_centered.csv"
    atomic_write_text(summary, buffer.getvalue())
    timing = acts.manifest.get("extraction", {})
    source = "loaded from cache" if acts.cached else f"extracted in {timing.get('seconds', 0):.1f} s"
    print(f"\n{loaded.name} on {corpus.name}: {len(corpus.sides)} languages x "
          f"{len(next(iter(corpus.sides.values())).sentences)} sentences, "
          f"{len(acts.layers)} layers, {source}")
    print(f"Retrieval P@1 (mean-centered, {pivot} <-> X, both directions averaged):")
    widths = [max(len(h), 5) for h in header]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=False)))
    print(f"\nactivations: {acts.directory}\nsummary:     {summary}")


def cmd_list_models(_args: argparse.Namespace) -> None:
    for name, packaged in PACKAGED.items():
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}\n    {packaged.description}\n    package: {packaged.package}; "
              f"licence: {packaged.licence}")


def cmd_list_data(_args: argparse.Namespace) -> None:
    for name, (directory, description) in named_datasets().items():
        where = str(directory) if directory else "not available here (needs ../shared/data)"
        print(f"{name}\n    {description}\n    {where}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": cmd_run, "list-models": cmd_list_models, "list-data": cmd_list_data}
    try:
        handlers[args.command](args)
    except ProbeError as exc:
        print(f"layer-analysis: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("layer-analysis: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
