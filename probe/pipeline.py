"""One analysis run from request to run directory: load, extract (cached), analyse, project,
write tables and the report. Shared by ``layer-analysis run`` and the dashboard's New run page."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from . import distributed
from .analysis import AnalysisConfig, analyse, analysed_poolings, peak_layer
from .checks import COUNT, COUNT_OR_NONE, SEED, check_numbers, select_capped
from .data import ParallelCorpus, load_parallel
from .errors import DataError
from .extract import ExtractionConfig, Extractor
from .files import MANIFEST, atomic_write_text
from .hooks import check_layers
from .mexa_export import export_mexa
from .models import LoadedModel, block_count, loaded_or_load
from .projection import METHODS, project
from .runs import (
    RunResults,
    RunSettings,
    build_report,
    read_run,
    run_figures,
    versions,
    write_run,
    writes_runs,
)
from .store import ENGINE_VERSION, ActivationStore
from .tokenization import FILE as TOKENIZATION
from .tokenization import run_confound, tokenization_table

Progress = Callable[[str, float], None]
"""Called with what is happening and the fraction of the run done (0..1)."""


@dataclass
class RunRequest(RunSettings):
    """Everything a run needs; the CLI's ``run`` options one to one."""

    data: str | ParallelCorpus = "default"  # a name/path as ``load_parallel`` reads, or a corpus
    languages: list[str] | None = None
    limit: int | None = None
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    projection: str = "pca"
    projection_layer: int | None = None
    batch_size: int = 32
    trust_remote_code: bool = False
    device_map: str | None = None  # "auto": big-model inference over GPUs and CPU
    quantize: str | None = None  # "8bit" / "4bit" through bitsandbytes
    store: Path | None = None
    static: bool = True
    progress_bars: bool = True


@dataclass
class RunOutcome:
    results: RunResults
    report: list[Path]
    sentences: int
    cached: bool
    activations: Path
    warnings: list[str] = field(default_factory=list)


def check_request(request: RunRequest, corpus: ParallelCorpus) -> list[str]:
    """Every check that needs no model, so bad input fails before anything expensive; returns
    warnings about the data (repeated sentences)."""
    request.check_name("alignment")
    if request.projection not in (*METHODS, "none"):
        raise DataError(f"unknown projection {request.projection!r}; choose from "
                        f"{', '.join((*METHODS, 'none'))}")
    check_numbers({"--batch-size": (request.batch_size, COUNT),
                   "--limit": (request.limit, COUNT),
                   "--bootstrap": (request.analysis.bootstrap, COUNT),
                   "--seed": (request.analysis.seed, SEED),
                   "--projection-layer": (request.projection_layer, COUNT_OR_NONE)})
    small = {k: len(s.sentences) for k, s in corpus.sides.items() if len(s.sentences) < 2}
    if small:
        raise DataError("too few sentences to analyse: " + ", ".join(
            f"{k} has {n}" for k, n in small.items()) + " (retrieval needs at least 2 per language)")
    pivot = request.analysis.pivot
    if pivot is not None and pivot not in corpus.languages:
        raise DataError(f"pivot {pivot} is not among the selected languages "
                        f"({', '.join(corpus.languages)}); add it or analyse all pairs")
    if not corpus.pairs(pivot):
        raise DataError(f"no language pair to analyse among {', '.join(corpus.languages)}"
                        + (f" with pivot {pivot}" if pivot else "") + "; select two or more")
    warnings = []
    for key, side in corpus.sides.items():
        repeats = len(side.sentences) - len(set(side.sentences))
        if repeats:
            warnings.append(f"{key} has {repeats} repeated sentence(s): a repeat of the true "
                            "translation counts as a correct answer, and chance levels account "
                            "for it")
    return warnings


def check_model_layers(request: RunRequest, blocks: int) -> None:
    """The layers a run keeps (``--layers``) and the one it projects (``--projection-layer``)
    against the model's ``blocks``: both before the weights load where the config tells the
    count (a projection layer that is not extracted failed only after the extraction)."""
    kept = check_layers(request.extraction.layers, blocks)
    layer = request.projection_layer
    if request.projection == "none" or layer is None:
        return
    check_layers([layer], blocks, option="--projection-layer")
    if layer not in kept:
        raise DataError(f"--projection-layer {layer} is not among the layers kept (--layers "
                        f"{','.join(map(str, kept))}): add it to --layers or choose one of them")


@writes_runs
def execute(request: RunRequest, command: list[str], progress: Progress | None = None
            ) -> RunOutcome | None:
    """Run the analysis ``request`` describes; ``command`` is recorded in the manifest. Under
    ``accelerate launch`` / ``torchrun`` every process extracts its shard and the main one
    analyses and writes the run; the others return None."""
    processes = distributed.current()

    def say(stage: str, done: float) -> None:
        if progress is not None and processes.main:
            progress(stage, done)

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    say("loading data", 0.0)
    corpus = select_capped(request.data if isinstance(request.data, ParallelCorpus)
                           else load_parallel(request.data), request.languages, request.limit)
    warnings = check_request(request, corpus)
    processes.check(sum(len(side.sentences) for side in corpus.sides.values()))
    model = request.model  # a name or path, or a model loaded by the caller
    say(f"loading {model.name if isinstance(model, LoadedModel) else model}", 0.02)
    if request.device_map is not None and processes.world > 1:
        raise DataError("--device-map spreads one model over the devices; with several "
                        "processes each loads its own copy: use one or the other")
    store = ActivationStore(request.store or request.output / "store")  # a file: refused
    blocks = block_count(model, request.trust_remote_code)
    if blocks is not None:  # before the weights load (minutes, for a big model)
        check_model_layers(request, blocks)
    loaded = loaded_or_load(model, request.adapter, processes.device(request.device),
                            request.dtype, request.trust_remote_code, request.device_map,
                            request.quantize)
    if blocks is None and (blocks := block_count(loaded)) is not None:  # before extracting
        check_model_layers(request, blocks)
    extractor = Extractor(loaded, request.extraction)
    timings["load_model"] = time.perf_counter() - clock
    truncation = extractor.truncation([s for side in corpus.sides.values() for s in side.sentences])
    if truncation.serious:
        warnings.append(truncation.warning())
    clock = time.perf_counter()
    acts = store.extract(extractor, corpus, batch_size=request.batch_size,
                         progress=request.progress_bars,
                         on_batch=lambda done, total: say(
                             f"extracting: {done}/{total} sentences", 0.05 + 0.8 * done / total),
                         processes=processes)
    if acts is None:  # not the main process: its shard is stored, the main one goes on
        return None
    timings["extract"] = time.perf_counter() - clock
    say("computing metrics", 0.85)
    clock = time.perf_counter()
    device = next(loaded.model.parameters()).device.type  # analyse where the model ran
    config = dataclasses.replace(request.analysis, device=device, poolings=tuple(
        analysed_poolings(acts, request.analysis.poolings)))
    analysis = analyse(acts, loaded.name, config)
    timings["analyse"] = time.perf_counter() - clock
    clock = time.perf_counter()
    layer = request.projection_layer
    if layer is None:
        layer = peak_layer(analysis.table)
    if request.projection != "none":
        say(f"projecting layer {layer} ({request.projection})", 0.9)
    projection = (pd.concat([project(acts, layer, request.projection, pooling)
                             for pooling in analysed_poolings(acts, config.poolings)],
                            ignore_index=True)
                  if request.projection != "none" else pd.DataFrame())
    timings["project"] = time.perf_counter() - clock
    run_dir = request.claim("alignment", f"{loaded.name}-{corpus.name}-{acts.key[:8]}",
                            content_named=True)
    manifest = {
        "command": command,
        "engine": ENGINE_VERSION,
        "model": {**loaded.record(request.adapter), "device_map": request.device_map,
                  "quantize": request.quantize},
        "data": {"name": corpus.name, "fingerprint": corpus.fingerprint(),
                 "languages": corpus.languages, "sides": {k: len(s.sentences)
                                                          for k, s in corpus.sides.items()}},
        "extraction": {**asdict(request.extraction), "layers": extractor.layers,
                       "batch_size": request.batch_size, **acts.manifest.get("extraction", {}),
                       "sinks": acts.manifest.get("sinks"), "truncation": truncation.to_dict()},
        "analysis": {**asdict(config), "projection": request.projection,
                     "projection_layer": layer},
        "activations": str(acts.directory.resolve()),
        "activations_key": acts.key,
        "store": str(store.root.resolve()),
        "cached": acts.cached,
        "versions": versions(),
        "warnings": warnings,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    tokenization = tokenization_table(loaded.tokenizer, loaded.name, corpus)  # item 4 of #25
    warnings += [w for w in [run_confound(analysis.table, tokenization)] if w]
    write_run(run_dir, manifest, analysis.table, analysis.cka, projection,
              {TOKENIZATION: tokenization})
    export_mexa(run_dir, analysis.table, config.poolings[0])
    results = read_run(run_dir)
    say("writing the report", 0.95)
    clock = time.perf_counter()
    paths = build_report(results, run_figures(results), f"{loaded.name} on {corpus.name}",
                         static=request.static)
    manifest["timings_s"]["report"] = round(time.perf_counter() - clock, 3)
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    results.manifest = manifest
    say("done", 1.0)
    return RunOutcome(results, paths, len(next(iter(corpus.sides.values())).sentences),
                      acts.cached, acts.directory, warnings)
