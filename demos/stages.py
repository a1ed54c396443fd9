"""What the demonstrations share: a ``layer-analysis`` command run and timed, and a plan of
stages run in order, each skipped when the output that marks it done exists (so an
interrupted demonstration resumes)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path


def layer_analysis(*args: str) -> None:
    """Run one ``layer-analysis`` command (this interpreter), printed before and timed after."""
    print(f"[{time.strftime('%H:%M:%S')}] $ layer-analysis " + shlex.join(args), flush=True)
    clock = time.perf_counter()
    subprocess.run([sys.executable, "-m", "layer_analysis", *args], check=True)
    print(f"[{time.strftime('%H:%M:%S')}] done in {time.perf_counter() - clock:.0f} s", flush=True)


def run_stages(plan: Iterable[tuple[Path, list[str]]]) -> None:
    """Each (output that marks the stage done, the command's arguments) in order."""
    for done, command in plan:
        if done.exists():
            print(f"skip (done): layer-analysis {shlex.join(command)}", flush=True)
            continue
        layer_analysis(*command)
