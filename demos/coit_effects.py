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
import time
from pathlib import Path

import pandas as pd
import torch
from stages import run_stages

from layer_analysis.probe.metrics import bootstrap_ci
from layer_analysis.probe.transfer_run import sentence_differences

BASE = "smollm2-135m"
TRAINED = {"x-zh": {"zho_Hans"},
           "m6": {"arb_Arab", "ell_Grek", "hin_Deva", "tur_Latn", "vie_Latn", "zho_Hans"}}
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


def _ci(value: float, low: float, high: float) -> str:
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def over_layers(out: Path, name: str, variant: str) -> pd.DataFrame:
    """Per target: the adapter's minus the base's per-sentence correctness, averaged over the
    layers first, then its mean with a 95 % bootstrap CI over test sentences."""
    differences = sentence_differences(out / "transfer" / "base", out / "transfer" / name)
    differences = differences[(differences.setting == "transfer")
                              & (differences.variant == variant)]
    per_sentence = differences.groupby(["target", "row"]).difference.mean().unstack("row")
    low, high = bootstrap_ci(torch.tensor(per_sentence.to_numpy()), 1000, seed=0)
    return pd.DataFrame({"difference": per_sentence.mean(axis=1), "ci_low": low.numpy(),
                         "ci_high": high.numpy()}, index=per_sentence.index)


def summary(out: Path, patched_base: Path) -> list[str]:
    """Markdown: per adapter and target, transfer of base and adapter at the base's best layer,
    the paired difference there and over all layers; the patching switch layers per model."""
    curves = {n: pd.read_csv(out / "transfer" / n / "summary.csv") for n in ("base", *TRAINED)}
    lines = [f"# CoIT / MuIT effects on transfer and patching ({time.strftime('%Y-%m-%d')})", ""]
    for variant in ("centered", "raw"):
        base = curves["base"]
        rows = base[(base.metric == "accuracy") & (base.setting == "transfer")
                    & (base.variant == variant)]
        layer = int(rows.loc[rows["mean"].idxmax()].layer)
        lines += [f"## {variant} transfer (base's best layer: {layer})", "",
                  "| adapter | target | trained | base | adapter | paired difference at "
                  f"{layer} | over all layers | layers moved (q < 0.05) |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for name, trained in TRAINED.items():
            paired = pd.read_csv(out / f"transfer-{name}-vs-base.csv")
            paired = paired[(paired.setting == "transfer") & (paired.variant == variant)]
            overall = over_layers(out, name, variant)
            tables = {n: pd.read_csv(out / "transfer" / n / "transfer.csv") for n in ("base", name)}
            for target, part in paired.groupby("target", sort=False):
                at = part[part.layer == layer].iloc[0]
                accuracy = [t[(t.target == target) & (t.layer == layer) & (t.variant == variant)
                              & (t.setting == "transfer") & (t.metric == "accuracy")].value.iloc[0]
                            for t in tables.values()]
                moved = part[part.q_value < 0.05]
                moved = ", ".join(f"{int(r.layer)} ({r.difference:+.2f})"
                                  for r in moved.itertuples()) or "none"
                o = overall.loc[target]
                lines.append(f"| {name} | {target} | {'yes' if target in trained else 'no'} | "
                             f"{accuracy[0]:.2f} | {accuracy[1]:.2f} | "
                             f"{_ci(at.difference, at.ci_low, at.ci_high)} | "
                             f"{_ci(o.difference, o.ci_low, o.ci_high)} | {moved} |")
        lines.append("")
    switch = pd.read_csv(out / "patching-compare" / "patch_switch.csv")
    switch = switch[switch.condition == "patch"]
    lines += ["## Patching: switch layers (mean over concept pairs, 95 % CI)", "",
              "| setting | switch | " + " | ".join(dict.fromkeys(switch.model)) + " |",
              "|---|---|" + "---:|" * switch.model.nunique()]
    for (setting, kind), part in switch.groupby(["setting", "switch"], sort=False):
        cells = [f"{r.value:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}] (n={int(r.defined)})"
                 for r in part.itertuples()]
        lines.append(f"| {setting} | {kind} | " + " | ".join(cells) + " |")
    return [*lines, ""]


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
    (args.output / "summary.md").write_text("\n".join(summary(args.output, args.patched_base)))
    print(f"summary: {args.output / 'summary.md'}")


if __name__ == "__main__":
    main()
