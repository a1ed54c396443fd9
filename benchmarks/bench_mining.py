"""Bitext mining at scale in bounded memory: time and peak memory of ``probe.mining`` for N
sources × N targets, each size in a fresh process (peak RSS is per process).

    python benchmarks/bench_mining.py [--sizes 20000,50000] [--dim 576] [--device cpu]

Vectors are synthetic with planted translations (half of the targets translate a source, the
rest are unrelated; noise makes the task non-trivial), d = 576 = smollm2-135m's width; the
dense N × N score matrix alone would take 4·N² bytes (10 GB at N = 50,000). Prints one line per
size: seconds for the two passes, peak RSS, the vectors' own size, xSIM on the gold half and
mining F1.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def one(n: int, dim: int, device: str, noise: float) -> dict:
    from layer_analysis.probe.mining import mine, mining_f1, xsim_error

    g = torch.Generator().manual_seed(0)
    gold = n // 2
    x = torch.randn(n, dim, generator=g)
    y = torch.randn(n, dim, generator=g)
    y[:gold] = x[:gold] + noise * torch.randn(gold, dim, generator=g)
    x, y = x.to(device), y.to(device)
    start = time.perf_counter()
    mined = mine(x, y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    score = mining_f1(mined, {(i, i) for i in range(gold)})
    xsim = xsim_error(x[:gold], y[:gold])
    return {"n": n, "dim": dim, "device": device, "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "vectors_mb": round(2 * n * dim * 4 / 2**20), "dense_matrix_mb": round(4 * n * n / 2**20),
            "xsim_error": round(xsim, 4), "mining_f1": round(score.f1, 4),
            "noise": noise, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,50000")
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--noise", type=float, default=4.5,
                        help="translation = source + noise x N(0, I): cos ~ 1/sqrt(1 + noise^2)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.dim, args.device, args.noise)))
        return
    for n in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--dim", str(args.dim),
                               "--device", args.device, "--noise", str(args.noise)],
                              capture_output=True, text=True,
                              check=True)
        print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
