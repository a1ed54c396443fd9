"""``layer-analysis``: extract per-layer pooled states of parallel sentences and measure alignment."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from train import cli as train_cli
from train import law_cli

from . import report
from .analysis import AnalysisConfig
from .cli_help import DefaultsFormatter
from .data import named_datasets
from .errors import DataError, ProbeError
from .extract import POOLINGS, SINK_MODES, SINK_RATIO, SPANS, ExtractionConfig, SinkRecord
from .languages import canonical
from .metrics import NORMALISATIONS
from .models import DEFAULT_MODEL, PACKAGED
from .pipeline import RunRequest, execute
from .projection import METHODS
from .runs import (
    RunResults,
    build_report,
    data_differences,
    model_cka,
    read_run,
    run_figures,
    versions,
    write_run,
)

DESCRIPTION = """\
Probe how a language model aligns languages layer by layer.

  layer-analysis run                       # default model (gemma3-270m) on the shipped data
  layer-analysis run --data flores-devtest --languages en,de,zh --limit 200
  layer-analysis run --model smollm2-135m --adapter out/x-zh --pooling mean last
  layer-analysis report runs/NAME            # rebuild figures of a finished run
  layer-analysis compare runs/base runs/x-zh # base vs adapters
  layer-analysis list-models | list-data

Train and evaluate x-models (CoIT) and m-models (MuIT), fit the translation-data scaling law:
  layer-analysis train --recipe coit --languages zh --output out/x-zh
  layer-analysis train --recipe muit --languages ar,el,hi,tr,vi,zh --output out/m
  layer-analysis evaluate --model out/x-zh --languages zh
  layer-analysis sweep --languages el,zh --sizes 0,250,500,1000 --output out/sweep
  layer-analysis fit-law out/sweep && layer-analysis allocate out/sweep/law/law.json --budget 2000
"""


def parse_layers(text: str) -> tuple[int, ...] | None:
    """``all``, ``0,4,8`` or ``2-10`` (inclusive) -> layer numbers."""
    if text == "all":
        return None
    layers: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"layers must look like 'all', '0,4,8' or '2-10': {text!r}")
        start, stop = int(match[1]), int(match[2] or match[1])
        if stop < start:
            raise argparse.ArgumentTypeError(f"layer range {part.strip()!r} runs backwards")
        layers += range(start, stop + 1)
    return tuple(layers)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layer-analysis", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", formatter_class=DefaultsFormatter,
        help="extract per-layer states, compute every metric, write tables and the report",
        description="Extract pooled per-layer states of parallel sentences (cached by content), "
                    "compute alignment metrics per layer with bootstrap CIs and chance levels, "
                    "and write OUTPUT/NAME/{results.parquet,results.csv,manifest.json,"
                    "report.html,figures/}.")
    what = run.add_argument_group("model and data")
    what.add_argument("--model", default=DEFAULT_MODEL,
                      help="packaged name (see list-models), model directory, .gguf file, Hub id, "
                           "or a PEFT adapter directory (its base is read from the adapter)")
    what.add_argument("--adapter", help="PEFT adapter directory to apply on top of --model")
    what.add_argument("--data", default="default",
                      help="named set (see list-data), directory, .tsv/.jsonl file or hf:NAME@SPLIT")
    what.add_argument("--languages", help="comma-separated languages (en, eng, eng_Latn, English); "
                                          "default: all in the data")
    what.add_argument("--limit", type=int, help="use the first N sentences of each language")
    extraction = run.add_argument_group("extraction")
    extraction.add_argument("--pooling", nargs="+", default=["mean"], choices=POOLINGS,
                            help="one or more poolings, all filled in the same forward pass; "
                                 "metrics use the first")
    extraction.add_argument("--template", help="prompt holding {sentence}, e.g. 'Text: {sentence}'")
    extraction.add_argument("--span", default="sentence", choices=SPANS,
                            help="with --template, pool over the sentence tokens or the whole prompt")
    extraction.add_argument("--sinks", default="exclude", choices=SINK_MODES,
                            help="leave attention-sink tokens (a first token with no BOS before "
                                 "it; states over --sink-ratio x the sentence's median norm) out "
                                 "of mean/weighted pooling, or keep them (the naive mean)")
    extraction.add_argument("--sink-ratio", type=float, default=SINK_RATIO,
                            help="norm / median norm above which a token counts as a sink")
    extraction.add_argument("--layers", type=parse_layers, default=None, metavar="all|0,4,8|2-10",
                            help="layers to keep (0 = embeddings); default all")
    extraction.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    extraction.add_argument("--dtype", default="auto",
                            help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")
    extraction.add_argument("--batch-size", type=int, default=32)
    extraction.add_argument("--max-length", type=int, default=256,
                            help="maximum tokens per sentence (template included)")
    extraction.add_argument("--trust-remote-code", action="store_true",
                            help="allow a Hub model's own Python code (off by default)")
    metrics = run.add_argument_group("metrics")
    metrics.add_argument("--pivot", default="en", help="pair the pivot with every other language")
    metrics.add_argument("--all-pairs", action="store_true", help="analyse every language pair")
    metrics.add_argument("--normalisations", nargs="+", default=list(NORMALISATIONS),
                         choices=NORMALISATIONS, help="score normalisations reported side by side")
    metrics.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs")
    metrics.add_argument("--seed", type=int, default=0)
    metrics.add_argument("--projection", default="umap", choices=[*METHODS, "none"],
                         help="2-D projection for the scatter plot")
    metrics.add_argument("--projection-layer", type=int,
                         help="layer to project (default: the most common peak layer)")
    output = run.add_argument_group("output")
    output.add_argument("--output", type=Path, default=Path("runs"), help="directory of runs")
    output.add_argument("--name", help="run name, a plain name (default: model-data-key; an "
                                       "unnamed rerun replaces the run of the same name)")
    output.add_argument("--overwrite", action="store_true",
                        help="replace an existing run of the same --name")
    output.add_argument("--store", type=Path, help="activation store (default: OUTPUT/store)")
    output.add_argument("--no-static", action="store_true",
                        help="write report.html only, no PNG/PDF (which need Chromium)")
    output.add_argument("--no-progress", action="store_true", help="hide progress bars")

    rep = sub.add_parser("report", help="rebuild the report and figures of a finished run")
    rep.add_argument("run", type=Path, help="run directory (holds manifest.json)")
    comp = sub.add_parser("compare", help="compare runs of several models (base vs adapters)")
    comp.add_argument("runs", type=Path, nargs="+", help="two or more run directories")
    comp.add_argument("--output", type=Path, default=Path("runs/compare"),
                      help="directory for the comparison tables and report")
    comp.add_argument("--allow-different-data", action="store_true",
                      help="compare runs on different sentences (curves only; says what differs)")
    for p in (rep, comp):
        p.add_argument("--metric", default="p@1",
                       choices=["p@1", "r@5", "r@10", "mrr", "mexa", "cosine", "cosine_adjusted"])
        p.add_argument("--normalisation", default="centered", choices=NORMALISATIONS)
        p.add_argument("--no-static", action="store_true", help="report.html only, no PNG/PDF")

    train_cli.add_parsers(sub)
    law_cli.add_parsers(sub)
    sub.add_parser("list-models", help="packaged models that work offline")
    sub.add_parser("list-data", help="named parallel data sets")
    return parser


def _print_table(table: pd.DataFrame, pivot: str | None) -> None:
    """Centered P@1 per layer, pivot <-> X (both directions averaged), as a text table."""
    rows = table[(table.metric == "p@1") & (table.normalisation == "centered")].copy()
    if pivot:
        pairs = zip(rows.source, rows.target, strict=True)
        rows["other"] = [t if s.startswith(pivot) else s for s, t in pairs]
        name = f"{pivot[:3]} <-> X, both directions averaged"
    else:
        rows["other"] = rows.source.str[:3] + "-" + rows.target.str[:3]
        name = "all pairs, source -> target"
    grid = rows.pivot_table(index="layer", columns="other", values="value", aggfunc="mean")
    grid.columns = [c.split("@")[0][:8] for c in grid.columns]
    print(f"Retrieval P@1 (mean-centered, {name}):")
    print(grid.to_string(float_format=lambda v: f"{v:.3f}"))


def cmd_run(args: argparse.Namespace) -> None:
    request = RunRequest(
        model=args.model, adapter=args.adapter, data=args.data,
        languages=args.languages.split(",") if args.languages else None, limit=args.limit,
        extraction=ExtractionConfig(poolings=tuple(args.pooling), layers=args.layers,
                                    template=args.template, span=args.span,
                                    max_length=args.max_length, sinks=args.sinks,
                                    sink_ratio=args.sink_ratio),
        analysis=AnalysisConfig(pivot=None if args.all_pairs else canonical(args.pivot, "--pivot"),
                                normalisations=tuple(args.normalisations),
                                bootstrap=args.bootstrap, seed=args.seed),
        projection=args.projection, projection_layer=args.projection_layer, device=args.device,
        dtype=args.dtype, batch_size=args.batch_size, trust_remote_code=args.trust_remote_code,
        output=args.output, name=args.name, store=args.store, static=not args.no_static,
        progress_bars=not args.no_progress, overwrite=args.overwrite)
    outcome = execute(request, ["layer-analysis", *sys.argv[1:]])
    for warning in outcome.warnings:
        print(f"layer-analysis: warning: {warning}", file=sys.stderr)
    manifest = outcome.results.manifest
    name = manifest["model"]["name"]
    source = ("loaded from cache" if outcome.cached
              else f"extracted in {manifest['timings_s']['extract']:.1f} s")
    print(f"\n{name} on {manifest['data']['name']}: {len(manifest['data']['sides'])} languages x "
          f"{outcome.sentences} sentences, {len(manifest['extraction']['layers'])} layers, {source}")
    if manifest["extraction"].get("sinks"):
        print(SinkRecord.from_dict(manifest["extraction"]["sinks"]).summary())
    _print_table(outcome.results.table, request.analysis.pivot)
    print(f"\nrun:         {outcome.results.directory}\nreport:      {outcome.report[0]}\n"
          f"activations: {outcome.activations}")


def _model_run(path: Path) -> RunResults:
    """A run of one model (not a comparison), or a clear error."""
    results = read_run(path)
    if "compare" in results.manifest:
        raise DataError(f"{path} is a comparison, not a run; rebuild it with 'layer-analysis "
                        "compare' on its runs")
    return results


def cmd_report(args: argparse.Namespace) -> None:
    results = _model_run(args.run)
    figures = run_figures(results, args.metric, args.normalisation)
    title = f"{results.manifest['model']['name']} on {results.manifest['data']['name']}"
    paths = build_report(results, figures, title, static=not args.no_static)
    print("\n".join(str(p) for p in paths))


def cmd_compare(args: argparse.Namespace) -> None:
    runs = [_model_run(path) for path in args.runs]
    if len(runs) < 2:
        raise DataError("compare needs at least two run directories")
    differences = data_differences(runs)
    if differences and not args.allow_different_data:
        raise DataError("the runs used different data (" + "; ".join(differences) + "); compare "
                        "runs on the same sentences, or pass --allow-different-data")
    for difference in differences:
        print(f"layer-analysis: warning: {difference}", file=sys.stderr)
    table = pd.concat([r.table for r in runs], ignore_index=True)
    names = [r.manifest["model"]["name"] for r in runs]
    if len(set(names)) < len(names):
        raise DataError(f"two runs share a model name ({', '.join(names)}); compare different models")
    figures = {f"comparison_{args.metric}": report.comparison(table, args.metric, args.normalisation),
               f"heatmap_{args.metric}": report.heatmap(table, args.metric, args.normalisation)}
    cka = pd.DataFrame()
    if not differences:
        cka = model_cka(runs)
        figures["cka_models"] = report.cka_heatmap(cka, "linear CKA between models, layer by layer")
    else:
        print("note: model x model CKA needs the same sentences; left out", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    merged = RunResults(args.output, {"runs": [str(r.directory) for r in runs]}, table, cka,
                        pd.DataFrame())
    write_run(args.output, {"compare": [str(r.directory) for r in runs], "models": names,
                            "versions": versions()}, table, cka, pd.DataFrame())
    paths = build_report(merged, figures, "comparison: " + " vs ".join(names),
                         static=not args.no_static)
    print("\n".join(str(p) for p in paths))


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
    handlers = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare,
                "list-models": cmd_list_models, "list-data": cmd_list_data, **train_cli.HANDLERS,
                **law_cli.HANDLERS}
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
