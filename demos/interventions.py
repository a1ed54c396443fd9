"""Language neurons and interventions on the packaged models: LAPE neurons of English, German,
Chinese, Greek and Arabic in smollm2-135m with the deactivation check (each language's neurons
vs as many random ones), the same LAPE on the x-/m-models of the alignment-training
demonstration (which neurons appear or vanish); on gemma3-270m (multilingual, Greek well
aligned), Greek steering (a language vector vs a random direction) and an INCLINE-style
Greek → English map (vs a map fitted on shuffled pairs).

    python demos/interventions.py [--output runs/interventions]
        [--trained runs/alignment-training]   # where alignment_training.py wrote x-el, m3

Every stage is a ``layer-analysis`` command, printed before it runs and skipped when its run
exists. About an hour on a 2-core CPU. Needs ../shared/data (FLORES, XQuAD).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages import layer_analysis

DEVICE = ["--device", "cpu", "--no-static"]
LANGUAGES = "en,de,zh,el,ar"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/interventions"))
    parser.add_argument("--trained", type=Path, default=Path("runs/alignment-training"))
    args = parser.parse_args()
    out = args.output

    def run(name: str, *command: str) -> None:
        if not (out / name / "manifest.json").exists():
            layer_analysis(*command, "--output", str(out), "--name", name, "--overwrite", *DEVICE)

    run("neurons-base", "neurons", "--model", "smollm2-135m", "--languages", LANGUAGES)
    run("steer-el", "intervene", "steer", "--model", "gemma3-270m", "--language", "el",
        "--strengths", "1,2,4")
    run("map-el", "intervene", "map", "--model", "gemma3-270m", "--language", "el",
        "--strengths", "0.5,1")
    trained = [name for name in ("x-el", "m3") if (args.trained / name / "training.json").exists()]
    for name in trained:  # LAPE only: which neurons CoIT / MuIT add or remove
        run(f"neurons-{name}", "neurons", "--model", str(args.trained / name), "--languages",
            LANGUAGES, "--eval-sentences", "0")
    if trained:
        layer_analysis("compare", str(out / "neurons-base"),
                       *(str(out / f"neurons-{name}") for name in trained),
                       "--output", str(out / "neurons-compare"), "--no-static")


if __name__ == "__main__":
    main()
