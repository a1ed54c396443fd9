"""Generation and its scores, shared by ``evaluate`` (``train``) and ``intervene``: greedy
decoding in left-padded batches, one line per answer; corpus chrF++ and spBLEU (sacrebleu); exact
match and F1 as XQuAD's official SQuAD v1.1 script and as MLQA's language-aware one, plus x-LLM's
substring rule; XQuAD's questions and zero-shot prompts with the instruction in the question's
language (the prompt format: ``prompts``; the language of outputs: ``langid``)."""

from __future__ import annotations

import collections
import re
import string
import unicodedata

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .checks import COUNT, capped, check_numbers
from .data import shared_data_root
from .errors import DataError
from .languages import canonical, iso639_1
from .models import LoadedModel
from .prompts import alpaca_prompt
from .readers import read_json


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
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # restored after: it may
    try:  # be a tokenizer the caller loaded and uses elsewhere
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
    finally:
        tokenizer.padding_side = side


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


# ------------------------------------------------------------------------------------ XQuAD

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


def xquad_prompts(items: list[dict], language: str) -> list[str]:
    """Zero-shot prompts: the instruction in the question's language, passage, question."""
    instruction = XQUAD_INSTRUCTIONS[xquad_language(language)]
    return [alpaca_prompt(instruction, f"{q['context']}\n\n{q['question']}") for q in items]
