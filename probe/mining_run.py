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
from .checks import capped
from .data import ParallelCorpus, Side
from .errors import DataError, notice
from .extract import ExtractionConfig, Extractor
from .files import MANIFEST, atomic_write, atomic_write_text, start_run_directory
from .hooks import check_layers
from .languages import canonical
from .mining import MARGIN_K, candidates, mine, mining_f1
from .models import block_count, loaded_or_load
from .readers import numbered_lines
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


SENTENCE_FORMATS = ("auto", "plain", "bucc")


def read_sentences(path: Path, form: str = "auto") -> tuple[list[str], list[str]]:
    """(ids, sentences) of a plain file (one sentence per line, ids = line numbers from 1) or a
    BUCC file (``ID<TAB>sentence`` on every line, ids unique); ``form`` is ``plain``, ``bucc`` or
    ``auto``: BUCC if line 1 holds a tab, else plain, and then every line must agree — a BUCC
    line without its tab, or a tab in a plain file, is an error naming the file and line, never
    a silent switch of format (``plain`` keeps tabs inside sentences)."""
    if form not in SENTENCE_FORMATS:
        raise DataError(f"sentence file format {form!r}: use one of {', '.join(SENTENCE_FORMATS)}")
    lines = numbered_lines(path)
    if not lines:
        raise DataError(f"{path} is empty")
    guessed = form == "auto"
    if guessed:
        form = "bucc" if "\t" in lines[0][1] else "plain"
    ids, sentences, seen = [], [], {}
    for number, line in lines:
        if not line.strip():
            raise DataError(f"{path}, line {number}: empty line (every line must hold a sentence)")
        if form == "plain":
            if guessed and "\t" in line:
                raise DataError(f"{path}, line {number}: a tab, but line 1 has none: a BUCC file "
                                "needs ID<TAB>sentence on every line (a plain file with tabs "
                                "inside sentences: say the format is plain)")
            ids.append(str(number))
            sentences.append(line.strip())
            continue
        identifier, tab, sentence = line.partition("\t")
        identifier, sentence = identifier.strip(), sentence.strip()
        if not tab or "\t" in sentence or not identifier or not sentence:
            raise DataError(f"{path}, line {number}: expected BUCC's ID<TAB>sentence (one tab, "
                            f"both sides non-empty), got {line[:60]!r}")
        if identifier in seen:
            raise DataError(f"{path}, line {number}: id {identifier!r} repeats line "
                            f"{seen[identifier]}")
        seen[identifier] = number
        ids.append(identifier)
        sentences.append(sentence)
    return ids, sentences


def read_gold(path: Path, source_ids: list[str], target_ids: list[str],
              source: Path | str = "the source file", target: Path | str = "the target file"
              ) -> set[tuple[int, int]]:
    """Gold pairs (``SOURCE_ID<TAB>TARGET_ID`` lines) as (source index, target index); a
    malformed line, or an id not in ``source`` / ``target`` (the files the ids came from), is an
    error naming the gold file and line. A repeated pair counts once; one source id paired with
    two targets (or one target with two sources) is an error: xSIM scores each source against
    its one translation."""
    where_s = {x: i for i, x in enumerate(source_ids)}
    where_t = {x: i for i, x in enumerate(target_ids)}
    gold = set()
    first: dict[tuple[str, str], tuple[str, int]] = {}  # (side, id) -> (its partner, line)
    for number, line in numbered_lines(path):
        parts = [part.strip() for part in line.split("\t")]
        if len(parts) != 2 or not all(parts):
            raise DataError(f"{path}, line {number}: expected SOURCE_ID<TAB>TARGET_ID, got "
                            f"{line[:60]!r}")
        for side, identifier, where, named in (("source", parts[0], where_s, source),
                                               ("target", parts[1], where_t, target)):
            if identifier not in where:
                raise DataError(f"{path}, line {number}: {side} id {identifier!r} is not in "
                                f"{named}")
        for side, identifier, partner in (("source", parts[0], parts[1]),
                                          ("target", parts[1], parts[0])):
            seen = first.setdefault((side, identifier), (partner, number))
            if seen[0] != partner:
                raise DataError(f"{path}, line {number}: {side} id {identifier!r} is paired "
                                f"with {partner!r} here and with {seen[0]!r} on line {seen[1]}")
        gold.add((where_s[parts[0]], where_t[parts[1]]))
    if not gold:
        raise DataError(f"{path} holds no gold pairs")
    return gold


@writes_runs
def execute_mining(request: MiningRequest, command: list[str]) -> Path | None:
    """Extract both files, mine, score against gold; the run directory (main process) or None."""
    processes = distributed.current()
    source_ids, sources = read_sentences(request.source)
    target_ids, targets = read_sentences(request.target)
    gold = read_gold(request.gold, source_ids, target_ids, request.source,
                     request.target) if request.gold else None
    if request.k < 1 or request.batch_size < 1:
        raise DataError("--k and --batch-size must be at least 1")
    k = capped(request.k, min(len(sources), len(targets)), "neighbours for the margin (--k)",
               "the smaller side")
    src_lang = canonical(request.source_language, "--source-language")
    tgt_lang = canonical(request.target_language, "--target-language")
    request.check_name("mining")
    processes.check(len(sources) + len(targets))
    store = ActivationStore(request.store or request.output / "store")  # a file: refused
    blocks = block_count(request.model)
    if request.layer is not None and blocks is not None:  # before the weights load
        check_layers((request.layer,), blocks)
    timings = {}
    clock = time.perf_counter()
    loaded = loaded_or_load(request.model, request.adapter, processes.device(request.device),
                            request.dtype)
    extractor = Extractor(loaded, ExtractionConfig(max_length=request.max_length))
    blocks = extractor.parts.num_layers - 1
    layer = request.layer if request.layer is not None else (blocks + 1) // 2
    extractor = Extractor(loaded, ExtractionConfig(max_length=request.max_length,
                                                   layers=(layer,)))
    timings["load_model"] = time.perf_counter() - clock
    truncation = extractor.truncation([*sources, *targets])
    if truncation.serious:
        notice(truncation.warning())
    corpus = ParallelCorpus(f"{request.source.name}|{request.target.name}", {
        "source": Side("source", src_lang, "source", tuple(sources)),
        "target": Side("target", tgt_lang, "target", tuple(targets))})
    clock = time.perf_counter()
    acts = store.extract(extractor, corpus, request.batch_size,
                         progress=request.progress_bars, processes=processes)
    if acts is None:
        return None
    timings["extract"] = time.perf_counter() - clock
    clock = time.perf_counter()
    device = loaded.device
    mined = mine(acts.get("source")[0].to(device), acts.get("target")[0].to(device), k,
                 request.margin)
    timings["mine"] = time.perf_counter() - clock
    table = pd.DataFrame([{"source_id": source_ids[i], "target_id": target_ids[j], "margin": score,
                           "source": sources[i], "target": targets[j]}
                          for (i, j), score in candidates(mined)])
    scores: dict = {"candidates": len(table), "layer": layer, "k": k,
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
        "extraction": {**(acts.manifest.get("extraction") or {}),
                       "truncation": truncation.to_dict()},
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return run_dir
