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
import shlex
import subprocess
import sys
import time
from pathlib import Path

LANGUAGES = (  # 45 languages, 24 scripts: high-resource to very low-resource
    "eng_Latn,deu_Latn,fra_Latn,spa_Latn,rus_Cyrl,ukr_Cyrl,bul_Cyrl,zho_Hans,zho_Hant,jpn_Jpan,"
    "kor_Hang,arb_Arab,pes_Arab,urd_Arab,heb_Hebr,ell_Grek,hin_Deva,mar_Deva,ben_Beng,tam_Taml,"
    "tel_Telu,kan_Knda,mal_Mlym,guj_Gujr,pan_Guru,tha_Thai,lao_Laoo,khm_Khmr,mya_Mymr,kat_Geor,"
    "hye_Armn,amh_Ethi,tir_Ethi,swh_Latn,yor_Latn,hau_Latn,zul_Latn,vie_Latn,ind_Latn,tur_Latn,"
    "fin_Latn,quy_Latn,bod_Tibt,sin_Sinh,ory_Orya")
MODELS = ("smollm2-135m", "gemma3-270m")


def layer_analysis(*args: str) -> None:
    command = [sys.executable, "-m", "layer_analysis", *args]
    print(f"[{time.strftime('%H:%M:%S')}] $ layer-analysis " + shlex.join(args), flush=True)
    clock = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"[{time.strftime('%H:%M:%S')}] done in {time.perf_counter() - clock:.0f} s", flush=True)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/sib200"))
    parser.add_argument("--limit", default="100")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    for done, command in stages(args.output, args.models, args.limit):
        if done.exists():
            print(f"skip (done): layer-analysis {shlex.join(command)}", flush=True)
            continue
        layer_analysis(*command)


if __name__ == "__main__":
    main()
