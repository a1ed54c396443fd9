"""Analytics time once states are cached: 15 languages x 1000 sentences x 19 layers x d=640
(the default model's shape), all pairs, all four normalisations, 1000 bootstrap resamples.

    python benchmarks/bench_analysis.py [--languages 15] [--sentences 1000] [--pivot-only]

Vectors are random with a shared component per sentence (so retrieval is neither trivial nor
chance); the cost of the analysis depends only on the shapes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from layer_analysis.probe.analysis import AnalysisConfig, analyse
from layer_analysis.probe.languages import known_languages
from layer_analysis.probe.metrics import NORMALISATIONS
from layer_analysis.probe.store import Activations


def in_memory(vectors: dict[str, torch.Tensor], texts: dict[str, list[str]]) -> Activations:
    """Activations of one pooling from (layers, sentences, hidden) vectors per language code."""
    layers, sentences, _ = next(iter(vectors.values())).shape
    manifest = {"sides": {c: {"language": c, "group": "all", "sentences": sentences}
                          for c in vectors}}
    return Activations("in-memory", Path("."), list(range(layers)), ["mean"],
                       {c: v[None] for c, v in vectors.items()},
                       {c: torch.zeros(sentences) for c in vectors}, manifest, False, texts)


def synthetic(languages: int, sentences: int, layers: int, hidden: int) -> Activations:
    torch.manual_seed(0)
    meaning = torch.randn(layers, sentences, hidden)
    codes = list(known_languages())[:languages]
    return in_memory({c: meaning + 2 * torch.randn(layers, sentences, hidden) for c in codes},
                     {c: [f"{c} {i}" for i in range(sentences)] for c in codes})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--languages", type=int, default=15)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--layers", type=int, default=19)
    parser.add_argument("--hidden", type=int, default=640)
    parser.add_argument("--pivot-only", action="store_true")
    parser.add_argument("--device", default="cpu", help="where the analysis runs (cpu, cuda)")
    parser.add_argument("--normalisations", nargs="+", default=list(NORMALISATIONS),
                        choices=NORMALISATIONS)
    args = parser.parse_args()
    acts = synthetic(args.languages, args.sentences, args.layers, args.hidden)
    config = AnalysisConfig(pivot="eng_Latn" if args.pivot_only else None,
                            normalisations=tuple(args.normalisations), device=args.device)
    start = time.perf_counter()
    result = analyse(acts, "synthetic", config)
    seconds = time.perf_counter() - start
    pairs = result.table[["source", "target"]].drop_duplicates().shape[0]
    print(f"{args.languages} languages x {args.sentences} sentences x {args.layers} layers "
          f"(d={args.hidden}), {'pivot' if args.pivot_only else 'all'} pairs ({pairs} directed), "
          f"normalisations {'/'.join(args.normalisations)}, 1000 bootstrap resamples, "
          f"{args.device} ({torch.get_num_threads()} CPU threads): "
          f"{seconds:.1f} s, {len(result.table):,} rows")


if __name__ == "__main__":
    main()
