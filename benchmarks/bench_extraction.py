"""Extraction throughput: MEXA-style script vs bare model body vs this engine (with and without
attention-sink exclusion), same sentences.

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

from layer_analysis.probe.data import load_parallel, named_datasets
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.metrics import precision_at_1
from layer_analysis.probe.models import load_model
from layer_analysis.probe.store import ActivationStore


def sentences_of(args: argparse.Namespace) -> list[str]:
    corpus = load_parallel(args.data).select(args.languages.split(","), args.limit)
    return [s for side in corpus.sides.values() for s in side.sentences]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def method_mexa(args, sentences) -> dict:
    """What researchers run today: causal LM, one sentence per forward, output_hidden_states."""
    loaded = load_model(args.model, dtype=args.dtype)
    tok, model = loaded.tokenizer, loaded.model
    sentences = sentences[:: max(1, len(sentences) // args.mexa_sample)]
    start = time.perf_counter()
    with torch.no_grad():
        for sentence in sentences:
            enc = tok(sentence, return_tensors="pt")
            hidden = model(**enc, output_hidden_states=True).hidden_states
            _ = [h[0].float().mean(0) for h in hidden]
    return {"seconds": time.perf_counter() - start, "n": len(sentences)}


def method_body(args, sentences) -> dict:
    """The limit: bare forward passes of the model body on the same length-sorted batches."""
    loaded = load_model(args.model, dtype=args.dtype)
    extractor = Extractor(loaded, ExtractionConfig())
    encoded = extractor.encode(sentences)
    batches = [extractor.collate(encoded, b)
               for b in extractor.batches(encoded.lengths, args.batch_size)]
    start = time.perf_counter()
    with torch.inference_mode():
        for ids, attention, *_ in batches:
            extractor.parts.body(input_ids=ids, attention_mask=attention.long(), use_cache=False)
    return {"seconds": time.perf_counter() - start}


def method_engine(args, sentences, sinks: str = "exclude") -> dict:
    """This engine end to end: tokenise, batch, hook, pool, write to the store; a cached rerun."""
    loaded = load_model(args.model, dtype=args.dtype)
    extractor = Extractor(loaded, ExtractionConfig(sinks=sinks))
    corpus = load_parallel(args.data).select(args.languages.split(","), args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore(tmp)
        start = time.perf_counter()
        acts = store.extract(extractor, corpus, args.batch_size, progress=False)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        store.extract(extractor, corpus, args.batch_size, progress=False)
        rerun = time.perf_counter() - start
    pivot = next(k for k in acts.vectors if k.startswith("eng"))
    p1 = {k: precision_at_1(acts.get(pivot), acts.get(k)).tolist()
          for k in acts.vectors if k != pivot}
    return {"seconds": seconds, "padding": acts.manifest["extraction"]["padding_fraction"],
            "rerun": rerun, "p_at_1": p1}


METHODS = {"mexa": method_mexa, "body": method_body, "engine": method_engine,
           "engine-keep": lambda args, sentences: method_engine(args, sentences, sinks="keep")}


def fast_bf16() -> bool:
    """bf16 pays off on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX); elsewhere emulated."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run_child(args: argparse.Namespace, method: str, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--dtype", dtype, "--model", args.model,
           "--data", args.data, "--languages", args.languages, "--limit", str(args.limit),
           "--batch-size", str(args.batch_size), "--mexa-sample", str(args.mexa_sample)]
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
    parser.add_argument("--bf16", choices=["auto", "yes", "no"], default="auto",
                        help="also time bf16 (auto: where the hardware has native bf16)")
    parser.add_argument("--mexa-sample", type=int, default=100,
                        help="time (a) on this many evenly spaced sentences of the same set "
                             "(one sentence per forward: its rate does not depend on the count)")
    parser.add_argument("--child", choices=METHODS)
    args = parser.parse_args()
    if args.child:
        sentences = sentences_of(args)
        result = {"n": len(sentences), **METHODS[args.child](args, sentences)}
        result["rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    n = len(sentences_of(args))
    print(f"{args.model} on {args.data} ({args.languages}, {args.limit} each = {n} sentences), "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    dtypes = ["float32"]
    if args.bf16 == "yes" or (args.bf16 == "auto" and fast_bf16()):
        dtypes.append("bfloat16")
    results, rate = {}, {}
    for dtype in dtypes:
        for method in (["mexa"] if dtype == "float32" else []) + ["body", "engine", "engine-keep"]:
            r = results[method, dtype] = run_child(args, method, dtype)
            rate[method, dtype] = r["n"] / r["seconds"]
            print(f"{LABELS[method]} {dtype:9s} {rate[method, dtype]:8.1f} sent/s   "
                  f"peak RSS {r['rss_mb']:6.0f} MB   ({r['n']} sentences)", flush=True)
    for dtype in dtypes:
        print(f"(c)/(b) {dtype}: {rate['engine', dtype] / rate['body', dtype]:.2f}x   "
              f"(c)/(d), the cost of sink exclusion: "
              f"{rate['engine', dtype] / rate['engine-keep', dtype]:.3f}x")
    best = max(dtypes, key=lambda d: rate["engine", d])
    print(f"(c) best ({best}) / (a) fp32: {rate['engine', best] / rate['mexa', 'float32']:.1f}x")
    engine = results["engine", "float32"]
    print(f"padded tokens: {engine['padding']:.1%} of processed tokens")
    print(f"cached rerun: {engine['rerun']:.3f} s = {engine['rerun'] / engine['seconds']:.1%} "
          f"of the first run ({engine['seconds']:.1f} s)")
    if "bfloat16" in dtypes:
        p32, p16 = engine["p_at_1"], results["engine", "bfloat16"]["p_at_1"]
        diff = max(abs(a - b) for k in p32 for a, b in zip(p32[k], p16[k], strict=True))
        print(f"centered P@1, max |fp32 - bf16| over layers and pairs: {diff:.3f}")


LABELS = {"mexa": "(a) MEXA-style  ", "body": "(b) model body  ", "engine": "(c) this engine ",
          "engine-keep": "(d) --sinks keep"}

if __name__ == "__main__":
    main()
