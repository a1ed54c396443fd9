"""Alignment through training on the packaged smollm2-135m: CoIT for Greek (English Alpaca +
3000 English -> Greek pairs), the same with the InfoNCE alignment objective at the middle layer
(weight 1, and weight 0.1), and MuIT over Greek, German and Chinese — each LoRA r = 32, 200
steps, with alignment tracked every 50 (MuIT: 100) steps on 100 FLORES dev sentences; then chrF++
and the off-target rate on 200 FLORES devtest sentences English -> Greek for the base model and
the four trained ones.

    python demos/alignment_training.py [--output runs/alignment-training]

Every stage is a ``layer-analysis`` command, printed before it runs and skipped when its output
exists; an interrupted training resumes from its last checkpoint. About 3 h on a 2-core CPU.
Needs ../shared/data (FLORES, translation pairs, Alpaca data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages import layer_analysis

COMMON = ["--lora-r", "32", "--lora-alpha", "64", "--lr", "5e-4", "--batch-size", "8",
          "--max-length", "192", "--max-steps", "200", "--save-every", "25", "--log-every", "5",
          "--device", "cpu", "--no-progress", "--track-sentences", "100"]
COIT = "alpaca_en[:400] + translation_en-el[:3000]"
MUIT = ("alpaca_en[:150] + alpaca_de[:150] + alpaca_zh[:150] + translation_en-el[:1000] + "
        "translation_en-de[:1000] + translation_en-zh[:1000]")
TRAINED = {  # name -> the arguments that differ
    "x-el": ["--mixture", COIT, "--track-every", "50"],
    "x-el-align": ["--mixture", COIT, "--align-weight", "1.0", "--track-every", "50"],
    "x-el-align-0.1": ["--mixture", COIT, "--align-weight", "0.1", "--track-every", "50"],
    "m3": ["--mixture", MUIT, "--track-every", "100"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/alignment-training"))
    out = parser.parse_args().output
    for name, extra in TRAINED.items():
        if (out / name / "training.json").exists():
            continue
        resume = ["--resume"] if any((out / name / "checkpoints").glob("step-*")) else []
        layer_analysis("train", "--output", str(out / name), *COMMON, *resume, *extra)
    models = {"base": "smollm2-135m", **{name: str(out / name) for name in TRAINED}}
    for name, model in models.items():
        scores = out / f"eval-{name}.json"
        if not scores.exists():
            layer_analysis("evaluate", "--model", model, "--languages", "el", "--limit", "200",
                           "--max-new-tokens", "100", "--device", "cpu", "--output", str(scores))
    print(f"alignment logs and figures: {out}/*/alignment_log.csv, alignment.html; "
          f"dashboard: LAYER_ANALYSIS_RUNS={out} streamlit run app (page Training)")


if __name__ == "__main__":
    main()
