"""Tiny random decoders built from configs with a tokenizer trained here: no downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from layer_analysis.probe.data import REPO_ROOT, shared_data_root

DATA = REPO_ROOT / "data" / "parallel"


@pytest.fixture(autouse=True)
def _isolated_cache(request, tmp_path_factory, monkeypatch):
    """Keep the tiny models' hashes out of the user's cache; real models share it (convert once)."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("LAYER_ANALYSIS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _train_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    files = sorted(str(p) for p in DATA.glob("*.txt"))
    tok.train(files, trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)]),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return _train_tokenizer()


def build_tiny(arch: str, vocab_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=16, sliding_window=16,
                                                   query_pre_attn_scalar=16))
    return model.eval()


@pytest.fixture(scope="session", params=["llama", "gemma3"])
def tiny_model_dir(request, tokenizer, tmp_path_factory) -> Path:
    """A saved tiny model directory (safetensors + tokenizer), once per architecture."""
    directory = tmp_path_factory.mktemp(f"tiny-{request.param}")
    build_tiny(request.param, len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tokenizer, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-llama-only")
    build_tiny("llama", len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("../shared/data is absent (it only exists beside the project's own checkout)")
    return root


@pytest.fixture(scope="session")
def dashboard_runs(tiny_llama_dir, tmp_path_factory) -> Path:
    """runs/base and runs/x-de: a tiny model and a LoRA adapter on it, same data."""
    from peft import LoraConfig, get_peft_model

    from layer_analysis.probe.analysis import AnalysisConfig
    from layer_analysis.probe.models import load_model
    from layer_analysis.probe.pipeline import RunRequest, execute

    root = tmp_path_factory.mktemp("dashboard") / "runs"
    adapter = root.parent / "x-de"
    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base.model, lora).save_pretrained(adapter)
    for name, model in (("base", str(tiny_llama_dir)), ("x-de", str(adapter))):
        execute(RunRequest(model=model, languages=["en", "de", "zh"], limit=24, device="cpu",
                           analysis=AnalysisConfig(bootstrap=100, null_permutations=20),
                           projection="pca", output=root, name=name, static=False,
                           progress_bars=False), ["test"])
    return root


@pytest.fixture(scope="session")
def intervention_runs(dashboard_runs, tiny_llama_dir, shared_data) -> Path:
    """Through the CLI, into one root: LAPE neurons of the tiny model and of its x-de adapter,
    German steering and an English map of German (held-out sentences from FLORES devtest)."""
    from layer_analysis.cli import main

    root = dashboard_runs.parent / "interventions"
    common = ["--output", str(root), "--no-static", "--device", "cpu"]
    lape = ["--languages", "en,de,el", "--data", "default", "--limit", "20",
            "--eval-sentences", "6", "--bootstrap", "50"]
    for name, model in (("neurons-base", str(tiny_llama_dir)),
                        ("neurons-x-de", str(dashboard_runs.parent / "x-de"))):
        assert main(["neurons", "--model", model, *lape, "--name", name, *common]) == 0
    short = ["--language", "de", "--model", str(tiny_llama_dir), "--fit-data", "default",
             "--fit-sentences", "20", "--eval-sentences", "4", "--max-new-tokens", "6",
             "--bootstrap", "50", "--strengths", "1"]
    assert main(["intervene", "steer", *short, "--name", "steer-de", *common]) == 0
    assert main(["intervene", "map", *short, "--xquad", "3", "--name", "map-de", *common]) == 0
    return root
