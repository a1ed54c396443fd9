"""Model loading: local directories, PEFT adapters, identities, devices and dtypes."""

from __future__ import annotations

import pytest
import torch

from layer_analysis.probe.errors import ModelError
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.models import load_model, resolve_dtype


def test_local_directory_identity_fingerprints_weights(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    assert loaded.identity["directory"] == str(tiny_llama_dir.resolve())
    assert len(loaded.identity["weights"]) == 64
    assert loaded.dtype == torch.float32 and loaded.tokenizer.pad_token is not None


def test_an_adapter_on_another_base_is_said(tiny_llama_dir, tmp_path, capsys):
    import json

    from peft import LoraConfig, get_peft_model

    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    get_peft_model(base.model, config).save_pretrained(tmp_path / "adapter")
    assert load_model(str(tiny_llama_dir), str(tmp_path / "adapter"), "cpu", "float32").warnings == []
    config_file = tmp_path / "adapter" / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "base_model_name_or_path": "someone/other-model"}))
    loaded = load_model(str(tiny_llama_dir), str(tmp_path / "adapter"), "cpu", "float32")
    [warning] = loaded.warnings
    assert "trained on 'someone/other-model'" in warning
    assert loaded.record(str(tmp_path / "adapter"))["warnings"] == [warning]  # in every manifest
    assert f"note: {warning}" in capsys.readouterr().err


def test_adapter_directory_loads_on_its_base_and_changes_states(tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base.model, config).save_pretrained(tmp_path / "adapter")
    # An adapter directory alone names its base in adapter_config.json.
    adapted = load_model(str(tmp_path / "adapter"), device="cpu", dtype="float32")
    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    assert adapted.identity["adapter"]["path"] == str((tmp_path / "adapter").resolve())
    assert adapted.identity["weights"] == base.identity["weights"]
    sentences = ["A small test sentence.", "Another one."]
    with_adapter = Extractor(adapted, ExtractionConfig()).extract(sentences)
    without = Extractor(base, ExtractionConfig()).extract(sentences)
    assert torch.equal(with_adapter[:, 0], without[:, 0])  # embeddings untouched by LoRA
    assert not torch.allclose(with_adapter[:, -1], without[:, -1])
    explicit = load_model(str(tiny_llama_dir), adapter=str(tmp_path / "adapter"), device="cpu",
                          dtype="float32")
    assert torch.equal(Extractor(explicit, ExtractionConfig()).extract(sentences), with_adapter)


def test_non_finite_weights_of_a_model_or_adapter_are_refused_at_load(tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    adapted = get_peft_model(base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    weight = next(p for n, p in adapted.named_parameters()
                  if "layers.1." in n and "lora_B" in n)
    with torch.no_grad():
        weight[0, 0] = float("nan")
    adapted.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ModelError, match=r"with the adapter \S+adapter: the weight \S+"
                                         r"layers\.1\.self_attn\.q_proj\.lora_B\S* is not finite"):
        load_model(str(tmp_path / "adapter"), device="cpu", dtype="float32")
    plain = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    with torch.no_grad():
        plain.model.model.norm.weight[3] = float("inf")
    plain.model.save_pretrained(tmp_path / "broken")
    plain.tokenizer.save_pretrained(tmp_path / "broken")
    with pytest.raises(ModelError, match=r"model\.norm\.weight is not finite"):
        load_model(str(tmp_path / "broken"), device="cpu", dtype="float32")


def test_bad_model_specs(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"not a \.gguf model"):
        load_model(str(tmp_path / "weights.bin"))


def test_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ModelError, match="unknown dtype"):
        resolve_dtype("int3", cpu)


def test_device_map_auto_loads_and_the_hooks_see_every_block(tiny_llama_dir):
    plain = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    mapped = load_model(str(tiny_llama_dir), dtype="float32", device_map="auto")
    sentences = ["A house by the sea.", "Ein Haus am Meer."]
    a = Extractor(plain, ExtractionConfig()).extract(sentences)
    b = Extractor(mapped, ExtractionConfig()).extract(sentences)
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)


def test_a_block_left_on_the_meta_device_is_an_error(tiny_llama_dir, tmp_path, monkeypatch):
    placement = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
                 "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "cpu",
                 "model.rotary_emb": "cpu", "lm_head": "cpu"}
    import transformers

    original = transformers.AutoModelForCausalLM.from_pretrained

    def with_offload(*args, **kwargs):
        return original(*args, offload_folder=str(tmp_path), **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", with_offload)
    with pytest.raises(ModelError, match=r"blocks \[4\] on the meta device"):
        load_model(str(tiny_llama_dir), dtype="float32", device_map=placement)


def test_quantisation_without_bitsandbytes_or_a_gpu_is_a_clear_error(tiny_llama_dir):
    with pytest.raises(ModelError, match="--quantize 4bit needs"):
        load_model(str(tiny_llama_dir), quantize="4bit")
