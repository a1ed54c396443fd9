"""Extraction throughput: MEXA-style script vs bare model body vs this engine, same sentences.

    python benchmarks/bench_extraction.py [--data flores-devtest] [--languages en,de,zh,ar]
                                          [--limit 200] [--batch-size 32]

Each method runs in its own process so peak RSS is its own. Prints sentences/s, peak RSS,
the ratios, the padding fraction, the cached-rerun time and fp32-vs-bf16 centered P@1.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probe.data import load_parallel, named_datasets  # noqa: E402
from probe.extract import BatchStats, ExtractionConfig, Extractor  # noqa: E402
from probe.metrics import precision_at_1  # noqa: E402
from probe.models import load_model  # noqa: E402
from probe.store import ActivationStore  # noqa: E402


def sentences_of(args: argparse.Namespace) -> list[str]:
    corpus = load_parallel(args.data).select(args.languages.split(","), args.limit)
    return [s for side in corpus.sides.values() for s in side.sentences]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def method_mexa(args, sentences) -> dict:
    """What researchers run today: causal LM, one sentence per forward, output_hidden_states."""
    loaded = load_model(args.model, dtype=args.dtype)
    tok, model = loaded.tokenizer, loaded.model
    start = time.perf_counter()
    with torch.no_grad():
        for sentence in sentences:
            enc = tok(sentence, return_tensors="pt")
            hidden = model(**enc, output_hidden_states=True).hidden_states
            _ = [h[0].float().mean(0) for h in hidden]
    return {"seconds": time.perf_counter() - start}


def method_body(args, sentences) -> dict:
    """The limit: bare forward passes of the model body on the same length-sorted batches."""
    loaded = load_model(args.model, dtype=args.dtype)
    extractor = Extractor(loaded, ExtractionConfig())
    encoded = extractor.encode(sentences)
    batches = [extractor._collate(encoded, b)
               for b in extractor.batches(encoded.lengths, args.batch_size)]
    start = time.perf_counter()
    with torch.inference_mode():
        for ids, attention, _ in batches:
            extractor.parts.body(input_ids=ids, attention_mask=attention.long(), use_cache=False)
    return {"seconds": time.perf_counter() - start}


def method_engine(args, sentences) -> dict:
    """This engine through the store: tokenise, batch, hook, pool, write; then a cached rerun."""
    loaded = load_model(args.model, dtype=args.dtype)
    extractor = Extractor(loaded, ExtractionConfig())
    corpus = load_parallel(args.data).select(args.languages.split(","), args.limit)
    stats = BatchStats()
    start = time.perf_counter()
    extractor.extract(sentences, args.batch_size, stats)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore(tmp)
        start = time.perf_counter()
        acts = store.extract(extractor, corpus, args.batch_size, progress=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        store.extract(extractor, corpus, args.batch_size, progress=False)
        rerun = time.perf_counter() - start
        pivot = next(k for k in acts.vectors if k.startswith("eng"))
        p1 = {k: precision_at_1(acts.get(pivot), acts.get(k)).tolist()
              for k in acts.vectors if k != pivot}
    return {"seconds": seconds, "padding": stats.padding_fraction, "store_first": first,
            "store_rerun": rerun, "p_at_1": p1}


METHODS = {"mexa": method_mexa, "body": method_body, "engine": method_engine}


def run_child(args: argparse.Namespace, method: str, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--dtype", dtype, "--model", args.model,
           "--data", args.data, "--languages", args.languages, "--limit", str(args.limit),
           "--batch-size", str(args.batch_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    flores = named_datasets()["flores-devtest"][0] is not None
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--data", default="flores-devtest" if flores else "default")
    parser.add_argument("--languages", default="en,de,zh,ar")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--child", choices=METHODS)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.child:
        sentences = sentences_of(args)
        result = METHODS[args.child](args, sentences)
        result.update(n=len(sentences), rss_mb=peak_rss_mb())
        print(json.dumps(result))
        return

    n = len(sentences_of(args))
    print(f"{args.model} on {args.data} ({args.languages}, {args.limit} each = {n} sentences), "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    results = {
        "(a) MEXA-style fp32": run_child(args, "mexa", "float32"),
        "(b) model body fp32": run_child(args, "body", "float32"),
        "(c) engine fp32": run_child(args, "engine", "float32"),
        "(b) model body bf16": run_child(args, "body", "bfloat16"),
        "(c) engine bf16": run_child(args, "engine", "bfloat16"),
    }
    for name, r in results.items():
        print(f"{name:22s} {r['n'] / r['seconds']:8.1f} sent/s   peak RSS {r['rss_mb']:7.0f} MB")
    rate = {k: v["n"] / v["seconds"] for k, v in results.items()}
    e32, e16 = results["(c) engine fp32"], results["(c) engine bf16"]
    print(f"(c)/(b) fp32: {rate['(c) engine fp32'] / rate['(b) model body fp32']:.2f}x   "
          f"(c)/(b) bf16: {rate['(c) engine bf16'] / rate['(b) model body bf16']:.2f}x")
    best = max(rate["(c) engine fp32"], rate["(c) engine bf16"])
    print(f"(c) best / (a): {best / rate['(a) MEXA-style fp32']:.1f}x")
    print(f"padded tokens: {e32['padding']:.1%} of processed tokens")
    print(f"store: first run {e32['store_first']:.2f} s, cached rerun {e32['store_rerun']:.3f} s "
          f"({e32['store_rerun'] / e32['store_first']:.1%})")
    diff = max(abs(a - b) for k in e32["p_at_1"]
               for a, b in zip(e32["p_at_1"][k], e16["p_at_1"][k]))
    print(f"centered P@1, max |fp32 - bf16| over layers and pairs: {diff:.3f}")


if __name__ == "__main__":
    main()
