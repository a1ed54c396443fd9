"""One ``layer-analysis mine`` run: bitext mining between two monolingual files (BUCC style).

Inputs are text files, one sentence per line (ids: line numbers from 1), or BUCC's
``ID<TAB>sentence`` files; gold pairs (optional) are ``SOURCE_ID<TAB>TARGET_ID`` lines. States
come from the activation store (content-addressed, resumable, several processes), pooled like
every run; mining is ``probe.mining`` at the chosen layer.

    mined.tsv        source_id, target_id, margin, source, target — the ``max`` candidates,
                     best first
    scores.json      candidates; with gold: F1, precision, recall and threshold (BUCC) and xSIM
                     (the share of gold sources whose best target is not their gold one)
    manifest.json    last
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from . import distributed
from .data import ParallelCorpus, Side, read_lines
from .errors import DataError
from .extract import ExtractionConfig, Extractor, check_layers
from .files import MANIFEST, atomic_write, atomic_write_text, start_run_directory
from .languages import canonical
from .mining import MARGIN_K, candidates, mine, mining_f1
from .models import block_count, load_model
from .runs import RunSettings, versions, writes_runs
from .store import ActivationStore

MINED, SCORES = "mined.tsv", "scores.json"


@dataclass
class MiningRequest(RunSettings):
    source: Path
    target: Path
    source_language: str
    target_language: str
    gold: Path | None = None
    layer: int | None = None  # default: the middle block's output
    k: int = MARGIN_K
    margin: bool = True
    batch_size: int = 32
    max_length: int = 256
    store: Path | None = None
    progress_bars: bool = True


def read_sentences(path: Path) -> tuple[list[str], list[str]]:
    """(ids, sentences) of a plain file (ids = line numbers from 1) or a BUCC ``ID\\tsentence``
    file (every line with exactly one tab)."""
    lines = read_lines(path)
    if all(line.count("\t") == 1 for line in lines):
        ids, sentences = zip(*(line.split("\t") for line in lines), strict=True)
        if len(set(ids)) != len(ids):
            raise DataError(f"{path}: repeated ids")
        return list(ids), list(sentences)
    return [str(i) for i in range(1, len(lines) + 1)], lines


def read_gold(path: Path, source_ids: list[str], target_ids: list[str]) -> set[tuple[int, int]]:
    """Gold pairs as (source index, target index); an id that is not in its file is an error."""
    where_s = {x: i for i, x in enumerate(source_ids)}
    where_t = {x: i for i, x in enumerate(target_ids)}
    gold = set()
    for number, line in enumerate(read_lines(path), 1):
        parts = line.split("\t")
        if len(parts) != 2 or parts[0] not in where_s or parts[1] not in where_t:
            raise DataError(f"{path}, line {number}: expected SOURCE_ID<TAB>TARGET_ID with ids "
                            f"of the two files, got {line[:60]!r}")
        gold.add((where_s[parts[0]], where_t[parts[1]]))
    return gold


@writes_runs
def execute_mining(request: MiningRequest, command: list[str]) -> Path | None:
    """Extract both files, mine, score against gold; the run directory (main process) or None."""
    processes = distributed.current()
    source_ids, sources = read_sentences(request.source)
    target_ids, targets = read_sentences(request.target)
    gold = read_gold(request.gold, source_ids, target_ids) if request.gold else None
    if request.k < 1 or request.batch_size < 1:
        raise DataError("--k and --batch-size must be at least 1")
    src_lang = canonical(request.source_language, "--source-language")
    tgt_lang = canonical(request.target_language, "--target-language")
    request.check_name("mining")
    processes.check(len(sources) + len(targets))
    blocks = block_count(request.model)
    if request.layer is not None and blocks is not None:  # before the weights load
        check_layers((request.layer,), blocks)
    timings = {}
    clock = time.perf_counter()
    loaded = load_model(request.model, request.adapter, processes.device(request.device),
                        request.dtype)
    extractor = Extractor(loaded, ExtractionConfig(max_length=request.max_length))
    blocks = extractor.parts.num_layers - 1
    layer = request.layer if request.layer is not None else (blocks + 1) // 2
    extractor = Extractor(loaded, ExtractionConfig(max_length=request.max_length,
                                                   layers=(layer,)))
    timings["load_model"] = time.perf_counter() - clock
    corpus = ParallelCorpus(f"{request.source.name}|{request.target.name}", {
        "source": Side("source", src_lang, "source", tuple(sources)),
        "target": Side("target", tgt_lang, "target", tuple(targets))})
    clock = time.perf_counter()
    store = ActivationStore(request.store or request.output / "store")
    acts = store.extract(extractor, corpus, request.batch_size,
                         progress=request.progress_bars, processes=processes)
    if acts is None:
        return None
    timings["extract"] = time.perf_counter() - clock
    clock = time.perf_counter()
    device = loaded.device
    mined = mine(acts.get("source")[0].to(device), acts.get("target")[0].to(device), request.k,
                 request.margin)
    timings["mine"] = time.perf_counter() - clock
    table = pd.DataFrame([{"source_id": source_ids[i], "target_id": target_ids[j], "margin": score,
                           "source": sources[i], "target": targets[j]}
                          for (i, j), score in candidates(mined)])
    scores: dict = {"candidates": len(table), "layer": layer, "k": request.k,
                    "score": "ratio margin" if request.margin else "cosine"}
    if gold:
        result = mining_f1(mined, gold)
        scores.update({k: v for k, v in asdict(result).items() if k != "candidates"})
        wrong = [mined.forward[i].item() != j for i, j in gold]
        scores["xsim_error"] = sum(wrong) / len(wrong)
        scores["gold_pairs"] = len(gold)
    run_dir = request.claim("mining", f"{loaded.name}-mine-{acts.key[:8]}", content_named=True)
    start_run_directory(run_dir)
    atomic_write(run_dir / MINED, lambda tmp: table.to_csv(tmp, sep="\t", index=False,
                                                           quoting=csv.QUOTE_MINIMAL))
    atomic_write_text(run_dir / SCORES, json.dumps(scores, indent=2))
    manifest = {
        "command": command, "kind": "mining",
        "model": loaded.record(request.adapter),
        "mining": {"source": str(request.source), "target": str(request.target),
                   "gold": str(request.gold) if request.gold else None,
                   "sentences": {"source": len(sources), "target": len(targets)}, **scores},
        "activations": str(acts.directory.resolve()),
        "activations_key": acts.key,
        "store": str(store.root.resolve()),
        "extraction": acts.manifest.get("extraction"),
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return run_dir
