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
import shlex
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("gemma3-270m", "smollm2-135m")


def layer_analysis(*args: str) -> None:
    command = [sys.executable, "-m", "layer_analysis", *args]
    print(f"[{time.strftime('%H:%M:%S')}] $ layer-analysis " + shlex.join(args), flush=True)
    clock = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"[{time.strftime('%H:%M:%S')}] done in {time.perf_counter() - clock:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/patching"))
    parser.add_argument("--concepts", default="all")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    for model in args.models:
        done = args.output / model / "manifest.json"
        command = ["patch", "--model", model, "--concepts", args.concepts, "--device", "cpu",
                   "--no-progress", "--output", str(args.output), "--name", model]
        if done.exists():
            print(f"skip (done): layer-analysis {shlex.join(command)}", flush=True)
            continue
        layer_analysis(*command)


if __name__ == "__main__":
    main()
