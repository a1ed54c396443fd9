"""Evaluation: translation on FLORES (greedy, chrF++ always, spBLEU when sacrebleu's FLORES-200
SentencePiece model is available) and XQuAD zero-shot with the prompt in the target language
(exact match and F1 as XQuAD's official SQuAD v1.1 script and as MLQA's language-aware one,
plus x-LLM's substring rule)."""

from __future__ import annotations

import collections
import json
import re
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from layer_analysis.probe.checks import COUNT, capped, check_numbers, select_capped
from layer_analysis.probe.data import load_parallel, shared_data_root
from layer_analysis.probe.errors import DataError, ProbeError
from layer_analysis.probe.langid import check_identifiable, identify, off_target
from layer_analysis.probe.languages import ENGLISH, canonical, iso639_1
from layer_analysis.probe.models import LoadedModel
from layer_analysis.probe.prompts import alpaca_prompt, translation_instruction
from layer_analysis.probe.readers import read_json

# "Answer the question with a short span from the passage.", written for this project.
XQUAD_INSTRUCTIONS = {
    "en": "Answer the question with a short span from the passage.",
    "ar": "أجب عن السؤال بعبارة قصيرة من النص.",
    "de": "Beantworte die Frage mit einer kurzen Textstelle aus dem Abschnitt.",
    "el": "Απάντησε στην ερώτηση με ένα σύντομο απόσπασμα από το κείμενο.",
    "es": "Responde a la pregunta con un fragmento breve del texto.",
    "hi": "अनुच्छेद से एक छोटे अंश के साथ प्रश्न का उत्तर दीजिए।",
    "ro": "Răspunde la întrebare cu un fragment scurt din text.",
    "ru": "Ответь на вопрос коротким фрагментом из текста.",
    "th": "ตอบคำถามด้วยข้อความสั้น ๆ จากบทความ",
    "tr": "Soruyu metinden kısa bir bölümle yanıtlayın.",
    "vi": "Trả lời câu hỏi bằng một đoạn ngắn trong văn bản.",
    "zh": "请用文章中的一小段文字回答问题。",
}


class _FirstLineDone(StoppingCriteria):
    """Per sequence: done once the continuation holds a line break after some text."""

    def __init__(self, tokenizer, start: int) -> None:
        self.tokenizer, self.start = tokenizer, start

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor(["\n" in t.lstrip() for t in texts], device=input_ids.device)


@torch.no_grad()
def generate(loaded: LoadedModel, prompts: list[str], max_new_tokens: int = 128,
             batch_size: int = 16, one_line: bool = True) -> list[str]:
    """Greedy continuations of ``prompts``, batched with left padding (longest first); with
    ``one_line`` each stops at its first line break and only that line is returned (answers and
    translations are one line; the rest would be the model starting a new prompt)."""
    check_numbers({"max_new_tokens": (max_new_tokens, COUNT), "batch size": (batch_size, COUNT)})
    tokenizer, model = loaded.tokenizer, loaded.model.eval()
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        batch = tokenizer([prompts[i] for i in chosen], return_tensors="pt", padding=True)
        batch = batch.to(loaded.device)
        start = batch["input_ids"].shape[1]
        stop = StoppingCriteriaList([_FirstLineDone(tokenizer, start)]) if one_line else None
        tokens = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                                pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id, stopping_criteria=stop)
        texts = tokenizer.batch_decode(tokens[:, start:],
                                       skip_special_tokens=True)
        for i, text in zip(chosen, texts, strict=True):
            out[i] = (text.strip().split("\n")[0] if one_line else text).strip()
    return out


# --------------------------------------------------------------------------------- scoring


def chrf_pp(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF++ (sacrebleu: character 6-grams plus word bigrams)."""
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=2).corpus_score(hypotheses, [references]).score


def spbleu(hypotheses: list[str], references: list[str]) -> float | None:
    """Corpus BLEU on sacrebleu's FLORES-200 SentencePiece tokens, or None where that model
    cannot be had (it is downloaded once into ~/.sacrebleu)."""
    from sacrebleu.metrics import BLEU

    try:
        return BLEU(tokenize="flores200").corpus_score(hypotheses, [references]).score
    except (OSError, ValueError, ImportError):
        return None


# MLQA's evaluation (Lewis et al. 2020) per answer language: articles removed, and Chinese
# split into characters ("mixed segmentation"); languages MLQA does not cover keep whitespace
# tokens and remove no articles.
MLQA_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "ar": r"\sال^|ال",
}
_HAN = re.compile(r"([\u4e00-\u9fa5])")


def _is_punctuation(ch: str, unicode: bool) -> bool:
    return ch in string.punctuation or (unicode and unicodedata.category(ch).startswith("P"))


def normalize_answer(text: str, language: str | None = None) -> str:
    """SQuAD v1.1 (``language=None``, XQuAD's official script): lower case, drop ASCII
    punctuation and English articles, squeeze whitespace. With an ISO 639-1 ``language``,
    MLQA's: every Unicode punctuation mark, that language's articles, Chinese characters as
    tokens of their own."""
    mlqa = language is not None
    text = "".join(ch for ch in text.lower() if not _is_punctuation(ch, mlqa))
    articles = MLQA_ARTICLES.get(language, "") if mlqa else MLQA_ARTICLES["en"]
    if articles:
        text = re.sub(articles, " ", text)
    if language == "zh":
        text = _HAN.sub(r" \1 ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str], language: str | None = None) -> float:
    """1 when the normalised prediction equals a normalised gold answer (see normalize_answer)."""
    return float(max(normalize_answer(prediction, language) == normalize_answer(a, language)
                     for a in answers))


def f1(prediction: str, answers: list[str], language: str | None = None) -> float:
    """Token F1 (SQuAD v1.1, or MLQA's with ``language``), best over the gold answers."""
    def one(gold: str) -> float:
        pred_tokens = normalize_answer(prediction, language).split()
        gold_tokens = normalize_answer(gold, language).split()
        common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
        same = sum(common.values())
        if same == 0:
            return 0.0
        precision, recall = same / len(pred_tokens), same / len(gold_tokens)
        return 2 * precision * recall / (precision + recall)

    return max(one(a) for a in answers)


def contains_answer(prediction: str, answers: list[str]) -> float:
    """x-LLM's rule: correct when a normalised gold answer occurs in the normalised prediction."""
    prediction = normalize_answer(prediction)
    return float(any(normalize_answer(a) and normalize_answer(a) in prediction for a in answers))


# ------------------------------------------------------------------------------------ tasks


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


def read_xquad(language: str, limit: int | None = None) -> list[dict]:
    """Questions of XQuAD (``../shared/data/xquad/xquad.<iso>.json``): context, question, answers."""
    iso = iso639_1(canonical(language, "--languages"))
    root = shared_data_root()
    path = root / "xquad" / f"xquad.{iso}.json" if root else None
    if path is None or not path.is_file():
        raise DataError(f"XQuAD for {iso} not found (expected ../shared/data/xquad/xquad.{iso}.json)")
    items = []
    for article in read_json(path)["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                items.append({"id": qa["id"], "context": paragraph["context"],
                              "question": qa["question"],
                              "answers": [a["text"] for a in qa["answers"]]})
    return items[:capped(limit, len(items), "questions", str(path))]


def xquad_language(language: str) -> str:
    """The ISO 639-1 code of an XQuAD language, or a clear error."""
    iso = iso639_1(canonical(language, "--languages"))
    if iso not in XQUAD_INSTRUCTIONS:
        raise DataError(f"XQuAD has no {iso}; languages: {', '.join(XQUAD_INSTRUCTIONS)}")
    return iso


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


def xquad_prompts(items: list[dict], language: str) -> list[str]:
    """Zero-shot prompts: the instruction in the question's language, passage, question."""
    instruction = XQUAD_INSTRUCTIONS[xquad_language(language)]
    return [alpaca_prompt(instruction, f"{q['context']}\n\n{q['question']}") for q in items]


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


def check_scores_output(path: Path) -> None:
    """Before a model loads: ``path`` may take an evaluation's scores — not a directory, not
    below a file, and not an existing file other than an earlier scores file (a list of score
    records), which is replaced; anything else (a run's manifest, training data) is never
    overwritten."""
    from layer_analysis.probe.errors import StoreError
    from layer_analysis.probe.runs import check_not_a_file

    path = Path(path)
    if path.is_dir():
        raise StoreError(f"--output {path} is a directory; name the scores file (e.g. "
                         f"{path / 'scores.json'})")
    check_not_a_file(path.parent)
    if path.exists() or path.is_symlink():
        try:
            earlier = read_json(path)
        except ProbeError:
            earlier = None
        if not (isinstance(earlier, list) and earlier
                and all(isinstance(r, dict) and "task" in r for r in earlier)):
            raise StoreError(f"--output {path} exists and is no earlier evaluation's scores "
                             "file; it is not overwritten: choose another --output")


def write_evaluation(evaluations: list[Evaluation], path: Path) -> None:
    """Scores as JSON (predictions beside it as JSONL), each written atomically."""
    from layer_analysis.probe.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps([e.scores for e in evaluations], indent=2,
                                       ensure_ascii=False))
    lines = [json.dumps({**p, **{k: v for k, v in e.scores.items() if k in ("task", "target",
                                                                             "language")}},
                        ensure_ascii=False) for e in evaluations for p in e.predictions]
    atomic_write_text(path.with_suffix(".predictions.jsonl"), "\n".join(lines) + "\n")
