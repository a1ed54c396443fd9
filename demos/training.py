"""The CPU-sized CoIT / MuIT demonstration: from the packaged LLaMA-architecture model
(smollm2-135m), train an x-model for Chinese and an m-model for the paper's six languages on
small slices of ../shared/data, score translation (chrF++, FLORES devtest) before and after, and
run the layer analysis on base vs x vs m.

    python demos/training.py [--output runs/demo] [--eval-sentences 40]

Every stage is a ``layer-analysis`` command, printed before it runs and skipped when its output
exists, so an interrupted demonstration resumes; the summary (``OUTPUT/summary.md``) quotes the
measured figures. Needs ../shared/data (FLORES, translation pairs, Alpaca data).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from stages import run_stages

LANGUAGES = ["ar", "el", "hi", "tr", "vi", "zh"]  # the paper's MuIT languages
X_LANGUAGE = "zh"


def stages(out: Path, sentences: int, steps_lr: str) -> list[tuple[Path, list[str]]]:
    """(output that marks the stage done, the command's arguments), in order."""
    common = ["--lr", steps_lr, "--batch-size", "8", "--max-length", "256", "--save-every", "50",
              "--log-every", "5", "--device", "cpu"]
    all_languages = ",".join(LANGUAGES)
    models = {"base": "smollm2-135m", f"x-{X_LANGUAGE}": str(out / f"x-{X_LANGUAGE}"),
              "m6": str(out / "m6")}
    evaluated = {"base": all_languages, f"x-{X_LANGUAGE}": X_LANGUAGE, "m6": all_languages}
    plan = [
        (out / f"x-{X_LANGUAGE}" / "training.json",
         ["train", "--recipe", "coit", "--languages", X_LANGUAGE, "--instructions", "160",
          "--translations", "640", "--output", str(out / f"x-{X_LANGUAGE}"), *common]),
        (out / "m6" / "training.json",
         ["train", "--recipe", "muit", "--languages", all_languages, "--instructions", "40",
          "--translations", "120", "--output", str(out / "m6"), *common]),
    ]
    for name, model in models.items():
        plan.append((out / "eval" / f"{name}.json",
                     ["evaluate", "--model", model, "--languages", evaluated[name], "--limit",
                      str(sentences), "--max-new-tokens", "100", "--device", "cpu",
                      "--output", str(out / "eval" / f"{name}.json")]))
    for name, model in models.items():
        plan.append((out / "runs" / name / "manifest.json",
                     ["run", "--model", model, "--data", "flores-devtest", "--languages",
                      "en," + all_languages, "--limit", "200", "--device", "cpu",
                      "--output", str(out / "runs"), "--name", name, "--no-progress"]))
    plan.append((out / "compare" / "manifest.json",
                 ["compare", *(str(out / "runs" / n) for n in models), "--output",
                  str(out / "compare")]))
    return plan


def summary(out: Path) -> str:
    """Markdown tables of the measured figures."""
    lines = ["| model | steps | examples | s/step | peak RSS GB | final loss |",
             "|---|---|---|---|---|---|"]
    for name in (f"x-{X_LANGUAGE}", "m6"):
        t = json.loads((out / name / "training.json").read_text())
        lines.append(f"| {name} | {t['steps']} | {t['examples']} | "
                     f"{t['seconds'] / t['steps']:.2f} | {t['peak_memory_gb']:.1f} | "
                     f"{t['final_loss']:.3f} |")
    scores = {name: {s["target"]: s["chrf++"] for s in json.loads(
        (out / "eval" / f"{name}.json").read_text())} for name in ("base", f"x-{X_LANGUAGE}", "m6")}
    table = pd.DataFrame(scores).reindex([c for c in scores["base"]])
    lines += ["", "chrF++ (en -> X, FLORES devtest):", "", table.to_markdown(floatfmt=".1f")]
    curves = []
    for name in scores:
        t = pd.read_parquet(out / "runs" / name / "results.parquet")
        t = t[(t.metric == "p@1") & (t.normalisation == "centered") & (t.source == "eng_Latn")]
        curves.append(t.groupby("layer").value.mean().rename(name))
    curves = pd.concat(curves, axis=1)
    lines += ["", "centered P@1 en -> X, mean over the six languages, per layer:", "",
              curves.to_markdown(floatfmt=".3f")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/demo"))
    parser.add_argument("--eval-sentences", type=int, default=40)
    parser.add_argument("--lr", default="5e-4", help="LoRA learning rate")
    args = parser.parse_args()
    run_stages(stages(args.output, args.eval_sentences, args.lr))
    text = summary(args.output)
    (args.output / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
