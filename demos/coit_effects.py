"""Does CoIT change transfer and patching? The x-zh model of the training demonstration
(smollm2-135m + LoRA, CoIT for Chinese: docs/results/training-demo.md) against its base on
SIB-200 transfer (paired per test sentence) and on cross-lingual activation patching.

    python demos/coit_effects.py [--output runs/coit] [--trained runs/demo] [--limit 100]

Trains x-zh with the training demonstration's exact command when ``TRAINED/x-zh`` is missing
(about 10 minutes on a 2-core CPU). Every stage is a ``layer-analysis`` command, printed before
it runs and skipped when its output exists, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages import run_stages

BASE = "smollm2-135m"
LANGUAGES = "en,zh,de,ar,hi"  # the trained language and four it was not trained on


def stages(out: Path, trained: Path, limit: str, patched_base: Path
           ) -> list[tuple[Path, list[str]]]:
    x_zh = trained / "x-zh"
    models = {"base": BASE, "x-zh": str(x_zh)}
    plan: list[tuple[Path, list[str]]] = [
        (x_zh / "training.json",  # demos/training.py's first stage, verbatim
         ["train", "--recipe", "coit", "--languages", "zh", "--instructions", "160",
          "--translations", "640", "--output", str(x_zh), "--lr", "5e-4", "--batch-size", "8",
          "--max-length", "256", "--save-every", "50", "--log-every", "5", "--device", "cpu"])]
    for name, model in models.items():
        plan.append((out / "transfer" / name / "manifest.json",
                     ["transfer", "--model", model, "--languages", LANGUAGES, "--limit", limit,
                      "--device", "cpu", "--no-progress", "--output", str(out / "transfer"),
                      "--name", name]))
    plan.append((out / "transfer-x-zh-vs-base.csv",
                 ["transfer-compare", str(out / "transfer" / "base"),
                  str(out / "transfer" / "x-zh"), "--output",
                  str(out / "transfer-x-zh-vs-base.csv")]))
    plan.append((out / "patching" / "x-zh" / "manifest.json",
                 ["patch", "--model", str(x_zh), "--concepts", "30", "--device", "cpu",
                  "--no-progress", "--output", str(out / "patching"), "--name", "x-zh"]))
    plan.append((out / "patching-compare" / "manifest.json",
                 ["compare", str(patched_base), str(out / "patching" / "x-zh"), "--output",
                  str(out / "patching-compare"), "--no-static"]))
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/coit"))
    parser.add_argument("--trained", type=Path, default=Path("runs/demo"))
    parser.add_argument("--limit", default="100")
    parser.add_argument("--patched-base", type=Path, default=Path("runs/patching") / BASE,
                        help="the base model's patch run (docs/results/patching.md: "
                             "--concepts 30, as here; compare needs the same settings)")
    args = parser.parse_args()
    run_stages(stages(args.output, args.trained, args.limit, args.patched_base))


if __name__ == "__main__":
    main()
