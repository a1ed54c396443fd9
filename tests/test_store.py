"""Cache keys, atomic chunks, resume after a kill, and cached reruns."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from probe.data import load_parallel
from probe.extract import ExtractionConfig, Extractor
from probe.models import load_model
from probe.store import ActivationStore, cache_key


@pytest.fixture(scope="module")
def corpus():
    return load_parallel("default").select(["en", "de", "zh"], limit=24)


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return load_model(str(tiny_llama_dir), dtype="float32", device="cpu")


def test_cache_key_changes_when_any_input_changes(llama, corpus, tiny_llama_dir, tmp_path):
    base = Extractor(llama, ExtractionConfig())
    key = cache_key(base, corpus)[0]
    variants = {
        "data": cache_key(base, dataclasses.replace(corpus, sides={
            k: dataclasses.replace(s, sentences=(s.sentences[0] + "!", *s.sentences[1:]))
            for k, s in corpus.sides.items()}))[0],
        "languages": cache_key(base, corpus.select(["en", "de"]))[0],
        "limit": cache_key(base, corpus.select(limit=10))[0],
    }
    for name, config in {
        "pooling": ExtractionConfig(poolings=("last",)),
        "template": ExtractionConfig(template="Text: {sentence}"),
        "span": ExtractionConfig(template="Text: {sentence}", span="prompt"),
        "max_length": ExtractionConfig(max_length=64),
        "layers": ExtractionConfig(layers=(1, 2)),
    }.items():
        variants[name] = cache_key(Extractor(llama, config), corpus)[0]
    bf16 = load_model(str(tiny_llama_dir), dtype="bfloat16", device="cpu")
    variants["dtype"] = cache_key(Extractor(bf16, ExtractionConfig()), corpus)[0]
    # Same files, one weight changed: the weight fingerprint changes the key.
    changed = tmp_path / "changed"
    llama.model.lm_head.weight.data[0, 0] += 1.0
    llama.model.save_pretrained(changed)
    llama.model.lm_head.weight.data[0, 0] -= 1.0
    llama.tokenizer.save_pretrained(changed)
    other = load_model(str(changed), dtype="float32", device="cpu")
    variants["weights"] = cache_key(Extractor(other, ExtractionConfig()), corpus)[0]
    assert key not in variants.values()
    assert len(set(variants.values())) == len(variants)
    assert cache_key(Extractor(llama, ExtractionConfig()), corpus)[0] == key  # deterministic


class Killed(Exception):
    pass


def test_killed_run_resumes_with_identical_results(llama, corpus, tmp_path):
    extractor = Extractor(llama, ExtractionConfig(poolings=("mean", "last")))
    reference = ActivationStore(tmp_path / "a").extract(extractor, corpus, batch_size=4,
                                                         chunk_size=8, progress=False)

    def kill_after_two(chunk_no: int) -> None:
        if chunk_no == 1:
            raise Killed

    store = ActivationStore(tmp_path / "b")
    with pytest.raises(Killed):
        store.extract(extractor, corpus, batch_size=4, chunk_size=8, progress=False,
                      on_chunk=kill_after_two)
    run_dir = next((tmp_path / "b").iterdir())
    assert len(list((run_dir / "chunks").glob("*.safetensors"))) == 2
    assert not list(run_dir.glob("side.*"))  # nothing final was written by the killed run
    resumed = store.extract(extractor, corpus, batch_size=4, chunk_size=8, progress=False)
    assert resumed.manifest["extraction"]["sentences_computed"] == len(corpus) - 16
    for side in corpus.sides:
        assert torch.equal(resumed.vectors[side], reference.vectors[side])
        assert torch.equal(resumed.n_tokens[side], reference.n_tokens[side])
    assert not (run_dir / "chunks").exists()
    assert not list(run_dir.rglob(".*.tmp"))


def test_rerun_loads_instead_of_recomputing(llama, corpus, tmp_path):
    extractor = Extractor(llama, ExtractionConfig())
    store = ActivationStore(tmp_path)
    first = store.extract(extractor, corpus, progress=False)
    calls = []
    extractor.run_batch = lambda *a, **k: calls.append(1)  # would break if called
    again = store.extract(extractor, corpus, progress=False)
    assert again.cached and not calls
    for side in corpus.sides:
        assert torch.equal(again.vectors[side], first.vectors[side])
    assert again.get("eng_Latn").shape == (len(extractor.layers), 24, 64)


def test_corrupt_run_directory_is_reported(llama, corpus, tmp_path):
    from probe.errors import StoreError

    store = ActivationStore(tmp_path)
    acts = store.extract(Extractor(llama, ExtractionConfig()), corpus, progress=False)
    (acts.directory / "side.deu_Latn.safetensors").write_bytes(b"garbage")
    with pytest.raises(StoreError, match=r"side\.deu_Latn\.safetensors"):
        store.load(acts.directory)
    (acts.directory / "manifest.json").write_text("{")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.load(acts.directory)
