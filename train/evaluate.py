"""Evaluation: translation on FLORES (greedy, chrF++ always, spBLEU when sacrebleu's FLORES-200
SentencePiece model is available) and XQuAD zero-shot with the prompt in the target language
(exact match and F1 as XQuAD's official SQuAD v1.1 script and as MLQA's language-aware one,
plus x-LLM's substring rule). Generation, the scores and XQuAD's prompts are
``probe.generation``'s, which ``intervene`` measures with too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from layer_analysis.probe.checks import select_capped
from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.errors import DataError, ProbeError
from layer_analysis.probe.generation import (
    chrf_pp,
    contains_answer,
    exact_match,
    f1,
    generate,
    read_xquad,
    spbleu,
    xquad_language,
    xquad_prompts,
)
from layer_analysis.probe.langid import check_identifiable, identify, off_target
from layer_analysis.probe.languages import ENGLISH, canonical
from layer_analysis.probe.models import LoadedModel
from layer_analysis.probe.prompts import alpaca_prompt, translation_instruction
from layer_analysis.probe.readers import read_json


@dataclass
class Evaluation:
    scores: dict
    predictions: list[dict]


def evaluate_translation(loaded: LoadedModel, target: str, data: str = "flores-devtest",
                         limit: int | None = 100, source: str = ENGLISH,
                         max_new_tokens: int = 128, batch_size: int = 16) -> Evaluation:
    """Translate ``limit`` sentences of ``data`` from ``source`` to ``target`` (fixed
    evaluation instruction) and score them."""
    src, tgt = canonical(source, "--source"), canonical(target, "--languages")
    corpus = select_capped(load_parallel(data), [src, tgt], limit)
    sources = next(s for s in corpus.sides.values() if s.language == src).sentences
    references = next(s for s in corpus.sides.values() if s.language == tgt).sentences
    instruction = translation_instruction(src, tgt)
    hypotheses = generate(loaded, [alpaca_prompt(instruction, s) for s in sources],
                          max_new_tokens, batch_size)
    languages = identify(hypotheses)
    wrong = off_target(hypotheses, tgt, languages)
    scores = {"task": "translation", "source": src, "target": tgt, "data": corpus.name,
              "sentences": len(sources), "chrf++": round(chrf_pp(hypotheses, references), 2),
              "spbleu": spbleu(hypotheses, references),
              "off_target_rate": round(wrong["off_target_rate"], 4),
              "unidentified": wrong["unidentified"], "languages_found": wrong["languages_found"]}
    if scores["spbleu"] is not None:
        scores["spbleu"] = round(scores["spbleu"], 2)
    predictions = [{"source": s, "reference": r, "hypothesis": h, "language": x}
                   for s, r, h, x in zip(sources, references, hypotheses, languages, strict=True)]
    return Evaluation(scores, predictions)


TASKS = ("translation", "xquad")


def check_languages(task: str, languages: list[str], data: str = "flores-devtest",
                    limit: int | None = None) -> None:
    """Raise the error evaluating any of ``languages`` would raise, before a model is loaded."""
    if task not in TASKS:
        raise DataError(f"unknown evaluation task {task!r}; choose from {', '.join(TASKS)}")
    codes = [canonical(language, "--languages") for language in languages]
    repeated = sorted({c for c in codes if codes.count(c) > 1})
    if repeated:
        raise DataError(f"--languages names {', '.join(repeated)} twice")
    for language in languages:
        if task == "translation":
            if canonical(language, "--languages") == ENGLISH:
                raise DataError("translation is evaluated from English into another language: "
                                "English is no target (--languages)")
            load_parallel(data).select([ENGLISH, canonical(language, "--languages")], limit)
            check_identifiable(language)
        else:
            xquad_language(language)
            read_xquad(language, 1)


def evaluate_xquad(loaded: LoadedModel, language: str, limit: int | None = 100,
                   max_new_tokens: int = 32, batch_size: int = 8) -> Evaluation:
    """Zero-shot XQuAD with the instruction in the question's language."""
    iso = xquad_language(language)
    items = read_xquad(language, limit)
    prompts = xquad_prompts(items, language)
    answers = generate(loaded, prompts, max_new_tokens, batch_size)
    per = [{"id": q["id"], "question": q["question"], "answers": q["answers"], "prediction": a,
            "em": exact_match(a, q["answers"]), "f1": f1(a, q["answers"]),
            "em_mlqa": exact_match(a, q["answers"], iso), "f1_mlqa": f1(a, q["answers"], iso),
            "contains": contains_answer(a, q["answers"])} for q, a in zip(items, answers,
                                                                          strict=True)]
    n = len(per)  # at least one: read_xquad refuses a file without questions
    scores = {"task": "xquad", "language": iso, "questions": len(per),
              **{name: round(100 * sum(p[name] for p in per) / n, 2)
                 for name in ("em", "f1", "em_mlqa", "f1_mlqa", "contains")}}
    return Evaluation(scores, per)


def predictions_path(path: Path) -> Path:
    """Where the predictions of the scores file ``path`` go: ``F.predictions.jsonl`` beside
    ``F.json``."""
    return Path(path).with_suffix(".predictions.jsonl")


def _is_scores_file(path: Path) -> bool:
    """Whether ``path`` holds an evaluation's scores (a list of score records)."""
    try:
        earlier = read_json(path)
    except ProbeError:
        return False
    return (isinstance(earlier, list) and bool(earlier)
            and all(isinstance(r, dict) and "task" in r for r in earlier))


def check_scores_output(path: Path) -> None:
    """Before a model loads: ``path`` may take an evaluation's scores — not a directory, not
    below a file, and not an existing file other than an earlier scores file (a list of score
    records), which is replaced; anything else (a run's manifest, training data) is never
    overwritten. The predictions file beside it (``predictions_path``) is replaced only with
    the earlier scores it belongs to: one without them is refused."""
    from layer_analysis.probe.errors import StoreError
    from layer_analysis.probe.files import check_output_file

    path = Path(path)
    check_output_file(path, _is_scores_file, "evaluation's scores file", "scores.json")
    predictions = predictions_path(path)
    if predictions.is_dir() and not predictions.is_symlink():
        raise StoreError(f"{predictions}, where the predictions of --output {path} go, is a "
                         "directory; choose another --output")
    if not (path.exists() or path.is_symlink()) and (predictions.exists()
                                                     or predictions.is_symlink()):
        raise StoreError(f"{predictions} exists without the scores file {path} it would belong "
                         "to; it is not overwritten: choose another --output")


def write_evaluation(evaluations: list[Evaluation], path: Path,
                     model: dict | None = None) -> None:
    """Scores as JSON (predictions beside it as JSONL), each written atomically: a list of
    score records, each with the evaluated ``model``'s record (``LoadedModel.record``: its name
    and identity) where given; a reader of the scores skips that key (``evaluation_model``)."""
    from layer_analysis.probe.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{**e.scores, **({"model": model} if model is not None else {})}
               for e in evaluations]
    atomic_write_text(path, json.dumps(records, indent=2, ensure_ascii=False, default=str))
    lines = [json.dumps({**p, **{k: v for k, v in e.scores.items() if k in ("task", "target",
                                                                             "language")}},
                        ensure_ascii=False) for e in evaluations for p in e.predictions]
    atomic_write_text(predictions_path(path), "\n".join(lines) + "\n")


def evaluation_model(records: list[dict]) -> tuple[list[dict], dict | None]:
    """An evaluation's score records without the model's record, and that record (None in a
    file written before scores carried it)."""
    model = next((r["model"] for r in records if isinstance(r.get("model"), dict)), None)
    return [{k: v for k, v in r.items() if k != "model"} for r in records], model
