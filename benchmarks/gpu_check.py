"""The GPU check: everything that has only run on the CPU, on a CUDA machine, in one short
script (≤ 5 minutes on one GPU; no download: the packaged models and the shipped data).

    python benchmarks/gpu_check.py [--models gemma3-270m,smollm2-135m] [--limit 100]

Per model, on the GPU: extraction throughput in bf16 and fp32 against a bare forward of the
model body on the same batches, the largest |fp32 − bf16| difference in centered P@1 over layers
and language pairs, and the whole analysis (every metric, normalisation, CI and null of the
English pivot) on the GPU against the CPU, on the model's states and on synthetic ones of
FLORES scale (15 languages × 1000 sentences); then bitext mining of 20,000 × 20,000 vectors on
the GPU, and with two GPUs or more a two-process extraction (torchrun) compared with one, each
with a store of its own. On a machine without CUDA it runs the same steps in fp32 on the CPU
where they make sense and says what it skipped; ``--device-steps yes`` and ``--two-processes
yes`` run the GPU-only steps on the CPU too (the test suite does, so every step has run before
it meets a GPU). ``--models`` takes anything ``--model`` does: a packaged name, a directory, a
``.gguf`` file. Prints one JSON line per measurement, then "gpu check: passed".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from bench_analysis import in_memory, synthetic  # this folder

from layer_analysis.probe.analysis import AnalysisConfig, analyse
from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.metrics import precision_at_1
from layer_analysis.probe.mining import mine
from layer_analysis.probe.models import load_model
from layer_analysis.probe.store import Activations

LANGUAGES = ["eng_Latn", "deu_Latn", "ell_Grek", "arb_Arab"]  # in the shipped data


def report(**fields) -> None:
    print(json.dumps(fields), flush=True)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def extraction(model: str, device: str, dtype: str, sides: dict[str, list[str]], batch: int
               ) -> torch.Tensor:
    """States (languages, layers, n, d) and a line with the throughput vs a bare forward."""
    loaded = load_model(model, device=device, dtype=dtype)
    extractor = Extractor(loaded, ExtractionConfig())
    sentences = [s for texts in sides.values() for s in texts]
    encoded = extractor.encode(sentences)
    batches = [[t.to(loaded.device) for t in extractor.collate(encoded, b)]
               for b in extractor.batches(encoded.lengths, batch)]
    extractor.extract_encoded(encoded, batch)  # warm-up (kernels, allocator)
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for ids, attention, _, _ in batches:
            extractor.run_body(ids, attention)
    synchronize(device)
    bare = time.perf_counter() - start
    start = time.perf_counter()
    states = extractor.extract_encoded(encoded, batch)[0]
    synchronize(device)
    hooked = time.perf_counter() - start
    report(step="extraction", model=model, device=device, dtype=str(loaded.dtype),
           sentences=len(sentences), sentences_per_s=round(len(sentences) / hooked, 1),
           bare_forward_per_s=round(len(sentences) / bare, 1), ratio=round(hooked / bare, 2))
    n = len(next(iter(sides.values())))
    return states.reshape(states.shape[0], len(sides), n, -1).transpose(0, 1)


def centered_p1(states: torch.Tensor) -> torch.Tensor:
    """(pairs with English, layers) centered P@1, both directions averaged."""
    english = states[0]
    return torch.stack([(precision_at_1(english, other) + precision_at_1(other, english)) / 2
                        for other in states[1:]])


def analytics(acts: Activations, label: str, device: str) -> None:
    """The whole analysis (every metric, normalisation, CI, null) of the English pivot, on the
    CPU and on ``device``: seconds of each and how far the two tables lie apart."""
    seconds, tables = {}, {}
    for where in dict.fromkeys(["cpu", device]):
        synchronize(device)
        start = time.perf_counter()
        tables[where] = analyse(acts, label, AnalysisConfig(device=where)).table
        synchronize(device)
        seconds[where] = round(time.perf_counter() - start, 2)
    difference = (tables["cpu"].value - tables[device].value).abs()
    report(step="analytics", data=label, device=device, rows=len(difference),
           seconds_cpu=seconds["cpu"], seconds_device=seconds[device],
           max_abs_difference=float(difference.max()),
           rows_differing_over_1e_4=int((difference > 1e-4).sum()))


def two_processes(model: str, limit: int) -> None:
    """The same run by one process and by two (torchrun), each with a store of its own (a shared
    store would let the second run load the first one's states): time and largest difference."""
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run",
                                                     "--nproc_per_node", "2"])):
            command = [sys.executable, *launcher, "-m", "layer_analysis", "run", "--model", model,
                       "--languages", ",".join(LANGUAGES), "--limit", str(limit), "--no-static",
                       "--no-progress", "--output", tmp, "--name", name,
                       "--store", str(Path(tmp) / f"store-{name}")]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            if done.returncode:
                sys.exit(f"{name} process(es) failed:\n{done.stderr[-3000:]}")
            seconds[name] = round(time.perf_counter() - start, 1)
        keys = ["layer", "source", "target", "pooling", "normalisation", "metric"]
        one, two = (pd.read_csv(Path(tmp) / name / "results.csv").set_index(keys)
                    for name in ("one", "two"))
        if not one.index.equals(two.index):
            sys.exit("the one- and two-process runs report different rows")
        extraction = {name: json.loads(next((Path(tmp) / f"store-{name}").glob("*/manifest.json"))
                                       .read_text())["extraction"] for name in ("one", "two")}
        report(step="two processes", model=model, seconds_one=seconds["one"],
               seconds_two=seconds["two"],
               processes=[extraction[name]["processes"] for name in ("one", "two")],
               devices=[extraction[name]["device"] for name in ("one", "two")],
               max_abs_difference=float((one.value - two.value).abs().max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gemma3-270m,smollm2-135m")
    parser.add_argument("--limit", type=int, default=100, help="sentences per language")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mining", type=int, default=20000, help="vectors per side (0: none)")
    parser.add_argument("--analytics-scale", default="15,1000,19,640",
                        help="languages,sentences,layers,hidden of the synthetic analytics run")
    parser.add_argument("--device-steps", choices=["auto", "yes", "no"], default="auto",
                        help="bf16 vs fp32, analysis on the CPU vs the device (auto: with CUDA)")
    parser.add_argument("--two-processes", choices=["auto", "yes", "no"], default="auto",
                        help="a two-process run vs one (auto: with two GPUs; yes on a CPU: gloo)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    device_steps = args.device_steps == "yes" or (args.device_steps == "auto" and cuda)
    gpus = torch.cuda.device_count() if cuda else 0
    two = args.two_processes == "yes" or (args.two_processes == "auto" and gpus >= 2)
    if cuda:
        report(step="device", name=torch.cuda.get_device_name(0), gpus=gpus,
               bf16=torch.cuda.is_bf16_supported(), torch=torch.__version__)
    else:
        skipped = [what for what, on in (("bf16 and the analysis on the device", device_steps),
                                         ("the two-process run", two)) if not on]
        report(step="device", name="cpu", skipped="no CUDA: " + (", ".join(skipped) or "nothing")
               + " skipped; the rest runs on the CPU")
    corpus = load_parallel("default").select(LANGUAGES, args.limit)
    sides = {s.language: s.sentences for s in corpus.sides.values()}
    for model in args.models.split(","):
        fp32 = extraction(model, device, "float32", sides, args.batch_size)
        if device_steps:
            half = extraction(model, device, "bfloat16", sides, args.batch_size)
            difference = (centered_p1(half) - centered_p1(fp32)).abs()
            report(step="bf16 vs fp32", model=model, max_abs_p1_difference=float(difference.max()),
                   mean_abs_p1_difference=round(float(difference.mean()), 4))
            analytics(in_memory(dict(zip(sides, fp32, strict=True)), sides), model, device)
    if device_steps:
        languages, sentences, layers, hidden = (int(v) for v in args.analytics_scale.split(","))
        analytics(synthetic(languages, sentences, layers, hidden),
                  f"synthetic {languages} languages x {sentences} x {layers} layers x d={hidden}",
                  device)
    if args.mining:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.mining, 576, generator=g)
        y = x + 4.5 * torch.randn(args.mining, 576, generator=g)
        x, y = x.to(device), y.to(device)
        synchronize(device)
        start = time.perf_counter()
        mined = mine(x, y)
        synchronize(device)
        report(step="mining", device=device, n=args.mining,
               seconds=round(time.perf_counter() - start, 2),
               xsim_error=round(float((mined.forward.cpu() != torch.arange(args.mining))
                                      .float().mean()), 4))
    if two:
        two_processes(args.models.split(",")[0], args.limit)
    else:
        report(step="two processes",
               skipped="fewer than two CUDA devices (--two-processes yes: on this machine anyway)")
    print("gpu check: passed", flush=True)


if __name__ == "__main__":
    main()
