"""The CPU-sized scaling-law demonstration: a translation-data sweep for two languages on the
packaged LLaMA-architecture model, the fitted laws, a budgeted allocation, and a real MuIT run
of the law's allocation and of the uniform one, each scored against the law's prediction; the
law fitted to each x-model's alignment too (OUTPUT/law-alignment/).

    python demos/scaling.py [--output runs/scaling] [--languages el,zh]

Every stage is a ``layer-analysis`` command, printed before it runs and skipped when its output
exists (the sweep resumes by itself). Writes OUTPUT/summary.md and OUTPUT/comparison/.
Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from stages import layer_analysis

from layer_analysis.probe import report
from layer_analysis.probe.languages import canonical, display_name
from layer_analysis.train.law import load_fit
from layer_analysis.train.law_report import predicted_vs_measured

TRAINING = ["--lr", "5e-4", "--batch-size", "8", "--max-length", "256", "--save-every", "50",
            "--log-every", "5", "--device", "cpu", "--no-progress"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/scaling"))
    parser.add_argument("--languages", default="el,zh")
    parser.add_argument("--sizes", default="0,100,250,600")
    parser.add_argument("--instructions", default="60")
    parser.add_argument("--budget", default="500")
    parser.add_argument("--eval-sentences", default="40")
    args = parser.parse_args()
    out = args.output
    layer_analysis("sweep", "--languages", args.languages, "--sizes", args.sizes,
                   "--instructions", args.instructions, "--eval-sentences", args.eval_sentences,
                   "--output", str(out), *TRAINING)
    layer_analysis("fit-law", str(out))
    layer_analysis("fit-law", str(out), "--metric", "alignment", "--output",
                   str(out / "law-alignment"))  # does size predict alignment better than chrF++?
    law = out / "law" / "law.json"
    layer_analysis("allocate", str(law), "--budget", args.budget, "--instructions",
                   args.instructions)
    allocation = json.loads((law.parent / "allocation" / "allocation.json").read_text())
    rows = []
    for name in ("allocated", "uniform"):
        model = out / f"muit-{name}"
        if not (model / "training.json").exists():
            layer_analysis("train", "--mixture", allocation["specs"][name], "--output", str(model),
                           *TRAINING)
        scores = model / "evaluation.json"
        if not scores.exists():
            layer_analysis("evaluate", "--model", str(model), "--languages", args.languages,
                           "--limit", args.eval_sentences, "--max-new-tokens", "100",
                           "--device", "cpu", "--output", str(scores))
        measured = {s["target"]: s["chrf++"] for s in json.loads(scores.read_text())}
        for row in allocation[name]:
            rows.append({"model": f"MuIT, {name} split", "language": row["language"],
                         "pairs": row["pairs"], "predicted": row["predicted"],
                         "measured": measured[canonical(row["language"])]})
    table = pd.DataFrame(rows)
    fit = load_fit(law)
    sweep = pd.read_csv(out / "sweep.csv")
    sweep = sweep.assign(model="x-models (sweep)", measured=sweep["chrf++"],
                         predicted=[float(fit.predict(x, n)) for x, n in
                                    zip(sweep.language, sweep.pairs, strict=True)])
    figures = {"predicted_vs_measured": predicted_vs_measured(
        pd.concat([sweep[table.columns], table], ignore_index=True))}
    report.write_html(figures, out / "comparison" / "report.html",
                      "Scaling law: predicted vs measured chrF++")
    report.write_static(figures, out / "comparison")
    totals = table.groupby("model")[["predicted", "measured"]].sum()
    text = "\n".join([
        "Sweep (x-models, chrF++ on FLORES devtest):", "",
        sweep[["language", "requested", "pairs", "similarity", "chrf++", "steps", "seconds"]].to_markdown(
            index=False, floatfmt=".3g"), "",
        f"Best law: {fit.family}; A = {fit.params['A']:.2f} ± {fit.errors['A']:.2f}, "
        f"β = {fit.params['beta']:.3f} ± {fit.errors['beta']:.3f}, γ = {fit.params['gamma']:.2f}"
        f" ± {fit.errors['gamma']:.2f}; RMSE {fit.rmse:.2f}, leave-one-out RMSE "
        f"{fit.loo_rmse:.2f}", "",
        f"MuIT with a budget of {args.budget} pairs:", "",
        table.assign(language=table.language.map(display_name)).to_markdown(
            index=False, floatfmt=".2f"), "",
        "Sum over languages:", "", totals.to_markdown(floatfmt=".2f")])
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
