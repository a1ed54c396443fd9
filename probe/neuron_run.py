"""One ``layer-analysis neurons`` run: LAPE language neurons and their deactivation check.

    neurons.safetensors   ``specific`` (languages, blocks, neurons) uint8 and ``probabilities``
                          (blocks, neurons, languages) float32; languages in the manifest's order
    neuron_counts.csv     language, layer, neurons
    neuron_overlap.csv    language_a, language_b, shared
    deactivation.csv      deactivated, neurons, control (language | random), evaluated, base_ppl,
                          ppl, delta_nll, ci_low, ci_high — and, per deactivated language, the
                          paired difference language − random on every evaluated language
    report.html, figures/, manifest.json (last)

The deactivation zeroes one language's neurons and measures every language's mean token NLL on
held-out sentences (not those LAPE counted on); the control zeroes as many random neurons of the
same layers (none of them language-specific). CIs: 95 % percentile bootstrap over sentences.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from . import report
from .checks import select_capped
from .data import load_parallel
from .errors import DataError, notice
from .extract import ExtractionConfig, Extractor
from .files import MANIFEST, atomic_write, atomic_write_text, start_run_directory
from .interventions import deactivated
from .languages import canonical, display_name
from .metrics import bootstrap_ci
from .models import loaded_or_load
from .neurons import (
    LapeThresholds,
    activation_counts,
    activation_modules,
    compare_masks,
    lape,
    neuron_counts,
    overlap,
    random_like,
    sentence_nll,
)
from .runs import (
    RunSettings,
    check_held_out,
    run_kind,
    sentences_fingerprint,
    versions,
    writes_runs,
)

NEURONS_FILE, COUNTS_TABLE, OVERLAP_TABLE = "neurons.safetensors", "neuron_counts.csv", "neuron_overlap.csv"
DEACTIVATION_TABLE, CHANGES_TABLE = "deactivation.csv", "neuron_changes.csv"
DEFAULT_LANGUAGES = ("eng_Latn", "deu_Latn", "zho_Hans", "ell_Grek", "arb_Arab")


@dataclass
class NeuronRequest(RunSettings):
    languages: list[str] | None = None  # default: DEFAULT_LANGUAGES
    data: str = "flores-dev"  # what LAPE counts on
    sentences: int = 200  # per language, for LAPE
    eval_data: str = "flores-devtest"  # held-out text for the deactivation check
    eval_sentences: int = 50  # per language (0: no deactivation check)
    thresholds: LapeThresholds = field(default_factory=LapeThresholds)
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 16
    max_length: int = 512
    static: bool = True


def check_neuron_request(request: NeuronRequest) -> tuple[list[str], dict, dict]:
    """Every check that needs no model; returns the languages and each one's LAPE and
    held-out sentences."""
    languages = [canonical(x, "--languages") for x in (request.languages or DEFAULT_LANGUAGES)]
    if len(set(languages)) != len(languages) or len(languages) < 2:
        raise DataError("LAPE needs at least two different languages")
    if request.sentences < 1 or request.eval_sentences < 0 or request.bootstrap < 1:
        raise DataError("--limit and --bootstrap must be at least 1, --eval-sentences 0 or more")
    if request.batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {request.batch_size}")

    def sentences(source: str, limit: int) -> dict[str, list[str]]:
        corpus = load_parallel(source)
        missing = [x for x in languages if x not in corpus.languages]
        if missing:
            raise DataError(f"{corpus.name} has no {', '.join(display_name(x) for x in missing)}")
        chosen = select_capped(corpus, languages, limit)
        return {side.language: side.sentences for side in chosen.sides.values()}

    counted = sentences(request.data, request.sentences)
    held_out = sentences(request.eval_data, request.eval_sentences) if request.eval_sentences else {}
    check_held_out(counted, held_out, "--data (what LAPE counts on)",
                   "--eval-data (the deactivation check's)")
    request.check_name("neurons")
    return languages, counted, held_out


def deactivation_table(extractor: Extractor, masks: torch.Tensor, languages: list[str],
                       held_out: dict[str, list[str]], request: NeuronRequest,
                       say: Callable[[str], None]) -> pd.DataFrame:
    """Every language's neurons (and a random control) zeroed in turn, every language's NLL."""
    parts = extractor.parts

    def nll() -> dict[str, torch.Tensor]:
        return {x: sentence_nll(extractor, held_out[x], request.batch_size) for x in languages}

    base = nll()
    anyone = masks.any(0)
    rows = []
    for i, language in enumerate(languages):
        mask = masks[i]
        if not bool(mask.any()):
            say(f"deactivation: {display_name(language)} has no neurons; skipped")
            continue
        control = random_like(mask, request.seed + i, exclude=anyone)
        say(f"deactivation: {display_name(language)} ({int(mask.sum())} neurons) and a random "
            "control")
        measured = {}
        for kind, chosen in (("language", mask), ("random", control)):
            with deactivated(parts, chosen):
                measured[kind] = nll()
        for evaluated in languages:
            for kind in ("language", "random", "language - random"):
                if kind == "language - random":
                    delta = measured["language"][evaluated] - measured["random"][evaluated]
                    ppl = float("nan")
                else:
                    delta = measured[kind][evaluated] - base[evaluated]
                    ppl = math.exp(float(measured[kind][evaluated].mean()))
                low, high = bootstrap_ci(delta, request.bootstrap, seed=request.seed)
                rows.append({"deactivated": language, "neurons": int(mask.sum()), "control": kind,
                             "evaluated": evaluated,
                             "base_ppl": math.exp(float(base[evaluated].mean())), "ppl": ppl,
                             "delta_nll": float(delta.mean()), "ci_low": float(low),
                             "ci_high": float(high)})
    return pd.DataFrame(rows)


def deactivation_summary(table: pd.DataFrame) -> list[str]:
    """Per deactivated language: its own NLL rise, the others' (on average), the rise under as
    many random neurons (the control), and the paired language − random difference."""
    lines = []
    for language, rows in table.groupby("deactivated", sort=False):
        own_rows = rows[rows.evaluated == language]
        own = own_rows[own_rows.control == "language"].iloc[0]
        random = own_rows[own_rows.control == "random"].iloc[0]
        paired = own_rows[own_rows.control == "language - random"].iloc[0]
        others = rows[(rows.evaluated != language) & (rows.control == "language")]
        lines.append(
            f"{display_name(language)} neurons ({own.neurons}) zeroed: its own NLL "
            f"{own.delta_nll:+.3f} [{own.ci_low:+.3f}, {own.ci_high:+.3f}] nats/token, the "
            f"others' {others.delta_nll.mean():+.3f} on average; as many random neurons "
            f"{random.delta_nll:+.3f} [{random.ci_low:+.3f}, {random.ci_high:+.3f}]; "
            f"language − random {paired.delta_nll:+.3f} [{paired.ci_low:+.3f}, "
            f"{paired.ci_high:+.3f}]")
    return lines


@writes_runs
def execute_neurons(request: NeuronRequest, command: list[str],
                    say: Callable[[str], None] = lambda _: None) -> Path:
    """Count, select, check; write the run directory (manifest last) and return it."""
    languages, counted, held_out = check_neuron_request(request)
    clock = time.perf_counter()
    loaded = loaded_or_load(request.model, request.adapter, request.device, request.dtype)
    extractor = Extractor(loaded, ExtractionConfig(max_length=request.max_length))
    activation_modules(extractor.parts)  # a clear error before any pass
    truncation = extractor.truncation([s for side in counted.values() for s in side])
    if truncation.serious:
        notice(truncation.warning())
    timings = {"load_model": time.perf_counter() - clock}
    run_dir = request.claim("neurons", f"{loaded.name}-neurons")
    clock = time.perf_counter()
    probabilities, tokens = [], {}
    for language in languages:
        say(f"activation probabilities: {display_name(language)}")
        counts, tokens[language] = activation_counts(extractor, counted[language],
                                                     request.batch_size)
        probabilities.append(counts.double() / max(tokens[language], 1))
    probs = torch.stack(probabilities, dim=-1).float()  # (blocks, neurons, languages)
    masks = lape(probs, request.thresholds)
    timings["lape"] = time.perf_counter() - clock
    clock = time.perf_counter()
    table = (deactivation_table(extractor, masks, languages, held_out, request, say)
             if held_out else pd.DataFrame())
    timings["deactivation"] = time.perf_counter() - clock
    counts_table, overlap_table = neuron_counts(masks, languages), overlap(masks, languages)
    start_run_directory(run_dir)
    atomic_write(run_dir / NEURONS_FILE, lambda tmp: save_file(
        {"specific": masks.to(torch.uint8).contiguous(), "probabilities": probs.contiguous()},
        tmp))
    for name, frame in ((COUNTS_TABLE, counts_table), (OVERLAP_TABLE, overlap_table),
                        (DEACTIVATION_TABLE, table)):
        if len(frame):
            atomic_write(run_dir / name, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
    figures = {"neurons_per_layer": report.neuron_counts(counts_table),
               "neuron_overlap": report.neuron_overlap(overlap_table)}
    summary = [f"{int(masks.any(0).sum())} language-specific neurons of "
               f"{masks.shape[1] * masks.shape[2]} (LAPE, {asdict(request.thresholds)})"]
    if len(table):
        figures["deactivation"] = report.deactivation(table)
        summary += deactivation_summary(table)
    report.export(figures, run_dir, f"Language neurons of {loaded.name}", summary, request.static,
                  loaded.name)
    manifest = {
        "command": command, "kind": "neurons",
        "model": loaded.record(request.adapter),
        "neurons": {"languages": languages, "data": request.data, "sentences": request.sentences,
                    "fingerprint": sentences_fingerprint(counted),
                    "tokens": tokens, "thresholds": asdict(request.thresholds),
                    "blocks": int(masks.shape[1]), "neurons_per_block": int(masks.shape[2]),
                    "eval_data": request.eval_data if held_out else None,
                    "eval_sentences": request.eval_sentences, "bootstrap": request.bootstrap,
                    "seed": request.seed, "truncation": truncation.to_dict()},
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return run_dir


# ------------------------------------------------------------------------------- comparison


def is_neuron_run(directory: Path) -> bool:
    return run_kind(directory) == "neurons"


def read_neuron_run(directory: Path) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A finished neurons run's manifest, masks (languages, blocks, neurons) and probabilities."""
    directory = Path(directory)
    if not is_neuron_run(directory):
        raise DataError(f"{directory} is not a finished neurons run (no manifest of kind "
                        "'neurons')")
    tensors = load_file(str(directory / NEURONS_FILE))
    manifest = json.loads((directory / MANIFEST).read_text())
    return manifest, tensors["specific"].bool(), tensors["probabilities"]


def compare_neuron_runs(directories: list[Path], output: Path, static: bool = True) -> Path:
    """Which language neurons appear or vanish from the first run to each other one (e.g. base →
    x-model → m-model): ``neuron_changes.csv`` and a report."""
    if len(directories) < 2:
        raise DataError("compare needs two or more runs")
    runs = [read_neuron_run(d) for d in directories]
    first, reference, _ = runs[0]
    languages = first["neurons"]["languages"]
    frames = []
    for directory, (manifest, masks, _) in zip(directories[1:], runs[1:], strict=True):
        # the same data by content (the fingerprint of what LAPE counted; older runs: by name)
        keys = ("languages", "fingerprint", "thresholds") if all(
            "fingerprint" in m["neurons"] for m in (manifest, first)) else (
            "languages", "data", "sentences", "thresholds")
        differs = [k for k in keys if manifest["neurons"][k] != first["neurons"][k]]
        if differs or masks.shape != reference.shape:
            named = [{"fingerprint": "data (by content)"}.get(k, k) for k in differs]
            raise DataError(f"{directory} differs from {directories[0]} in "
                            f"{', '.join(named) or 'the model shape'}: neuron runs compare "
                            "only with the same languages, data, thresholds and architecture")
        frames.append(compare_masks(reference, masks, languages).assign(
            before=first["model"]["name"], after=manifest["model"]["name"],
            after_run=str(directory)))
    changes = pd.concat(frames, ignore_index=True)
    start_run_directory(output)
    atomic_write(output / CHANGES_TABLE, lambda tmp: changes.to_csv(tmp, index=False))
    figures = {"neuron_changes": report.neuron_changes(changes)}
    models = " → ".join(m["model"]["name"] for m, _, _ in runs)
    report.export(figures, output, "Language neurons: what changed", static=static, model=models)
    atomic_write_text(output / MANIFEST, json.dumps(
        {"kind": "neurons", "compare": [str(d) for d in directories],
         "models": [m["model"]["name"] for m, _, _ in runs], "versions": versions()}, indent=2))
    return output
