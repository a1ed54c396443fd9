"""Time of the transfer probe and of the correlation analysis once states are cached, at SIB-200's
shapes: 701 train / 99 dev / 204 test sentences per language, 7 topics.

    python benchmarks/bench_transfer.py [--languages 205] [--layers 19] [--hidden 640]
                                        [--no-ceiling]

States are random with a topic component and a per-language offset (so the probe learns, and
the raw variant pays for the offset); the cost depends only on the shapes and the solver's
iterations. Prints the source fits per layer, the scoring per target (its in-language ceiling
fits dominate: one per target, layer and variant), the alignment of the test sentences (``run``'s
English-pivot analysis, every metric and normalisation, as ``transfer`` writes it) over all the
languages, and the correlation of 205 languages × the layers with four covariates (bootstrap
1000, permutations 2000).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from layer_analysis.probe.correlate import Alignment, CorrelationConfig, Scores, correlate
from layer_analysis.probe.transfer import ProbeConfig, SourceProbes
from layer_analysis.probe.transfer_run import alignment_of_test

SPLITS = (701, 99, 204)
TOPICS = 7


def states(rng: np.random.Generator, topics: np.ndarray, layers: int, hidden: int
           ) -> np.ndarray:
    means = rng.normal(size=(TOPICS, hidden)) * 0.3
    offset = rng.normal(size=hidden) * 2.0
    noise = rng.normal(size=(layers, len(topics), hidden))
    return (noise + means[topics][None] + offset).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--languages", type=int, default=205)
    parser.add_argument("--layers", type=int, default=19)
    parser.add_argument("--hidden", type=int, default=640)
    parser.add_argument("--no-ceiling", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    topics = rng.integers(0, TOPICS, sum(SPLITS))
    labels = np.array([f"t{i}" for i in topics])
    train, test = slice(0, SPLITS[0]), slice(SPLITS[0] + SPLITS[1], sum(SPLITS))
    config = ProbeConfig(ceiling=not args.no_ceiling)
    clock = time.perf_counter()
    probes = SourceProbes("eng_Latn", states(rng, topics, args.layers, args.hidden),
                          list(range(args.layers)), train, labels[train], config, "bench")
    fit = time.perf_counter() - clock
    print(f"source probes: {fit:.1f} s for {args.layers} layers x 2 variants "
          f"({fit / (2 * args.layers):.2f} s per fit; {len(probes.nonconverged)} not converged)")
    clock = time.perf_counter()
    scored = [probes.score(f"l{i:03d}_Latn", states(rng, topics, args.layers, args.hidden),
                           test, labels[test]) for i in range(min(args.languages, 3))]
    per_target = (time.perf_counter() - clock) / len(scored)
    print(f"scoring: {per_target:.1f} s per target "
          f"({'with' if config.ceiling else 'without'} ceiling) -> about "
          f"{per_target * args.languages / 60:.0f} min for {args.languages} targets")
    langs = [f"{chr(97 + i // 26)}{chr(97 + i % 26)}x_Latn" for i in range(args.languages)]
    test_states = {code: torch.from_numpy(states(rng, topics[test], args.layers, args.hidden))
                   for code in ["eng_Latn", *langs]}
    clock = time.perf_counter()
    alignment_of_test(test_states, {}, list(range(args.layers)), "mean", "eng_Latn", "bench",
                      1000, 0)
    print(f"alignment of the test sentences: {time.perf_counter() - clock:.1f} s for "
          f"{args.languages} languages x {SPLITS[2]} sentences x {args.layers} layers (English "
          "pivot, every metric and normalisation)")
    del test_states
    tokenization = pd.DataFrame({"language": langs, **{name: rng.random(args.languages) for name in
                                 ("fertility", "chars_per_token", "byte_fallback_share",
                                  "type_overlap_english")}})
    alignment = Alignment("bench", {x: dict(enumerate(rng.random(args.layers))) for x in langs},
                          tokenization)
    clock = time.perf_counter()
    correlate(alignment, Scores("bench", {x: float(rng.random()) for x in langs}),
              CorrelationConfig())
    print(f"correlation: {time.perf_counter() - clock:.1f} s for {args.languages} languages x "
          f"{args.layers} layers (+ mean, max), partial on 4 covariates")


if __name__ == "__main__":
    main()
