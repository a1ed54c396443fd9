"""``run``, ``report``, ``compare``, ``list-models``, ``list-data``: the probing commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from layer_analysis.probe.analysis import AnalysisConfig, peak_layer
from layer_analysis.probe.checks import COUNT_OR_NONE, RATIO, SEED
from layer_analysis.probe.data import named_datasets
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.extract import (
    MIN_LENGTH,
    POOLINGS,
    SINK_MODES,
    SINK_RATIO,
    SPANS,
    ExtractionConfig,
    SinkRecord,
)
from layer_analysis.probe.files import writer_lock
from layer_analysis.probe.languages import canonical
from layer_analysis.probe.lens_run import compare_lens_runs, is_lens_run
from layer_analysis.probe.metrics import NORMALISATIONS
from layer_analysis.probe.models import DEFAULT_MODEL, PACKAGED, QUANTIZATIONS
from layer_analysis.probe.neuron_run import compare_neuron_runs, is_neuron_run
from layer_analysis.probe.paired import paired_summary
from layer_analysis.probe.patch_run import compare_patch_runs, is_patch_run
from layer_analysis.probe.pipeline import RunRequest, execute
from layer_analysis.probe.projection import METHODS
from layer_analysis.probe.runs import build_report, compare_runs, read_model_run, run_figures, run_writer

from .options import (
    DefaultsFormatter,
    add_device_options,
    add_limit_option,
    add_model_options,
    add_progress_option,
    add_run_directory_options,
    add_static_option,
    parse_layers,
    real,
    run_settings,
    whole,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``run``, ``report``, ``compare``, ``list-models``, ``list-data``."""
    run = sub.add_parser(
        "run", formatter_class=DefaultsFormatter,
        help="extract per-layer states, compute every metric, write tables and the report",
        description="Extract pooled per-layer states of parallel sentences (cached by content), "
                    "compute alignment metrics per layer with bootstrap CIs and chance levels, "
                    "and write OUTPUT/NAME/{results.parquet,results.csv,manifest.json,"
                    "report.html,figures/}.")
    what = run.add_argument_group("model and data")
    add_model_options(what, help="packaged name (see list-models), model directory, .gguf "
                                 "file, Hub id, or a PEFT adapter directory (its base is read "
                                 "from the adapter)")
    what.add_argument("--data", default="default",
                      help="named set (see list-data), directory, .tsv/.jsonl file or hf:NAME@SPLIT")
    what.add_argument("--languages", help="comma-separated languages (en, eng, eng_Latn, English); "
                                          "default: all in the data")
    add_limit_option(what, what=", the first N of each")
    extraction = run.add_argument_group("extraction")
    extraction.add_argument("--pooling", nargs="+", default=["mean"], choices=POOLINGS,
                            help="one or more poolings, all filled in the same forward pass "
                                 "and each analysed (a pooling column in every table)")
    extraction.add_argument("--template", help="prompt holding {sentence}, e.g. 'Text: {sentence}'")
    extraction.add_argument("--span", default="sentence", choices=SPANS,
                            help="with --template, pool over the sentence tokens or the whole prompt")
    extraction.add_argument("--sinks", default="exclude", choices=SINK_MODES,
                            help="leave attention-sink tokens (a first token with no BOS before "
                                 "it; states over --sink-ratio x the sentence's median norm) out "
                                 "of mean/weighted pooling, or keep them (the naive mean)")
    extraction.add_argument("--sink-ratio", type=real(RATIO), default=SINK_RATIO,
                            help="norm / median norm above which a token counts as a sink")
    extraction.add_argument("--layers", type=parse_layers, default=None, metavar="all|0,4,8|2-10",
                            help="layers to keep (0 = embeddings); default all")
    add_device_options(extraction)
    extraction.add_argument("--batch-size", type=whole(), default=32)
    extraction.add_argument("--max-length", type=whole(MIN_LENGTH), default=256,
                            help="maximum tokens per sentence (template included)")
    extraction.add_argument("--device-map", choices=["auto"],
                            help="spread a model larger than one device over the GPUs and the "
                                 "CPU (accelerate big-model inference)")
    extraction.add_argument("--quantize", choices=list(QUANTIZATIONS),
                            help="load the weights in 8 or 4 bits (needs bitsandbytes and a "
                                 "CUDA GPU)")
    extraction.add_argument("--trust-remote-code", action="store_true",
                            help="allow a Hub model's own Python code (off by default)")
    metrics = run.add_argument_group("metrics")
    metrics.add_argument("--pivot", default="en", help="pair the pivot with every other language")
    metrics.add_argument("--all-pairs", action="store_true", help="analyse every language pair")
    metrics.add_argument("--normalisations", nargs="+", default=list(NORMALISATIONS),
                         choices=NORMALISATIONS, help="score normalisations reported side by side")
    metrics.add_argument("--bootstrap", type=whole(), default=1000, help="bootstrap resamples for CIs")
    metrics.add_argument("--seed", type=whole(SEED), default=0)
    metrics.add_argument("--projection", default="pca", choices=[*METHODS, "none"],
                         help="2-D projection for the scatter plot (UMAP's first call in a "
                              "process compiles for about a minute; the dashboard computes it "
                              "on demand)")
    metrics.add_argument("--projection-layer", type=whole(COUNT_OR_NONE),
                         help="layer to project (default: where centered P@1, averaged over the "
                              "pairs, peaks)")
    output = run.add_argument_group("output")
    add_run_directory_options(output, "model-data-key; an unnamed rerun replaces the run of "
                                      "the same name")
    output.add_argument("--store", type=Path, help="activation store (default: OUTPUT/store)")
    add_progress_option(output)

    rep = sub.add_parser("report", help="rebuild the report and figures of a finished run")
    rep.add_argument("run", type=Path, help="run directory (holds manifest.json)")
    comp = sub.add_parser("compare", help="compare runs of several models (base vs adapters); "
                                          "alignment, lens, neurons or patch runs")
    comp.add_argument("runs", type=Path, nargs="+", help="two or more run directories")
    comp.add_argument("--output", type=Path, default=Path("runs/compare"),
                      help="directory for the comparison tables and report")
    comp.add_argument("--allow-different-data", action="store_true",
                      help="compare runs on different sentences (curves only; says what differs)")
    comp.add_argument("--overwrite", action="store_true", help="replace an existing comparison")
    for p in (rep, comp):
        p.add_argument("--metric", default="p@1",
                       choices=["p@1", "r@5", "r@10", "mrr", "mexa", "cosine", "cosine_adjusted"])
        p.add_argument("--normalisation", default="centered", choices=NORMALISATIONS)
        add_static_option(p)

    sub.add_parser("list-models", help="packaged models that work offline")
    sub.add_parser("list-data", help="named parallel data sets")


WIDE, RANKED = 12, 8  # above WIDE languages the table is summarised, RANKED at each end


def _print_table(table: pd.DataFrame, pivot: str | None) -> None:
    """Centered P@1 per layer, pivot <-> X (both directions averaged), as a text table (over
    ``WIDE`` languages: the spread per layer and the ranking at the peak); one table per pooling
    (never averaged over poolings)."""
    rows = table[(table.metric == "p@1") & (table.normalisation == "centered")].copy()
    poolings = list(dict.fromkeys(rows.pooling))
    if len(poolings) > 1:
        for pooling in poolings:
            print(f"[{pooling} pooling]")
            _print_table(rows[rows.pooling == pooling], pivot)
        return
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
    if len(grid.columns) <= WIDE:
        print(grid.to_string(float_format=lambda v: f"{v:.3f}"))
        return
    # many languages: the spread per layer, then the ranking at the mean curve's peak
    spread = pd.DataFrame({"mean": grid.mean(axis=1), "min": grid.min(axis=1),
                           "median": grid.median(axis=1), "max": grid.max(axis=1)})
    print(f"over {len(grid.columns)} {'languages' if pivot else 'pairs'}:")
    print(spread.to_string(float_format=lambda v: f"{v:.3f}"))
    peak = peak_layer(rows)
    ranked = grid.loc[peak].sort_values(ascending=False)
    shown = lambda part: ", ".join(f"{k} {v:.3f}" for k, v in part.items())  # noqa: E731
    print(f"at layer {peak} (the mean's peak), highest: {shown(ranked.head(RANKED))}")
    print(f"lowest: {shown(ranked.tail(RANKED).iloc[::-1])}  (every one: the report's ranking)")


def cmd_run(args: argparse.Namespace) -> None:
    request = RunRequest(
        **run_settings(args), data=args.data,
        languages=args.languages.split(",") if args.languages else None, limit=args.limit,
        extraction=ExtractionConfig(poolings=tuple(args.pooling), layers=args.layers,
                                    template=args.template, span=args.span,
                                    max_length=args.max_length, sinks=args.sinks,
                                    sink_ratio=args.sink_ratio),
        analysis=AnalysisConfig(pivot=None if args.all_pairs else canonical(args.pivot, "--pivot"),
                                normalisations=tuple(args.normalisations),
                                bootstrap=args.bootstrap, seed=args.seed),
        projection=args.projection, projection_layer=args.projection_layer,
        batch_size=args.batch_size, trust_remote_code=args.trust_remote_code,
        device_map=args.device_map, quantize=args.quantize, store=args.store,
        static=not args.no_static, progress_bars=not args.no_progress)
    outcome = execute(request, ["layer-analysis", *sys.argv[1:]])
    if outcome is None:  # another process of a multi-process launch: the main one reports
        return
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


def cmd_report(args: argparse.Namespace) -> None:
    results = read_model_run(args.run)
    figures = run_figures(results, args.metric, args.normalisation)
    title = f"{results.manifest['model']['name']} on {results.manifest['data']['name']}"
    with writer_lock(results.directory):  # not while a run rewrites it
        paths = build_report(results, figures, title, static=not args.no_static)
    print("\n".join(str(p) for p in paths))


def cmd_compare(args: argparse.Namespace) -> None:
    with run_writer(args.output, "compare", args.overwrite):
        _compare(args)


def _compare(args: argparse.Namespace) -> None:
    if any(is_neuron_run(path) for path in args.runs):
        print(compare_neuron_runs(args.runs, args.output, static=not args.no_static))
        return
    if any(is_patch_run(path) for path in args.runs):
        paths = compare_patch_runs(args.runs, args.output, static=not args.no_static)
        print("\n".join(str(p) for p in paths))
        return
    lens_runs = [is_lens_run(path) for path in args.runs]
    if all(lens_runs):
        paths = compare_lens_runs(args.runs, args.output, static=not args.no_static)
        print("\n".join(str(p) for p in paths))
        return
    if any(lens_runs):
        raise DataError("compare lens runs with lens runs and alignment runs with alignment runs")
    runs = [read_model_run(path) for path in args.runs]
    paths, warnings, paired = compare_runs(runs, args.output, args.metric, args.normalisation,
                                           args.allow_different_data, static=not args.no_static)
    for warning in warnings:
        print(f"layer-analysis: warning: {warning}", file=sys.stderr)
    lines = paired_summary(paired, args.metric, args.normalisation) if not paired.empty else []
    if lines:
        print(f"Paired differences per sentence ({args.metric}, {args.normalisation}; moved: "
              "Benjamini-Hochberg q < 0.05 over layers; 95 % bootstrap CI):")
        print("\n".join(lines))
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


HANDLERS = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare,
            "list-models": cmd_list_models, "list-data": cmd_list_data}
