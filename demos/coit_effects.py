"""Do CoIT and MuIT change transfer and patching? The x-zh and m6 models of the training
demonstration (smollm2-135m + LoRA; CoIT for Chinese, MuIT for the paper's six languages:
docs/results/training-demo.md) against their base on SIB-200 transfer (paired per test sentence)
and on cross-lingual activation patching.

    python demos/coit_effects.py [--output runs/coit] [--trained runs/demo] [--limit 100]

Trains x-zh and m6 with the training demonstration's exact commands when they are missing from
``TRAINED`` (about 10 minutes each on a 2-core CPU). Every stage is a ``layer-analysis``
command, printed before it runs and skipped when its output exists, so an interrupted run
resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages import run_stages

BASE = "smollm2-135m"
# English (the probe's source), the six MuIT languages (zh: both adapters; ar, el, hi, tr, vi:
# m6 only) and two languages neither adapter was trained on
LANGUAGES = "en,zh,ar,el,hi,tr,vi,de,fr"


def stages(out: Path, trained: Path, limit: str, patched_base: Path
           ) -> list[tuple[Path, list[str]]]:
    x_zh, m6 = trained / "x-zh", trained / "m6"
    models = {"base": BASE, "x-zh": str(x_zh), "m6": str(m6)}
    common = ["--lr", "5e-4", "--batch-size", "8", "--max-length", "256", "--save-every", "50",
              "--log-every", "5", "--device", "cpu"]
    plan: list[tuple[Path, list[str]]] = [  # demos/training.py's two training stages, verbatim
        (x_zh / "training.json",
         ["train", "--recipe", "coit", "--languages", "zh", "--instructions", "160",
          "--translations", "640", "--output", str(x_zh), *common]),
        (m6 / "training.json",
         ["train", "--recipe", "muit", "--languages", "ar,el,hi,tr,vi,zh", "--instructions", "40",
          "--translations", "120", "--output", str(m6), *common])]
    for name, model in models.items():
        plan.append((out / "transfer" / name / "manifest.json",
                     ["transfer", "--model", model, "--languages", LANGUAGES, "--limit", limit,
                      "--device", "cpu", "--no-progress", "--output", str(out / "transfer"),
                      "--name", name]))
    for name in ("x-zh", "m6"):
        plan.append((out / f"transfer-{name}-vs-base.csv",
                     ["transfer-compare", str(out / "transfer" / "base"),
                      str(out / "transfer" / name), "--output",
                      str(out / f"transfer-{name}-vs-base.csv")]))
    for name in ("x-zh", "m6"):
        plan.append((out / "patching" / name / "manifest.json",
                     ["patch", "--model", models[name], "--concepts", "30", "--device", "cpu",
                      "--no-progress", "--output", str(out / "patching"), "--name", name]))
    plan.append((out / "patching-compare" / "manifest.json",
                 ["compare", str(patched_base), str(out / "patching" / "x-zh"),
                  str(out / "patching" / "m6"), "--output", str(out / "patching-compare"),
                  "--no-static"]))
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
