"""One ``layer-analysis transfer`` run: SIB-200 (or its layout), checks, states, probes, tables.

States come through the same extraction and activation store as ``run`` (same pooling and
sink rule; cached, resumable, several processes). Languages are extracted in groups of
``group_size`` (the source's group first), so memory stays bounded at 205 languages; each group
is one store key.

    transfer.csv           the tidy table of ``probe.transfer`` (both variants, all layers)
    summary.csv            per variant and layer, the mean over targets (source left out) of
                           transfer, ceiling and ratio, accuracy and macro-F1
    predictions.parquet    every test prediction (paired comparisons between runs)
    tokenization.csv       ``probe.tokenization`` per language
    alignment.csv          ``run``'s analysis (English pivot, every metric and normalisation) of
                           the test sentences' states, the very ones the probe is tested on:
                           ``correlate RUN --scores RUN`` needs no second extraction
    report.html            mean curves with ceiling and chance; targets ranked at the best layer
    manifest.json          last; lists every probe fit that did not converge
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import distributed, report
from .analysis import AnalysisConfig, analyse
from .checks import COUNT, check_numbers
from .errors import DataError, notice
from .extract import ExtractionConfig, Extractor
from .files import (
    MANIFEST,
    atomic_write,
    atomic_write_text,
    check_output_file,
    start_run_directory,
)
from .hooks import check_layers
from .languages import canonical
from .models import block_count, loaded_or_load
from .runs import RunSettings, slug, versions, writes_runs
from .sib200 import NAME, LabelledCorpus, check_categories, limit_splits, load_sib
from .store import ENGINE_VERSION, Activations, ActivationStore
from .tokenization import FILE as TOKENIZATION
from .tokenization import confound, tokenization_table
from .transfer import COLUMNS, ProbeConfig, SourceProbes

TABLE, SUMMARY, PREDICTIONS = "transfer.csv", "summary.csv", "predictions.parquet"
ALIGNMENT = "alignment.csv"
REPORT = "report.html"
KIND = "transfer"


@dataclass
class TransferRequest(RunSettings):
    """Everything a transfer run needs; the CLI's ``transfer`` options one to one."""

    data: str = NAME
    languages: list[str] | None = None  # None or ["all"]: every language of the data
    source: str = "eng_Latn"
    limit: int | None = None  # a seeded random sample of N rows of every split
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    batch_size: int = 32
    group_size: int = 16
    store: Path | None = None
    progress_bars: bool = True


def check_transfer(request: TransferRequest) -> tuple[LabelledCorpus, str]:
    """Every check that needs no model: the data, its parallelism, the categories, the source
    and targets, the options. Returns the corpus (the source first) and the source's code."""
    source = canonical(request.source, "--source")
    check_numbers({"--batch-size": (request.batch_size, COUNT),
                   "--group-size": (request.group_size, COUNT)})
    if len(request.extraction.poolings) != 1:
        raise DataError("transfer probes one pooling; pass one --pooling")
    request.check_name(KIND)
    languages = request.languages
    if languages is not None and languages != ["all"]:
        codes = [canonical(x, "--languages") for x in languages]
        languages = list(dict.fromkeys([source, *codes]))
    corpus = load_sib(request.data, languages, reference=source)
    if source not in corpus.splits:
        raise DataError(f"{corpus.root} has no {source}, the --source (no {source}/train.tsv)")
    if len(corpus.languages) < 2:
        raise DataError(f"the transfer source {source} is the only language: name one or more "
                        "targets (--languages) besides it")
    corpus = limit_splits(corpus, request.limit)
    check_categories(corpus, source)
    return corpus, source


def groups_of(languages: list[str], size: int) -> list[list[str]]:
    """Consecutive groups of at most ``size`` languages (the first holds the source)."""
    return [languages[i:i + size] for i in range(0, len(languages), size)]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant, layer, setting and metric: the mean over targets (the source left out)."""
    targets = table[table.target != table.source]
    keys = ["model", "variant", "layer", "setting", "metric"]
    return (targets.groupby(keys, sort=False)
            .agg(mean=("value", "mean"), targets=("target", "nunique"), chance=("chance", "mean"))
            .reset_index())


def best_layers(summary: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per variant, the layer where the mean transfer ``metric`` over targets peaks."""
    rows = summary[(summary.setting == "transfer") & (summary.metric == metric)]
    return rows.loc[rows.groupby("variant", sort=False)["mean"].idxmax()].reset_index(drop=True)


def curves_figure(summary: pd.DataFrame, metric: str = "accuracy") -> Any:
    """Mean over targets per layer: transfer and ceiling of both variants, and chance."""
    import plotly.graph_objects as go

    from .report import PALETTE

    rows = summary[summary.metric == metric]
    fig = go.Figure()
    chance = rows[rows.setting == "transfer"].groupby("layer").chance.mean()
    fig.add_trace(go.Scatter(x=chance.index, y=chance.values, mode="lines", name="chance "
                             "(majority class)", line={"color": "black", "dash": "dash"}))
    for i, variant in enumerate(("raw", "centered")):
        for setting, dash in (("transfer", "solid"), ("ceiling", "dot")):
            line = rows[(rows.variant == variant) & (rows.setting == setting)].sort_values("layer")
            if not line.empty:
                fig.add_trace(go.Scatter(x=line.layer, y=line["mean"], mode="lines+markers",
                                         name=f"{variant}: {setting}",
                                         line={"color": PALETTE[i], "dash": dash}))
    fig.update_layout(title=f"{metric} per layer, mean over targets (transfer from the source; "
                            "ceiling: trained in the target)", xaxis_title="layer",
                      yaxis_title=metric)
    return fig


def targets_figure(table: pd.DataFrame, layer: int, variant: str = "centered",
                   metric: str = "accuracy") -> Any:
    """Targets ranked by transfer at ``layer`` (95 % CI), their ceiling beside, and chance."""
    import plotly.graph_objects as go

    rows = table[(table.layer == layer) & (table.variant == variant) & (table.metric == metric)
                 & (table.target != table.source)]
    transfer = rows[rows.setting == "transfer"].sort_values("value", ascending=False)
    ceiling = rows[rows.setting == "ceiling"].set_index("target").reindex(transfer.target)
    fig = go.Figure(go.Bar(
        x=transfer.value, y=transfer.target, orientation="h", name="transfer",
        error_x={"type": "data", "symmetric": False, "array": transfer.ci_high - transfer.value,
                 "arrayminus": transfer.value - transfer.ci_low}))
    if not ceiling.empty:
        fig.add_trace(go.Scatter(x=ceiling.value, y=transfer.target, mode="markers",
                                 name="ceiling", marker={"symbol": "line-ns-open", "size": 14}))
    if not transfer.empty:
        fig.add_vline(x=float(transfer.chance.mean()), line={"color": "black", "dash": "dash"},
                      annotation_text="chance")
    fig.update_layout(title=f"{metric} at layer {layer} ({variant}), {len(transfer)} targets "
                            "ranked", yaxis_autorange="reversed", yaxis_automargin=True,
                      height=max(360, 16 * len(transfer) + 160), xaxis_title=metric)
    return fig


def transfer_confound(table: pd.DataFrame, summary: pd.DataFrame, tokenization: pd.DataFrame
                      ) -> str | None:
    """``tokenization.confound`` for transfer accuracy at the best centered layer."""
    best = best_layers(summary)
    best = best[best.variant == "centered"]
    if best.empty:
        return None
    layer = int(best.layer.iloc[0])
    rows = table[(table.variant == "centered") & (table.layer == layer)
                 & (table.setting == "transfer") & (table.metric == "accuracy")
                 & (table.target != table.source)]
    return confound(dict(zip(rows.target, rows.value, strict=True)), tokenization,
                    what=f"transfer accuracy (centered, layer {layer})")


def alignment_of_test(states: dict[str, torch.Tensor], texts: dict[str, list[str]],
                   layers: list[int], pooling: str, source: str, model: str, bootstrap: int,
                   seed: int) -> pd.DataFrame:
    """``run``'s analysis, ``source`` as the pivot, of the test sentences' states
    (``states[code]``: (layers, sentences, hidden), the source's first): alignment measured on the
    states the probe is tested on."""
    acts = Activations(key="", directory=Path(), layers=layers, poolings=[pooling],
                       vectors={code: x[None] for code, x in states.items()}, n_tokens={},
                       manifest={"sides": {code: {"language": code, "group": 0}
                                           for code in states}}, texts=texts)
    config = AnalysisConfig(pivot=source, bootstrap=bootstrap, seed=seed)
    return analyse(acts, model, config).table


def language_truncation(extractor: Extractor, corpus: LabelledCorpus
                        ) -> tuple[dict[str, dict], str | None]:
    """Per language, what ``--max-length`` cuts (only languages with a cut sentence), and one
    warning naming the languages where it is serious (over 5 % of sentences, or any cut by
    more than half): their states describe only the start of those sentences."""
    records, serious = {}, []
    for code, side in corpus.parallel().sides.items():
        cut = extractor.truncation(list(side.sentences))
        if cut.sentences:
            records[code] = cut.to_dict()
        if cut.serious:
            serious.append(f"{code} {cut.share:.0%}")
    if not serious:
        return records, None
    limit = extractor.config.max_length
    return records, (f"--max-length {limit} truncates sentences of {len(serious)} language(s) "
                     f"({', '.join(serious)}; per language in the manifest): their states describe "
                     "only the start of those sentences (raise --max-length)")


@writes_runs
def execute_transfer(request: TransferRequest, command: list[str]) -> Path | None:
    """Run the transfer the request describes; the run directory (main process) or None."""
    processes = distributed.current()
    corpus, source = check_transfer(request)
    sizes = corpus.sizes()
    train = slice(0, sizes["train"])
    test = slice(sizes["train"] + sizes["dev"], sum(sizes.values()))
    y_train, y_test = np.array(corpus.labels("train")), np.array(corpus.labels("test"))
    groups = groups_of(corpus.languages, request.group_size)
    processes.check(min(len(g) for g in groups) * sum(sizes.values()))  # every group's share
    store = ActivationStore(request.store or request.output / "store")  # a file: refused
    blocks = block_count(request.model)
    if blocks is not None:  # before the weights load
        check_layers(request.extraction.layers, blocks)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    loaded = loaded_or_load(request.model, request.adapter, processes.device(request.device),
                            request.dtype)
    extractor = Extractor(loaded, request.extraction)
    timings["load_model"] = time.perf_counter() - clock
    truncation, cut_warning = language_truncation(extractor, corpus)
    if cut_warning and processes.main:
        notice(cut_warning)
    probes: SourceProbes | None = None
    rows: list[dict] = []
    predictions: list[pd.DataFrame] = []
    nonconverged: list[dict] = []
    activations: list[str] = []
    alignment: list[pd.DataFrame] = []
    source_test: torch.Tensor | None = None
    test_texts = {code: list(corpus.splits[code]["test"].texts) for code in corpus.languages}
    timings.update(extract=0.0, fit_source=0.0, score=0.0, alignment=0.0)
    for group in groups:
        clock = time.perf_counter()
        acts = store.extract(extractor, corpus.subset(group).parallel(), request.batch_size,
                             progress=request.progress_bars, processes=processes)
        timings["extract"] += time.perf_counter() - clock
        if acts is None:  # not the main process: its shard is stored
            continue
        activations.append(str(acts.directory.resolve()))
        clock = time.perf_counter()
        if probes is None:
            probes = SourceProbes(source, acts.get(source).numpy(), acts.layers, train, y_train,
                                  request.probe, loaded.name)
            nonconverged += probes.nonconverged
            timings["fit_source"] = time.perf_counter() - clock
            clock = time.perf_counter()
        for language in group:
            scored = probes.score(language, acts.get(language).numpy(), test, y_test)
            rows += scored.rows
            predictions.append(scored.predictions)
            nonconverged += scored.nonconverged
        timings["score"] += time.perf_counter() - clock
        clock = time.perf_counter()
        if source_test is None:
            source_test = acts.get(source)[:, test]
        states = {source: source_test, **{code: acts.get(code)[:, test] for code in group
                                           if code != source}}
        if len(states) > 1:
            alignment.append(alignment_of_test(states, {c: test_texts[c] for c in states},
                                            acts.layers, acts.poolings[0], source, loaded.name,
                                            request.probe.bootstrap, request.probe.seed))
        timings["alignment"] += time.perf_counter() - clock
        del acts
    if not processes.main:
        return None
    layers = probes.layers
    table = pd.DataFrame(rows, columns=COLUMNS)
    summary = summarise(table)
    tokenization = tokenization_table(loaded.tokenizer, loaded.name, corpus.parallel())
    settings = json.dumps([corpus.languages, request.limit, asdict(request.extraction),
                           asdict(request.probe), loaded.identity], sort_keys=True, default=str)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:8]
    prefix = slug(f"{loaded.name}-transfer-{corpus.name}-{source}")[:51]  # + digest: 60
    run_dir = request.claim(KIND, f"{prefix}-{digest}", content_named=True)
    warnings = [w for w in [cut_warning, transfer_confound(table, summary, tokenization)] if w]
    for warning in warnings[1:] if cut_warning else warnings:  # the cut was said before extracting
        notice(warning)
    if nonconverged:
        notice(f"{len(nonconverged)} probe fit(s) did not converge within {request.probe.max_iter} "
               f"iterations (listed in {run_dir / MANIFEST}); raise --max-iter or lower --c")
    manifest = {
        "command": command, "kind": KIND, "engine": ENGINE_VERSION,
        "model": loaded.record(request.adapter),
        "data": {"name": corpus.name, "root": str(corpus.root), "source": source,
                 "languages": corpus.languages, "splits": sizes, "limit": request.limit,
                 "categories": sorted(set(y_train))},
        "extraction": {**asdict(request.extraction), "layers": layers,
                       "batch_size": request.batch_size, "group_size": request.group_size,
                       "truncation": truncation},
        "probe": {**asdict(request.probe), "classifier": "StandardScaler + LogisticRegression"},
        "nonconverged": nonconverged,
        "warnings": warnings,
        "best_layers": best_layers(summary).to_dict("records"),
        "activations": activations,
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    start_run_directory(run_dir)
    atomic_write(run_dir / TABLE, lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(run_dir / SUMMARY, lambda tmp: summary.to_csv(tmp, index=False))
    frame = pd.concat(predictions, ignore_index=True)
    atomic_write(run_dir / PREDICTIONS, lambda tmp: frame.to_parquet(tmp, index=False))
    atomic_write(run_dir / TOKENIZATION, lambda tmp: tokenization.to_csv(tmp, index=False))
    aligned = pd.concat(alignment, ignore_index=True)
    atomic_write(run_dir / ALIGNMENT, lambda tmp: aligned.to_csv(tmp, index=False))
    best = best_layers(summary)
    layer = int(best[best.variant == "centered"].layer.iloc[0])
    report.export({"transfer_curves": curves_figure(summary),
                   f"targets_layer_{layer}": targets_figure(table, layer)},
                  run_dir, f"{loaded.name}: transfer from {source}",
                  [f"best transfer layer ({r.variant}): {r.layer} (mean accuracy {r.mean:.3f}; "
                   f"chance {r.chance:.3f})" for r in best.itertuples()] + warnings,
                  static=False, model=loaded.name)
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return run_dir


def read_transfer(directory: Path) -> tuple[pd.DataFrame, dict]:
    """The table and manifest of a finished transfer run, or one clear error."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        raise DataError(f"{directory} is not a finished run (no readable {MANIFEST})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise DataError(f"{directory} is not a transfer run")
    try:
        return pd.read_csv(directory / TABLE), manifest
    except (OSError, ValueError) as exc:
        raise DataError(f"{directory / TABLE} is unreadable ({exc})") from None


def read_test_alignment(directory: Path) -> pd.DataFrame:
    """The alignment of a finished transfer run's test sentences (``alignment.csv``)."""
    read_transfer(directory)
    try:
        return pd.read_csv(Path(directory) / ALIGNMENT)
    except FileNotFoundError:
        raise DataError(f"{directory} has no {ALIGNMENT} (a transfer run of an older version: "
                        "run it again, its states are cached)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{Path(directory) / ALIGNMENT} is unreadable ({exc})") from None


PAIRED_COLUMNS = ["model", "reference", "variant", "target", "setting", "layer", "difference",
                  "ci_low", "ci_high", "p_value", "q_value", "n"]
PAIRED_DATA = ("name", "source", "languages", "splits", "limit", "categories")  # must agree


def sentence_differences(a: Path, b: Path) -> pd.DataFrame:
    """Run B's "right" minus run A's per test sentence (1, 0 or −1), per variant, target,
    setting and layer (columns ``variant, target, setting, layer, row, difference`` and the two
    models' names as ``model``, ``reference``). The runs must hold the same data
    (``PAIRED_DATA``: base vs adapters on one sample), targets, layers and test labels."""
    frames, manifests = [], []
    for path in (a, b):
        manifests.append(read_transfer(path)[1])  # a clear error if it is no transfer run
        frames.append(pd.read_parquet(Path(path) / PREDICTIONS))
    data = [m.get("data", {}) for m in manifests]
    differs = [k for k in PAIRED_DATA if data[0].get(k) != data[1].get(k)]
    if differs:
        raise DataError(f"{a} and {b} differ in their data ({', '.join(differs)}); paired "
                        "differences need the same sentences (run both with the same --data, "
                        "--languages, --source and --limit)")
    keys = ["variant", "target", "setting", "layer", "row"]
    merged = frames[0].merge(frames[1], on=keys, suffixes=("_a", "_b"), how="outer",
                             indicator=True)
    if (merged._merge != "both").any() or (merged.label_a != merged.label_b).any():
        raise DataError(f"{a} and {b} differ in their targets, layers or test sentences; "
                        "paired differences need the same (run both on the same data)")
    difference = ((merged.prediction_b == merged.label_b).astype(float)
                  - (merged.prediction_a == merged.label_a).astype(float))
    reference, model = (m.get("model", {}).get("name", str(path))
                        for m, path in zip(manifests, (a, b), strict=True))
    return merged[keys].assign(difference=difference, model=model, reference=reference)


def paired_transfer(a: Path, b: Path, samples: int = 1000, permutations: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """Run B minus run A per test sentence (``sentence_differences``), per variant, target,
    setting and layer: mean difference of accuracy, 95 % bootstrap CI over sentences, sign-flip
    p and Benjamini-Hochberg q over each curve's layers (``probe.paired``'s statistics)."""
    from scipy.stats import false_discovery_control

    from .metrics import bootstrap_ci
    from .paired import sign_flip_p

    differences = sentence_differences(a, b)
    rows = []
    for (variant, target, setting), part in differences.groupby(
            ["variant", "target", "setting"], observed=True, sort=False):
        grid = part.pivot(index="layer", columns="row", values="difference")
        values = torch.tensor(grid.to_numpy(), dtype=torch.float32)
        low, high = bootstrap_ci(values, samples, seed=seed)
        p = sign_flip_p(values, permutations, seed)
        q = false_discovery_control(p.numpy(), method="bh")
        for i, layer in enumerate(grid.index):
            rows.append([part.model.iloc[0], part.reference.iloc[0], variant, target, setting,
                         int(layer), float(values[i].mean()), float(low[i]), float(high[i]),
                         float(p[i]), float(q[i]), values.shape[1]])
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _is_paired_table(path: Path) -> bool:
    """Whether ``path`` is a table ``transfer-compare`` wrote (its header; never a link)."""
    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return not path.is_symlink() and header == ",".join(PAIRED_COLUMNS)


def compare_transfer_runs(a: Path, b: Path, output: Path | None = None, samples: int = 1000,
                          permutations: int = 1000, seed: int = 0) -> pd.DataFrame:
    """``paired_transfer`` of two runs (read first: inputs before outputs), written to ``output``
    when given: a CSV that replaces only an earlier comparison's table (``check_output_file``)."""
    table = paired_transfer(a, b, samples, permutations, seed)
    if output is not None:
        check_output_file(Path(output), _is_paired_table, "transfer-compare table",
                          "transfer-compare.csv")
        atomic_write(Path(output), lambda tmp: table.to_csv(tmp, index=False))
    return table
