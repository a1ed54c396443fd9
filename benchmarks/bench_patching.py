"""Patching speed: prompts/s of one patched batched forward (hooks replacing the last token's
state at one layer, output read through the lens) — as the experiment runs it (a one-token
forward on the prompt prefix's kept key/value cache) and on the whole prompt — against a bare
forward of the same prompts (the model's own ``forward``, same batches), and of a whole
experiment (every condition at every layer; the source pass included).

    python benchmarks/bench_patching.py [--model smollm2-135m] [--limit 30] [--layers 1-30]

Timings are wall clock on whatever this machine is doing; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import time

import torch

from layer_analysis.cli.options import parse_layers
from layer_analysis.probe.latent import load_words
from layer_analysis.probe.lens import LogitLens
from layer_analysis.probe.models import load_model
from layer_analysis.probe.patching import Patcher, Setting, build_pairs, patch_experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layers", type=parse_layers, default=None,
                        help="for the whole experiment (default: every 3rd layer)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    loaded = load_model(args.model, device=args.device, dtype="auto")
    patcher = Patcher(LogitLens(loaded))
    setting = Setting("deu_Latn", "fra_Latn", "spa_Latn", "rus_Cyrl")
    pairs, _ = build_pairs(load_words(), loaded.tokenizer, setting, ["deu_Latn", "eng_Latn"],
                           args.shots, args.limit)
    encoded = patcher.encode([p.target_prompt for p in pairs])
    sets = [p.token_sets for p in pairs]
    middle = patcher.num_blocks // 2
    own, _ = patcher.run(encoded, args.batch_size, capture=[middle], token_sets=sets)

    def bare() -> None:
        extractor = patcher.extractor
        for batch in extractor.batches(encoded.lengths, args.batch_size):
            ids, attention, _, _ = (t.to(loaded.device) for t in extractor.collate(encoded, batch))
            with torch.inference_mode():
                loaded.model(input_ids=ids, attention_mask=attention.long(), use_cache=False)

    def patched() -> None:
        patcher.run(encoded, args.batch_size, token_sets=sets, patches={middle: own[middle]})

    whole = Patcher(LogitLens(loaded), reuse_prefix=False)

    def patched_whole() -> None:
        whole.run(encoded, args.batch_size, token_sets=sets, patches={middle: own[middle]})

    for name, work in (("bare forward", bare), ("patched, cached", patched),
                       ("patched, whole", patched_whole)):
        work()  # warm-up
        clock = time.perf_counter()
        for _ in range(args.repeats):
            work()
        seconds = (time.perf_counter() - clock) / args.repeats
        print(f"{name:>16}: {len(pairs) / seconds:8.1f} prompts/s ({len(pairs)} prompts, "
              f"mean tokens {sum(encoded.lengths) / len(pairs):.0f})")
    layers = args.layers or list(range(3, patcher.num_blocks + 1, 3))
    clock = time.perf_counter()
    result = patch_experiment(patcher, pairs, layers, batch_size=args.batch_size)
    seconds = time.perf_counter() - clock
    print(f"{'experiment':>16}: {result.prompt_forwards / seconds:8.1f} prompts/s "
          f"({result.prompt_forwards} prompt forwards, {len(layers)} layers, {seconds:.1f} s)")


if __name__ == "__main__":
    main()
