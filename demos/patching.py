"""Causal evidence for language-agnostic middle layers: cross-lingual activation patching
(Dumas et al. 2025) on Gemma 3 270M and SmolLM2-135M, the measurement of
docs/results/patching.md.

    python demos/patching.py [--output runs/patching] [--concepts 28]

The four default settings (de→fr into es→ru, fr→zh into de→es, ru→de into zh→fr, es→ru into
fr→zh), ``--concepts`` target concepts each (pairs whose first-token sets collide are left out
and listed), mean-latent patching and the three controls, at every layer of Gemma (18) and every
third layer of SmolLM2 (10 of 30, to fit this 2-core CPU). Every stage is a ``layer-analysis``
command, printed before it runs and skipped when its output exists, so an interrupted run
resumes.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

LAYERS = {"gemma3-270m": "1-18", "smollm2-135m": ",".join(str(x) for x in range(3, 31, 3))}


def layer_analysis(*args: str) -> None:
    command = [sys.executable, "-m", "layer_analysis", *args]
    print(f"[{time.strftime('%H:%M:%S')}] $ layer-analysis " + shlex.join(args), flush=True)
    clock = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"[{time.strftime('%H:%M:%S')}] done in {time.perf_counter() - clock:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/patching"))
    parser.add_argument("--concepts", default="28")
    parser.add_argument("--models", nargs="+", default=list(LAYERS))
    args = parser.parse_args()
    for model in args.models:
        done = args.output / model / "manifest.json"
        command = ["patch", "--model", model, "--concepts", args.concepts, "--layers",
                   LAYERS[model], "--device", "cpu", "--no-progress", "--output",
                   str(args.output), "--name", model]
        if done.exists():
            print(f"skip (done): layer-analysis {shlex.join(command)}", flush=True)
            continue
        layer_analysis(*command)


if __name__ == "__main__":
    main()
