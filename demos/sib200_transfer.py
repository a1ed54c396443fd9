"""Does alignment buy transfer? The measurement of docs/results/transfer.md: on SIB-200, for
Gemma 3 270M and SmolLM2-135M over 45 languages of 24 scripts and every resource level,
per-layer zero-shot transfer from English (with the in-language ceiling), the alignment of the
very test sentences the probe is tested on (the transfer run's ``alignment.csv``), and their
correlation across languages with and without tokenization controls.

    python demos/sib200_transfer.py [--output runs/sib200] [--limit 100] [--models ...]

Every stage is a ``layer-analysis`` command, printed before it runs and skipped when its output
exists, so an interrupted demonstration resumes. Needs ../shared/data/sib200.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr
from stages import run_stages

LANGUAGES = (  # 45 languages, 24 scripts: high-resource to very low-resource
    "eng_Latn,deu_Latn,fra_Latn,spa_Latn,rus_Cyrl,ukr_Cyrl,bul_Cyrl,zho_Hans,zho_Hant,jpn_Jpan,"
    "kor_Hang,arb_Arab,pes_Arab,urd_Arab,heb_Hebr,ell_Grek,hin_Deva,mar_Deva,ben_Beng,tam_Taml,"
    "tel_Telu,kan_Knda,mal_Mlym,guj_Gujr,pan_Guru,tha_Thai,lao_Laoo,khm_Khmr,mya_Mymr,kat_Geor,"
    "hye_Armn,amh_Ethi,tir_Ethi,swh_Latn,yor_Latn,hau_Latn,zul_Latn,vie_Latn,ind_Latn,tur_Latn,"
    "fin_Latn,quy_Latn,bod_Tibt,sin_Sinh,ory_Orya")
MODELS = ("smollm2-135m", "gemma3-270m")


def stages(out: Path, models: list[str], limit: str) -> list[tuple[Path, list[str]]]:
    """(output that marks the stage done, the command's arguments), in order."""
    plan: list[tuple[Path, list[str]]] = []
    common = ["--data", "sib200", "--languages", LANGUAGES, "--limit", limit, "--device", "cpu",
              "--no-progress"]
    for model in models:
        run = out / "transfer" / model
        again = ["--overwrite"] if (run / "manifest.json").exists() else []  # an older run
        plan.append((run / "alignment.csv",
                     ["transfer", "--model", model, *common, "--group-size", "45",
                      "--output", str(out / "transfer"), "--name", model, *again]))
        for variant in ("centered", "raw"):
            name = f"{model}-{variant}"
            plan.append((out / "correlate" / name / "manifest.json",
                         ["correlate", str(run), "--scores", str(run), "--transfer-variant",
                          variant, "--output", str(out / "correlate" / name)]))
    return plan


def _ci(row: pd.Series, value: str = "r") -> str:
    return f"{row[value]:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}]"


def model_summary(out: Path, model: str) -> list[str]:
    """Markdown of one model's transfer, alignment and their correlation."""
    run = out / "transfer" / model
    summary = pd.read_csv(run / "summary.csv")
    table = pd.read_csv(run / "transfer.csv")
    aligned = pd.read_csv(run / "alignment.csv")
    tokens = pd.read_csv(run / "tokenization.csv").set_index("language")
    manifest = json.loads((run / "manifest.json").read_text())
    acc = summary[summary.metric == "accuracy"].pivot_table(
        index="layer", columns=["setting", "variant"], values="mean")
    chance = float(summary[summary.metric == "accuracy"].chance.mean())
    p1 = aligned[(aligned.metric == "p@1") & (aligned.normalisation == "centered")]
    p1 = p1.assign(language=[t if s == "eng_Latn" else s for s, t in zip(p1.source, p1.target,
                                                                         strict=True)])
    per_language = p1.groupby(["language", "layer"]).value.mean()
    curve = per_language.groupby("layer").mean()
    best = {v: int(acc[("transfer", v)].idxmax()) for v in ("raw", "centered")}
    lines = [f"### {model}", "",
             f"{len(manifest['data']['languages'])} languages, {manifest['data']['splits']} "
             f"sentences per split (`--limit {manifest['data']['limit']}`); chance (majority "
             f"share of the test sample) {chance:.3f}. Timings (s): "
             + ", ".join(f"{k} {v:.0f}" for k, v in manifest["timings_s"].items()), "",
             "| layer | transfer raw | transfer centered | ceiling raw | ceiling centered | "
             "ratio centered | alignment (centered P@1) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for layer in acc.index:
        mark = "**" if layer in best.values() or layer == int(curve.idxmax()) else ""
        cells = [acc.loc[layer, ("transfer", "raw")], acc.loc[layer, ("transfer", "centered")]]
        cells += [acc.loc[layer].get(("ceiling", v), float("nan")) for v in ("raw", "centered")]
        ratio = summary[(summary.metric == "accuracy") & (summary.setting == "ratio")
                        & (summary.variant == "centered") & (summary.layer == layer)]["mean"]
        cells += [float(ratio.iloc[0]) if len(ratio) else float("nan"), curve.get(layer)]
        lines.append(f"| {mark}{layer}{mark} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += ["", f"Best transfer layer: raw {best['raw']}, centered {best['centered']}; "
              f"alignment peak (mean over targets) {int(curve.idxmax())} "
              f"({curve.max():.3f})."]
    layer = best["centered"]
    at = table[(table.layer == layer) & (table.setting == "transfer") & (table.metric == "accuracy")
               & (table.target != table.source)].pivot_table(index="target", columns="variant",
                                                             values="value")
    gap = (at.centered - at.raw).sort_values()
    lines += [f"At layer {layer}, centered − raw transfer accuracy over targets: mean "
              f"{gap.mean():+.3f}, from {gap.iloc[0]:+.3f} ({gap.index[0]}) to "
              f"{gap.iloc[-1]:+.3f} ({gap.index[-1]}); centered better for {(gap > 0).sum()} "
              f"of {len(gap)} targets."]
    fertility = tokens.fertility.reindex(at.index)
    peak = per_language.unstack().max(axis=1).reindex(at.index)
    lines += [f"Tokenization: Spearman(fertility, centered transfer at {layer}) "
              f"{spearmanr(fertility, at.centered).statistic:+.2f}; Spearman(fertility, peak "
              f"alignment) {spearmanr(fertility, peak).statistic:+.2f}.", ""]
    for variant in ("centered", "raw"):
        corr = pd.read_csv(out / "correlate" / f"{model}-{variant}" / "correlation.csv")
        lines += [f"Alignment (centered P@1 per layer) vs {variant} transfer accuracy at its best "
                  f"layer, across {int(corr.n.max())} languages (95 % bootstrap CIs over "
                  "languages, permutation p):", "",
                  "| layer | Pearson | Spearman | partial Pearson | partial Spearman | p (Pearson) "
                  "| p (partial Pearson) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for key, rows in corr.groupby(["aggregation", "layer"], sort=False, dropna=False):
            by = rows.set_index("method")
            name = key[0] if key[0] != "layer" else str(int(key[1]))
            lines.append(f"| {name} | " + " | ".join(_ci(by.loc[m]) for m in (
                "pearson", "spearman", "partial_pearson", "partial_spearman"))
                + f" | {by.loc['pearson'].p:.3g} | {by.loc['partial_pearson'].p:.3g} |")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/sib200"))
    parser.add_argument("--limit", default="100")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    run_stages(stages(args.output, args.models, args.limit))
    lines = [f"# SIB-200 transfer ({time.strftime('%Y-%m-%d')})", ""]
    for model in args.models:
        if (args.output / "correlate" / f"{model}-raw" / "manifest.json").exists():
            lines += model_summary(args.output, model)
    (args.output / "summary.md").write_text("\n".join(lines))
    print(f"summary: {args.output / 'summary.md'}")


if __name__ == "__main__":
    main()
