"""The GPU check: everything that has only run on the CPU, on a CUDA machine, in one short
script (≤ 5 minutes on one GPU; no download: the packaged models and the shipped data).

    python benchmarks/gpu_check.py [--models gemma3-270m,smollm2-135m] [--limit 100]

Per model, on the GPU: extraction throughput in bf16 and fp32 against a bare forward of the
model body on the same batches, the largest |fp32 − bf16| difference in centered P@1 over layers
and language pairs, the analytics (retrieval of every layer and pair) on the GPU against the
CPU, and bitext mining of 20,000 × 20,000 vectors on the GPU; with two GPUs or more, a two-process
extraction (torchrun) compared with one. On a machine without CUDA it runs the same steps in
fp32 on the CPU where they make sense and says what it skipped. Prints one JSON line per
measurement, then "gpu check: passed".
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

import torch

from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.metrics import precision_at_1
from layer_analysis.probe.mining import mine
from layer_analysis.probe.models import load_model

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


def centered_p1(states: torch.Tensor, device: str) -> torch.Tensor:
    """(pairs with English, layers) centered P@1, both directions averaged."""
    english = states[0].to(device)
    return torch.stack([(precision_at_1(english, other.to(device))
                         + precision_at_1(other.to(device), english)) / 2
                        for other in states[1:]]).cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gemma3-270m,smollm2-135m")
    parser.add_argument("--limit", type=int, default=100, help="sentences per language")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mining", type=int, default=20000, help="vectors per side (0: none)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        report(step="device", name=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
               bf16=torch.cuda.is_bf16_supported(), torch=torch.__version__)
    else:
        report(step="device", name="cpu", skipped="no CUDA: bf16 on the GPU, GPU analytics and "
               "the two-GPU run are skipped; the rest runs in fp32 on the CPU")
    corpus = load_parallel("default").select(LANGUAGES, args.limit)
    sides = {s.language: s.sentences for s in corpus.sides.values()}
    for model in args.models.split(","):
        fp32 = extraction(model, device, "float32", sides, args.batch_size)
        reference = centered_p1(fp32, "cpu")
        if cuda:
            bf16 = extraction(model, device, "bfloat16", sides, args.batch_size)
            difference = (centered_p1(bf16, "cpu") - reference).abs()
            report(step="bf16 vs fp32", model=model, max_abs_p1_difference=float(difference.max()),
                   mean_abs_p1_difference=round(float(difference.mean()), 4))
            for where in ("cpu", device):
                synchronize(device)
                start = time.perf_counter()
                again = centered_p1(fp32, where)
                synchronize(device)
                report(step="analytics", model=model, device=where,
                       seconds=round(time.perf_counter() - start, 3),
                       same_as_cpu=bool(torch.allclose(again, reference)))
    if args.mining:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.mining, 576, generator=g)
        y = x + 4.5 * torch.randn(args.mining, 576, generator=g)
        for where in ([device] if cuda else ["cpu"]):
            synchronize(where)
            start = time.perf_counter()
            mined = mine(x.to(where), y.to(where))
            synchronize(where)
            report(step="mining", device=where, n=args.mining,
                   seconds=round(time.perf_counter() - start, 2),
                   xsim_error=round(float((mined.forward.cpu() != torch.arange(args.mining))
                                          .float().mean()), 4))
    if cuda and torch.cuda.device_count() >= 2:
        model = args.models.split(",")[0]
        with tempfile.TemporaryDirectory() as tmp:
            common = ["run", "--model", model, "--languages", ",".join(LANGUAGES), "--limit",
                      str(args.limit), "--no-static", "--no-progress", "--output", tmp]
            subprocess.run([sys.executable, "-m", "layer_analysis", *common, "--name", "one"],
                           check=True, capture_output=True)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                            "2", "-m", "layer_analysis", *common, "--name", "two"], check=True,
                           capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            import pandas as pd

            one = pd.read_csv(Path(tmp) / "one" / "results.csv")
            two = pd.read_csv(Path(tmp) / "two" / "results.csv")
            report(step="two GPUs", model=model, seconds=round(time.perf_counter() - start, 1),
                   max_abs_difference=float((one.value - two.value).abs().max()))
    else:
        report(step="two GPUs", skipped="fewer than two CUDA devices")
    print("gpu check: passed", flush=True)


if __name__ == "__main__":
    main()
