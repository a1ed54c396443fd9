"""Write the project's own small Alpaca-format instruction sets (``alpaca_<iso>.jsonl`` here) for
languages without public Alpaca data beside the project: arithmetic, lists and word tasks,
with instructions and answer sentences written for this project in each language and inputs
taken from the project's own sentences in ``data/parallel/``. Deterministic:

    python data/instruct/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARALLEL = HERE.parent / "parallel"
PER_TASK = 30

# language -> (FLORES file, task templates, answer sentence); {a} {b} are numbers.
LANGUAGES = {
    "en": ("eng_Latn", {
        "add": "What is {a} plus {b}?",
        "sub": "What is {a} minus {b}?",
        "max": "Which is the largest number in the list?",
        "sort": "Sort the numbers from smallest to largest.",
        "count": "How many words does the following sentence have?",
        "repeat": "Repeat the following sentence exactly.",
        "first": "What is the first word of the following sentence?",
        "reverse": "Write the words of the following sentence in reverse order.",
    }, "The answer is {x}."),
    "ar": ("arb_Arab", {
        "add": "ما حاصل جمع {a} و {b}؟",
        "sub": "ما حاصل طرح {b} من {a}؟",
        "max": "ما هو أكبر عدد في القائمة؟",
        "sort": "رتّب الأعداد من الأصغر إلى الأكبر.",
        "count": "كم عدد الكلمات في الجملة التالية؟",
        "repeat": "أعد كتابة الجملة التالية كما هي تماماً.",
        "first": "ما هي الكلمة الأولى في الجملة التالية؟",
        "reverse": "اكتب كلمات الجملة التالية بترتيب معكوس.",
    }, "الجواب هو {x}."),
    "el": ("ell_Grek", {
        "add": "Πόσο κάνει {a} συν {b};",
        "sub": "Πόσο κάνει {a} μείον {b};",
        "max": "Ποιος είναι ο μεγαλύτερος αριθμός στη λίστα;",
        "sort": "Ταξινόμησε τους αριθμούς από τον μικρότερο στον μεγαλύτερο.",
        "count": "Πόσες λέξεις έχει η παρακάτω πρόταση;",
        "repeat": "Επανάλαβε ακριβώς την παρακάτω πρόταση.",
        "first": "Ποια είναι η πρώτη λέξη της παρακάτω πρότασης;",
        "reverse": "Γράψε τις λέξεις της παρακάτω πρότασης με αντίστροφη σειρά.",
    }, "Η απάντηση είναι {x}."),
    "hi": ("hin_Deva", {
        "add": "{a} और {b} का योग क्या है?",
        "sub": "{a} में से {b} घटाने पर क्या बचता है?",
        "max": "सूची में सबसे बड़ी संख्या कौन सी है?",
        "sort": "संख्याओं को सबसे छोटी से सबसे बड़ी के क्रम में लगाइए।",
        "count": "निम्नलिखित वाक्य में कितने शब्द हैं?",
        "repeat": "निम्नलिखित वाक्य को ठीक वैसे ही दोहराइए।",
        "first": "निम्नलिखित वाक्य का पहला शब्द क्या है?",
        "reverse": "निम्नलिखित वाक्य के शब्दों को उल्टे क्रम में लिखिए।",
    }, "उत्तर {x} है।"),
    "tr": ("tur_Latn", {
        "add": "{a} ile {b} toplamı kaçtır?",
        "sub": "{a} eksi {b} kaçtır?",
        "max": "Listedeki en büyük sayı hangisidir?",
        "sort": "Sayıları küçükten büyüğe sıralayın.",
        "count": "Aşağıdaki cümlede kaç kelime var?",
        "repeat": "Aşağıdaki cümleyi aynen tekrarlayın.",
        "first": "Aşağıdaki cümlenin ilk kelimesi nedir?",
        "reverse": "Aşağıdaki cümlenin kelimelerini ters sırayla yazın.",
    }, "Cevap {x}."),
}


def examples(templates: dict[str, str], answer: str, sentences: list[str], rng: random.Random
             ) -> list[dict[str, str]]:
    out = []
    for _ in range(PER_TASK):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        a, b = max(a, b), min(a, b)
        numbers = rng.sample(range(1, 1000), rng.randint(3, 7))
        listed = ", ".join(map(str, numbers))
        sentence = rng.choice(sentences)
        words = sentence.rstrip(".。!?؟।;").split()
        out += [
            {"instruction": templates["add"].format(a=a, b=b), "input": "",
             "output": answer.format(x=a + b)},
            {"instruction": templates["sub"].format(a=a, b=b), "input": "",
             "output": answer.format(x=a - b)},
            {"instruction": templates["max"], "input": listed,
             "output": answer.format(x=max(numbers))},
            {"instruction": templates["sort"], "input": listed,
             "output": ", ".join(map(str, sorted(numbers)))},
            {"instruction": templates["count"], "input": sentence,
             "output": answer.format(x=len(sentence.split()))},
            {"instruction": templates["repeat"], "input": sentence, "output": sentence},
            {"instruction": templates["first"], "input": sentence, "output": words[0]},
            {"instruction": templates["reverse"], "input": sentence,
             "output": " ".join(reversed(words))},
        ]
    return out


def main() -> None:
    for iso, (code, templates, answer) in LANGUAGES.items():
        sentences = (PARALLEL / f"{code}.txt").read_text(encoding="utf-8").splitlines()
        records = examples(templates, answer, sentences, random.Random(f"instruct-{iso}"))
        path = HERE / f"alpaca_{iso}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                        encoding="utf-8")
        print(f"{path.name}: {len(records)} records")


if __name__ == "__main__":
    main()
