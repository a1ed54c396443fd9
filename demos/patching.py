"""Causal evidence for language-agnostic middle layers: cross-lingual activation patching
(Dumas et al. 2025) on Gemma 3 270M and SmolLM2-135M, the measurement of
docs/results/patching.md.

    python demos/patching.py [--output runs/patching] [--concepts all]

The command's defaults: the four settings (de→fr into es→ru, fr→zh into de→es, ru→de into
zh→fr, es→ru into fr→zh), every concept of the word list as a target (pairs whose first-token
sets collide are left out and listed), mean-latent patching and the three controls, at every
layer. Every stage is a ``layer-analysis`` command, printed before it runs and skipped when its
output exists, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages import run_stages

MODELS = ("gemma3-270m", "smollm2-135m")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/patching"))
    parser.add_argument("--concepts", default="all")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    run_stages((args.output / model / "manifest.json",
                ["patch", "--model", model, "--concepts", args.concepts, "--device", "cpu",
                 "--no-progress", "--output", str(args.output), "--name", model])
               for model in args.models)


if __name__ == "__main__":
    main()
