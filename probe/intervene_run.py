"""One ``layer-analysis intervene`` run: steer generation with a language vector, or map a
language's states onto English ones (INCLINE-style), each against a control, with its measured
effect on behaviour and bootstrap CIs.

- ``steer``: vector = mean state of X − mean state of English at ``layer`` (mean-pooled FLORES
  dev sentences, the probe's extraction); added × strength after that block at every position
  while the model answers English prompts (``repeat``: "Repeat the sentence."; ``translate``:
  the evaluation's English → X translation prompt). Control: a random direction of the same
  norm. Measured: share of outputs identified (lingua) as X, chrF++ against the X reference.
- ``map``: ridge least-squares map from X's pooled states to English's at ``layer`` on
  ``fit_sentences`` FLORES dev pairs (disjoint from the evaluation, FLORES devtest), applied to
  the prompt's states: h ← h + strength·(map(h) − h). Control: the same fit on shuffled pairs.
  Measured: X → English translation chrF++ and share of English outputs, XQuAD F1 in X.

The layer defaults to the one where X and English align best on the fit pairs (centered P@1,
both directions). Tables: ``interventions.csv`` (intervention, layer, strength, control,
measure, value, CI, delta vs no intervention, its paired CI), ``generations.jsonl``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
import torch

from . import report
from .checks import select_capped
from .data import load_parallel
from .errors import DataError
from .extract import ExtractionConfig, Extractor
from .files import MANIFEST, atomic_write, atomic_write_text, start_run_directory
from .generation import chrf_pp, f1, generate, read_xquad, xquad_language, xquad_prompts
from .hooks import check_layers
from .interventions import (
    LinearMap,
    mapped,
    random_direction,
    steered,
)
from .langid import check_identifiable, identify, iso639_3
from .languages import ENGLISH, canonical, display_name
from .metrics import bootstrap_ci, precision_at_1
from .models import LoadedModel, block_count, loaded_or_load
from .prompts import alpaca_prompt, translation_instruction
from .runs import RunSettings, check_held_out, run_kind, versions, writes_runs

KINDS = ("steer", "map")
STEER_TASKS = ("repeat", "translate")
REPEAT_INSTRUCTION = "Repeat the sentence."  # written for this project
TABLE, GENERATIONS = "interventions.csv", "generations.jsonl"
DEGENERATE = 0.5  # more empty outputs than this share: the strength broke the model
NONE = "no intervention"


@dataclass
class InterventionRequest(RunSettings):
    kind: str
    language: str
    layer: int | None = None  # default: best-aligned on the fit pairs
    strengths: tuple[float, ...] = (1.0, 2.0)
    task: str = "repeat"  # steer only
    fit_data: str = "flores-dev"
    fit_sentences: int = 300
    eval_data: str = "flores-devtest"
    eval_sentences: int = 50
    xquad: int = 50  # map only: XQuAD questions in X (0: none)
    max_new_tokens: int = 64
    bootstrap: int = 200
    seed: int = 0
    batch_size: int = 16
    static: bool = True


@dataclass(frozen=True)
class Prepared:
    language: str
    fit: tuple[list[str], list[str]]  # X, English
    sources: list[str]  # evaluation inputs (English for steer, X for map)
    references: list[str]  # X references (steer) / English (map)
    xquad: list[dict]


def check_intervention_request(request: InterventionRequest) -> Prepared:
    """Every check that needs no model."""
    if request.kind not in KINDS:
        raise DataError(f"unknown intervention {request.kind!r}; choose from {', '.join(KINDS)}")
    if request.task not in STEER_TASKS:
        raise DataError(f"unknown steering task {request.task!r}; choose from "
                        f"{', '.join(STEER_TASKS)}")
    language = canonical(request.language, "--language")
    if language == ENGLISH:
        raise DataError("interventions move a language towards or away from English; choose "
                        "another --language")
    check_identifiable(language)
    if not request.strengths or any(not (s == s) or abs(s) > 1e3 for s in request.strengths):
        raise DataError(f"--strengths must be finite numbers within ±1000, got "
                        f"{list(request.strengths)}")
    if request.fit_sentences < 2 or request.eval_sentences < 2 or request.bootstrap < 1 \
            or request.xquad < 0 or request.batch_size < 1 or request.max_new_tokens < 1:
        raise DataError("--fit-sentences and --eval-sentences must be at least 2; --bootstrap, "
                        "--batch-size and --max-new-tokens at least 1; --xquad 0 or more")

    def columns(source: str, limit: int) -> tuple[list[str], list[str]]:
        corpus = load_parallel(source)
        missing = [x for x in (language, ENGLISH) if x not in corpus.languages]
        if missing:
            raise DataError(f"{corpus.name} has no {', '.join(display_name(x) for x in missing)}")
        chosen = select_capped(corpus, [language, ENGLISH], limit)
        side = {s.language: s.sentences for s in chosen.sides.values()}
        return side[language], side[ENGLISH]

    fit = columns(request.fit_data, request.fit_sentences)
    if len(fit[0]) < 2:
        raise DataError(f"{request.fit_data} has fewer than 2 {display_name(language)} sentences")
    x, english = columns(request.eval_data, request.eval_sentences)
    check_held_out({language: fit[0], ENGLISH: fit[1]}, {language: x, ENGLISH: english},
                   "--fit-data", "--eval-data")
    if request.kind == "steer":
        sources, references = english, x
    else:
        sources, references = x, english
    xquad = []
    if request.kind == "map" and request.xquad:
        xquad_language(language)
        xquad = read_xquad(language, request.xquad)
    request.check_name("intervention")
    return Prepared(language, fit, sources, references, xquad)


def best_layer(x: torch.Tensor, english: torch.Tensor) -> tuple[int, list[float]]:
    """The block output (1..blocks) where centered P@1 X ↔ English (both directions averaged) on
    the fit pairs peaks; and the whole curve (layers 0..blocks)."""
    curve = ((precision_at_1(x, english) + precision_at_1(english, x)) / 2).tolist()
    return 1 + max(range(len(curve) - 1), key=lambda i: curve[i + 1]), curve


# --------------------------------------------------------------------------------- measuring


def _chrf_bootstrap(hypotheses: list[str], references: list[str], samples: int, seed: int
                    ) -> torch.Tensor:
    """Corpus chrF++ on ``samples`` resamples of the sentences (the same resamples for every
    setting of a run, so differences are paired)."""
    generator = random.Random(seed)
    n = len(hypotheses)
    draws = [[generator.randrange(n) for _ in range(n)] for _ in range(samples)]
    return torch.tensor([chrf_pp([hypotheses[i] for i in d], [references[i] for i in d])
                         for d in draws])


@dataclass
class Outcome:
    """One setting's outputs and per-item scores."""

    outputs: list[str]
    shares: dict[str, torch.Tensor]  # measure -> per-output 0/1
    chrf: float
    chrf_resampled: torch.Tensor
    xquad_f1: torch.Tensor | None = None
    xquad_outputs: list[str] | None = None


def rows_for(setting: dict, outcome: Outcome, base: Outcome, request: InterventionRequest
             ) -> list[dict]:
    """Tidy rows: each measure with its CI and its paired difference from no intervention."""
    rows = []

    def add(measure: str, value: float, low: float, high: float, delta: float, d_low: float,
            d_high: float) -> None:
        rows.append({**setting, "measure": measure, "value": value, "ci_low": low,
                     "ci_high": high, "delta": delta, "delta_ci_low": d_low,
                     "delta_ci_high": d_high})

    for measure, values in outcome.shares.items():
        low, high = bootstrap_ci(values, request.bootstrap, seed=request.seed)
        diff = values - base.shares[measure]
        d_low, d_high = bootstrap_ci(diff, request.bootstrap, seed=request.seed)
        add(measure, float(values.mean()), float(low), float(high), float(diff.mean()),
            float(d_low), float(d_high))
    resampled, diff = outcome.chrf_resampled, outcome.chrf_resampled - base.chrf_resampled
    add("chrf++", outcome.chrf, float(resampled.quantile(0.025)), float(resampled.quantile(0.975)),
        outcome.chrf - base.chrf, float(diff.quantile(0.025)), float(diff.quantile(0.975)))
    if outcome.xquad_f1 is not None and base.xquad_f1 is not None:
        values, diff = outcome.xquad_f1, outcome.xquad_f1 - base.xquad_f1
        low, high = bootstrap_ci(values, request.bootstrap, seed=request.seed)
        d_low, d_high = bootstrap_ci(diff, request.bootstrap, seed=request.seed)
        add("xquad_f1", float(values.mean()), float(low), float(high), float(diff.mean()),
            float(d_low), float(d_high))
    return rows


class Evaluator:
    """The model, its prompts and the evaluation of one intervention setting."""

    def __init__(self, loaded: LoadedModel, prepared: Prepared, request: InterventionRequest):
        self.loaded, self.prepared, self.request = loaded, prepared, request
        language = prepared.language
        if request.kind == "steer":
            instruction = (REPEAT_INSTRUCTION if request.task == "repeat"
                           else translation_instruction(ENGLISH, language))
            self.wanted = language
        else:
            instruction = translation_instruction(language, ENGLISH)
            self.wanted = ENGLISH
        self.prompts = [alpaca_prompt(instruction, s) for s in prepared.sources]
        self.xquad_prompts = xquad_prompts(prepared.xquad, language) if prepared.xquad else []

    def _preflight(self, label: str) -> None:
        """One forward of the first prompt: non-finite logits stop the run before generating."""
        batch = self.loaded.tokenizer(self.prompts[:1], return_tensors="pt").to(self.loaded.device)
        with torch.no_grad():
            logits = self.loaded.model(**batch).logits
        if not bool(torch.isfinite(logits).all()):
            raise DataError(f"{label} makes the model's logits non-finite; choose a smaller "
                            "--strengths")

    def measure(self, label: str, context: Callable[[], AbstractContextManager]) -> Outcome:
        request = self.request
        with context():
            self._preflight(label)
            outputs = generate(self.loaded, self.prompts, request.max_new_tokens,
                               request.batch_size)
            answers = (generate(self.loaded, self.xquad_prompts, 32, request.batch_size)
                       if self.xquad_prompts else None)
        empty = torch.tensor([float(not o.strip()) for o in outputs])
        if float(empty.mean()) > DEGENERATE:
            raise DataError(f"{label} gives degenerate outputs ({int(empty.sum())} of "
                            f"{len(outputs)} empty)" + (
                                "; choose a smaller --strengths" if label != NONE else
                                ": the model alone does not answer these prompts"))
        found = identify(outputs)  # ISO 639-3 codes, as lingua names them
        wanted = torch.tensor([float(f == iso639_3(self.wanted)) for f in found])
        references = self.prepared.references
        outcome = Outcome(outputs, {f"share_{self.wanted.split('_')[0]}": wanted, "empty": empty},
                          chrf_pp(outputs, references),
                          _chrf_bootstrap(outputs, references, request.bootstrap, request.seed))
        if answers is not None:
            outcome.xquad_f1 = torch.tensor([100 * f1(a, q["answers"]) for a, q in
                                             zip(answers, self.prepared.xquad, strict=True)])
            outcome.xquad_outputs = answers
        return outcome


@writes_runs
def execute_intervention(request: InterventionRequest, command: list[str],
                         say: Callable[[str], None] = lambda _: None) -> tuple[Path, pd.DataFrame]:
    """Fit, intervene at every strength with and without the control, measure, write."""
    prepared = check_intervention_request(request)
    blocks = block_count(request.model)
    if request.layer is not None and blocks is not None:  # before the weights load
        check_layers([request.layer], blocks, first=1, acting="interventions act")
    clock = time.perf_counter()
    loaded = loaded_or_load(request.model, request.adapter, request.device, request.dtype)
    extractor = Extractor(loaded, ExtractionConfig())
    parts = extractor.parts
    if request.layer is not None:
        check_layers([request.layer], len(parts.blocks), first=1, acting="interventions act")
    timings = {"load_model": time.perf_counter() - clock}
    run_dir = request.claim("intervention",
                            f"{loaded.name}-{request.kind}-{prepared.language.split('_')[0]}")
    clock = time.perf_counter()
    say(f"fit: {len(prepared.fit[0])} {display_name(prepared.language)}–English pairs")
    x_states = extractor.extract(prepared.fit[0], request.batch_size)[0]
    english_states = extractor.extract(prepared.fit[1], request.batch_size)[0]
    peak, curve = best_layer(x_states, english_states)
    layer = request.layer if request.layer is not None else peak
    x, english = x_states[layer], english_states[layer]
    fitted: dict = {"layer": layer, "best_layer": peak, "alignment_curve": curve}
    if request.kind == "steer":
        vector = x.mean(0) - english.mean(0)
        control = random_direction(vector, request.seed)
        fitted["vector_norm"] = float(vector.norm())

        def intervention(strength: float, kind: str):
            return lambda: steered(parts, layer, vector if kind == "vector" else control, strength)
        kinds = ("vector", "random")
    else:
        linear_map = LinearMap.fit(x, english)
        shuffled = english[torch.randperm(len(english),
                                          generator=torch.Generator().manual_seed(request.seed))]
        control_map = LinearMap.fit(x, shuffled)
        fitted.update(ridge=linear_map.ridge, ridge_at_edge=linear_map.ridge_at_edge,
                      control_ridge=control_map.ridge)
        if linear_map.ridge_at_edge:
            say(f"warning: the ridge chosen ({linear_map.ridge:g}) is the grid's largest: "
                f"{len(x)} pairs barely support a linear map at width {x.shape[1]}, and the map "
                "is close to a constant (the English mean); compare it with the control")

        def intervention(strength: float, kind: str):
            return lambda: mapped(parts, layer, linear_map if kind == "map" else control_map,
                                  strength)
        kinds = ("map", "shuffled")
    timings["fit"] = time.perf_counter() - clock
    evaluator = Evaluator(loaded, prepared, request)
    clock = time.perf_counter()
    say(NONE)
    base = evaluator.measure(NONE, nullcontext)
    outcomes = [({"strength": 0.0, "control": "none"}, base)]
    for strength in request.strengths:
        for kind in kinds:
            label = f"{kind} at layer {layer}, strength {strength:g}"
            say(label)
            outcomes.append(({"strength": strength, "control": kind},
                             evaluator.measure(label, intervention(strength, kind))))
    timings["generate"] = time.perf_counter() - clock
    setting = {"intervention": request.kind, "language": prepared.language, "layer": layer}
    table = pd.DataFrame([row for extra, outcome in outcomes
                          for row in rows_for({**setting, **extra}, outcome, base, request)])
    start_run_directory(run_dir)
    atomic_write(run_dir / TABLE, lambda tmp: table.to_csv(tmp, index=False))
    lines = [json.dumps({**extra, "index": i, "source": s, "reference": r, "output": o},
                        ensure_ascii=False)
             for extra, outcome in outcomes
             for i, (s, r, o) in enumerate(zip(prepared.sources, prepared.references,
                                               outcome.outputs, strict=True))]
    lines += [json.dumps({**extra, "index": i, "task": "xquad", "question": q["question"],
                          "answers": q["answers"], "output": o}, ensure_ascii=False)
              for extra, outcome in outcomes
              for i, (q, o) in enumerate(zip(prepared.xquad, outcome.xquad_outputs or [],
                                             strict=False))]
    atomic_write_text(run_dir / GENERATIONS, "\n".join(lines) + "\n")
    figures = {"effect": report.intervention_effects(table)}
    report.export(figures, run_dir,
                  f"{request.kind} {display_name(prepared.language)} in {loaded.name}",
                  summary_lines(table), request.static, loaded.name)
    manifest = {
        "command": command, "kind": "intervention",
        "model": loaded.record(request.adapter),
        "intervention": {**{f.name: getattr(request, f.name) for f in fields(request)  # not
                            # asdict: it would deep-copy a model the caller loaded
                            if f.name not in ("output", "name", "overwrite", "static", "model",
                                              "adapter", "device", "dtype")},
                         "language": prepared.language, **fitted},
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return run_dir, table


def summary_lines(table: pd.DataFrame) -> list[str]:
    """One line per setting: each measure's value and its change vs no intervention with the
    paired 95 % CI."""
    lines = []
    for (control, strength), rows in table.groupby(["control", "strength"], sort=False):
        if control == "none":
            lines.append(f"{NONE}: " + ", ".join(f"{r.measure} {r.value:.3f}"
                                                 for r in rows.itertuples()))
            continue
        lines.append(f"{control}, layer {rows.layer.iloc[0]}, strength {strength:g}: " + ", ".join(
            f"{r.measure} {r.value:.3f} ({r.delta:+.3f} [{r.delta_ci_low:+.3f}, "
            f"{r.delta_ci_high:+.3f}])" for r in rows.itertuples()))
    return lines


def read_intervention_run(directory: Path) -> tuple[dict, pd.DataFrame]:
    """A finished intervention run's manifest and table, or a clear error."""
    directory = Path(directory)
    if run_kind(directory) != "intervention":
        raise DataError(f"{directory} is not a finished intervention run")
    return json.loads((directory / MANIFEST).read_text()), pd.read_csv(directory / TABLE)
