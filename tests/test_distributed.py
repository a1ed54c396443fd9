"""Extraction in several processes (torchrun, gloo on CPU): length-balanced shards, the same
results as one process, a killed run resumed by two, one message for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.distributed import Processes
from layer_analysis.probe.errors import DataError, StoreError
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.models import load_model
from layer_analysis.probe.store import ActivationStore


class Killed(Exception):
    pass


def test_shards_are_disjoint_complete_and_balanced_in_tokens():
    lengths = [50, 3, 3, 3, 40, 7, 9, 30, 2, 2, 11, 25]
    indices = list(range(len(lengths)))
    shards = [Processes(rank, 3).shard(indices, lengths) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == indices
    loads = [sum(lengths[i] for i in shard) for shard in shards]
    assert max(loads) - min(loads) <= max(lengths)
    with pytest.raises(DataError, match="launch fewer processes"):
        Processes(0, 4).check(3)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", "-m", "layer_analysis", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def run_args(model, out, name, *extra):
    return ["run", "--model", str(model), "--languages", "en,de,el", "--limit", "20",
            "--output", str(out), "--name", name, "--no-progress", "--device", "cpu",
            "--bootstrap", "100", "--no-static", *extra]


def test_two_processes_give_the_results_of_one_and_resume_a_killed_run(tiny_llama_dir,
                                                                       tmp_path):
    from layer_analysis.cli import main

    assert main(run_args(tiny_llama_dir, tmp_path / "one", "single")) == 0
    single = pd.read_csv(tmp_path / "one" / "single" / "results.csv")
    done = torchrun(*run_args(tiny_llama_dir, tmp_path / "two", "multi"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run:") == 1  # only the main process reports
    multi = pd.read_csv(tmp_path / "two" / "multi" / "results.csv")
    manifest = json.loads((tmp_path / "two" / "multi" / "manifest.json").read_text())
    assert manifest["extraction"]["processes"] == 2
    pd.testing.assert_frame_equal(multi, single, check_exact=False, atol=1e-6)

    # killed after one chunk of one process, resumed by two
    store = ActivationStore(tmp_path / "three" / "store")
    extractor = Extractor(load_model(str(tiny_llama_dir), device="cpu", dtype="float32"),
                          ExtractionConfig())
    corpus = load_parallel("default").select(["eng_Latn", "deu_Latn", "ell_Grek"], 20)

    def kill(_chunk: int) -> None:
        raise Killed

    with pytest.raises(Killed):
        store.extract(extractor, corpus, batch_size=4, chunk_size=8, progress=False, on_chunk=kill)
    resumed = torchrun(*run_args(tiny_llama_dir, tmp_path / "three", "resumed",
                                 "--batch-size", "4"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((tmp_path / "three" / "resumed" / "manifest.json").read_text())
    assert manifest["extraction"]["sentences_computed"] == 60 - 8
    again = pd.read_csv(tmp_path / "three" / "resumed" / "results.csv")
    pd.testing.assert_frame_equal(again, single, check_exact=False, atol=1e-6)


def test_bad_input_under_two_processes_is_one_message(tiny_llama_dir, tmp_path):
    done = torchrun("run", "--model", str(tiny_llama_dir), "--data", str(tmp_path / "none.tsv"),
                    "--output", str(tmp_path), "--device", "cpu", "--no-static")
    assert done.returncode != 0
    assert done.stderr.count("layer-analysis: error:") == 1 and "none.tsv" in done.stderr
    assert not list(tmp_path.rglob("manifest.json"))


def test_a_store_of_another_engine_version_is_refused(tiny_llama_dir, tmp_path):
    extractor = Extractor(load_model(str(tiny_llama_dir), device="cpu", dtype="float32"),
                          ExtractionConfig())
    corpus = load_parallel("default").select(["eng_Latn", "deu_Latn"], 4)
    acts = ActivationStore(tmp_path).extract(extractor, corpus, progress=False)
    manifest_path = acts.directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["inputs"]["engine"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="engine version 1"):
        ActivationStore(tmp_path).load(acts.directory)
    assert torch.isfinite(acts.vectors["eng_Latn"]).all()


def gpu_check(*options: str) -> list[dict]:
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), *options], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.rstrip().endswith("gpu check: passed")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU-only machine skips")
def test_the_gpu_check_passes_on_the_cpu_and_says_what_it_skipped(tiny_llama_dir):
    lines = gpu_check("--models", str(tiny_llama_dir), "--limit", "6", "--mining", "500")
    assert [line["step"] for line in lines] == ["device", "extraction", "mining", "two processes"]
    assert "bf16 and the analysis on the device, the two-process run skipped" in lines[0]["skipped"]
    assert lines[2]["xsim_error"] < 0.5  # planted translations are found
    assert "skipped" in lines[3]


def test_every_step_of_the_gpu_check_runs_on_the_cpu_when_asked(tiny_llama_dir):
    """The steps a GPU runs (bf16 vs fp32, analytics on the device, two processes) have run
    before they meet a GPU: here on the CPU, the two processes over gloo."""
    lines = gpu_check("--models", f"{tiny_llama_dir},{tiny_llama_dir}", "--limit", "6",
                      "--mining", "0", "--device-steps", "yes", "--two-processes", "yes",
                      "--analytics-scale", "3,40,2,16")
    by_step: dict[str, list[dict]] = {}
    for line in lines:
        by_step.setdefault(line["step"], []).append(line)
    assert [line["dtype"] for line in by_step["extraction"]] == 2 * ["torch.float32", "torch.bfloat16"]
    assert all(0 <= line["max_abs_p1_difference"] <= 1 for line in by_step["bf16 vs fp32"])
    assert [line["data"] for line in by_step["analytics"]] == [
        str(tiny_llama_dir), str(tiny_llama_dir), "synthetic 3 languages x 40 x 2 layers x d=16"]
    assert all(line["rows"] > 0 and line["max_abs_difference"] == 0 for line in by_step["analytics"])
    two = by_step["two processes"][0]
    assert two["processes"] == [1, 2]  # each extracted (stores of their own), by 1 and 2
    assert two["max_abs_difference"] < 1e-5, two


def test_only_the_main_process_prints_notes(monkeypatch, capsys):
    from layer_analysis.probe.errors import notice

    monkeypatch.setenv("RANK", "1")
    notice("from a worker")
    monkeypatch.setenv("RANK", "0")
    notice("from the main process")
    assert capsys.readouterr().err == "note: from the main process\n"
