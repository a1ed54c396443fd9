"""Cache keys, atomic chunks, resume after a kill, and cached reruns."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.errors import StoreError
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.models import load_model
from layer_analysis.probe.store import ActivationStore, cache_key


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
    from layer_analysis.probe.errors import StoreError

    store = ActivationStore(tmp_path)
    acts = store.extract(Extractor(llama, ExtractionConfig()), corpus, progress=False)
    (acts.directory / "side.deu_Latn.safetensors").write_bytes(b"garbage")
    with pytest.raises(StoreError, match=r"side\.deu_Latn\.safetensors"):
        store.load(acts.directory)
    (acts.directory / "manifest.json").write_text("{")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.load(acts.directory)


def test_sink_settings_change_the_key(llama, corpus):
    keys = {cache_key(Extractor(llama, config), corpus)[0] for config in (
        ExtractionConfig(), ExtractionConfig(sinks="keep"), ExtractionConfig(sink_ratio=20.0))}
    assert len(keys) == 3


def _flip_last_bytes(path, count: int = 4) -> None:
    data = bytearray(path.read_bytes())
    for i in range(1, count + 1):
        data[-i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_changed_bytes_nan_bytes_or_lost_texts_are_recomputed_never_used(llama, corpus, tmp_path,
                                                                         capsys):
    import numpy as np

    from layer_analysis.probe.store import CorruptFile

    extractor = Extractor(llama, ExtractionConfig())
    store = ActivationStore(tmp_path)
    reference = store.extract(extractor, corpus, progress=False)
    side = reference.directory / "side.deu_Latn.safetensors"
    nan = np.float32("nan").tobytes()
    for damage in (lambda: _flip_last_bytes(side),
                   lambda: side.write_bytes(side.read_bytes()[:-4] + nan),
                   lambda: (reference.directory / "sentences.json").unlink()):
        damage()
        with pytest.raises(CorruptFile):
            store.load(reference.directory)
        again = store.extract(extractor, corpus, progress=False)
        assert not again.cached and "recomputing" in capsys.readouterr().err
        for key in corpus.sides:
            assert torch.equal(again.vectors[key], reference.vectors[key])


def test_a_side_file_of_another_entry_is_found_and_recomputed(llama, corpus, tmp_path, capsys):
    """Each side file is valid on its own; copied from another entry (another model's states of
    the same sentences) it must not be read as this entry's — the manifest records each file's
    digest (a hostile user's copy gave another model's P@1 with exit 0)."""
    import shutil

    from layer_analysis.probe.store import CorruptFile

    store = ActivationStore(tmp_path)
    mean = store.extract(Extractor(llama, ExtractionConfig()), corpus, progress=False)
    last = store.extract(Extractor(llama, ExtractionConfig(poolings=("last", "mean"))), corpus,
                         progress=False)
    side = "side.deu_Latn.safetensors"
    shutil.copy(last.directory / side, mean.directory / side)
    with pytest.raises(CorruptFile, match="not the file this entry wrote"):
        store.load(mean.directory)
    again = store.extract(Extractor(llama, ExtractionConfig()), corpus, progress=False)
    assert not again.cached and "recomputing" in capsys.readouterr().err
    assert torch.equal(again.vectors["deu_Latn"], mean.vectors["deu_Latn"])


def test_a_corrupt_chunk_is_recomputed_on_resume(llama, corpus, tmp_path, capsys):
    extractor = Extractor(llama, ExtractionConfig())
    reference = ActivationStore(tmp_path / "a").extract(extractor, corpus, progress=False)
    store = ActivationStore(tmp_path / "b")

    def kill(chunk_no: int) -> None:
        if chunk_no == 1:
            raise Killed

    with pytest.raises(Killed):
        store.extract(extractor, corpus, batch_size=4, chunk_size=8, progress=False, on_chunk=kill)
    chunk = next((tmp_path / "b").glob("*/chunks/rank000-00000.safetensors"))
    _flip_last_bytes(chunk)
    resumed = store.extract(extractor, corpus, batch_size=4, chunk_size=8, progress=False)
    assert "recomputed" in capsys.readouterr().err
    assert resumed.manifest["extraction"]["sentences_computed"] == len(corpus) - 8
    for key in corpus.sides:  # batches differ from the reference's: equal up to rounding
        torch.testing.assert_close(resumed.vectors[key], reference.vectors[key], rtol=1e-5,
                                   atol=1e-6)


def test_chunks_are_written_at_least_every_chunk_seconds(llama, corpus, tmp_path):
    chunks = []
    ActivationStore(tmp_path).extract(Extractor(llama, ExtractionConfig()), corpus, batch_size=8,
                                      chunk_size=10_000, chunk_seconds=0.0, progress=False,
                                      on_chunk=chunks.append)
    assert chunks == list(range(len(corpus) // 8))  # one chunk per batch, not one at the end


def test_two_runs_on_one_key_share_the_work(llama, corpus, tmp_path):
    import threading

    extractor = Extractor(llama, ExtractionConfig())
    store = ActivationStore(tmp_path)
    results, errors = [], []

    def run() -> None:
        try:
            results.append(store.extract(Extractor(llama, ExtractionConfig()), corpus,
                                         batch_size=2, chunk_size=4, progress=False))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(r.cached for r in results) == [False, True]  # one computed, one loaded
    for key in corpus.sides:
        assert torch.equal(results[0].vectors[key], results[1].vectors[key])
    assert store.extract(extractor, corpus, progress=False).cached


def test_a_full_disk_leaves_no_temporary_files_and_no_complete_run(llama, corpus, tmp_path,
                                                                   monkeypatch):
    import errno
    import json

    from layer_analysis.probe import store as store_module
    from layer_analysis.probe.errors import StoreError

    real_save = store_module.save_file
    calls = []

    def save_until_full(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) > 2:
            real_save(tensors, filename, metadata=metadata)  # part of the file lands, then:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(store_module, "save_file", save_until_full)
    store = ActivationStore(tmp_path)
    with pytest.raises(StoreError, match="No space left on device"):
        store.extract(Extractor(llama, ExtractionConfig()), corpus, batch_size=4, chunk_size=4,
                      progress=False)
    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert not list(run_dir.rglob("*.tmp"))
    assert not json.loads((run_dir / "manifest.json").read_text())["complete"]
    monkeypatch.setattr(store_module, "save_file", real_save)
    resumed = store.extract(Extractor(llama, ExtractionConfig()), corpus, batch_size=4,
                            chunk_size=4, progress=False)
    assert resumed.manifest["extraction"]["sentences_computed"] == len(corpus) - 8


def test_writer_lock_refuses_a_second_writer_and_a_file(tmp_path):
    from layer_analysis.probe.files import writer_lock

    run = tmp_path / "run"
    busy = "another layer-analysis process is writing"
    with writer_lock(run), pytest.raises(StoreError, match=busy), writer_lock(run):
        pass
    with writer_lock(run):  # released: a later writer gets it
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"), writer_lock(tmp_path / "file"):
        pass
