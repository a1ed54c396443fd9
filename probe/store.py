"""Content-addressed, resumable store of pooled activations (safetensors).

A run's directory is named by a hash of everything that changes the vectors: model identity and
weight/adapter fingerprints, dtype, the sentences, the extraction config. While it runs, finished
batches are written as chunk files (atomically: temporary name, then rename), each holding the
global indices of its sentences, so a killed run resumes with the sentences it had not done. When
all are done, the chunks are merged into one file per side and the manifest is marked complete;
a rerun with the same key then only loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .data import ParallelCorpus
from .errors import StoreError
from .extract import BatchStats, Extractor
from .models import atomic_write_text

ENGINE_VERSION = 1
MANIFEST = "manifest.json"
TEXTS = "sentences.json"


def cache_key(extractor: Extractor, corpus: ParallelCorpus) -> tuple[str, dict[str, Any]]:
    """Hash of (engine, model identity, dtype, data, sides, extraction config) and its inputs."""
    config = asdict(extractor.config)
    config["layers"] = extractor.layers
    inputs = {
        "engine": ENGINE_VERSION,
        "model": extractor.loaded.identity,
        "dtype": str(extractor.loaded.dtype).removeprefix("torch."),
        "data": corpus.fingerprint(),
        "sides": {key: side.language for key, side in corpus.sides.items()},
        "config": config,
    }
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), inputs


@dataclass
class Activations:
    """Pooled states per side: ``vectors[side]`` is float32 (poolings, layers, sentences, hidden)."""

    key: str
    directory: Path
    layers: list[int]
    poolings: list[str]
    vectors: dict[str, torch.Tensor]
    n_tokens: dict[str, torch.Tensor]
    manifest: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    texts: dict[str, list[str]] = field(default_factory=dict)

    def get(self, side: str, pooling: str | None = None) -> torch.Tensor:
        """(layers, sentences, hidden) of one side and pooling (the first pooling by default)."""
        index = self.poolings.index(pooling) if pooling else 0
        return self.vectors[side][index]


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


class ActivationStore:
    """Directory of runs keyed by content; see the module docstring."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def directory(self, key: str) -> Path:
        return self.root / key[:24]

    def extract(
        self,
        extractor: Extractor,
        corpus: ParallelCorpus,
        batch_size: int = 32,
        chunk_size: int = 512,
        progress: bool = True,
        on_chunk: Callable[[int], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> Activations:
        """Load the activations of ``corpus`` if stored, else compute what is missing and store.
        ``on_chunk(number)`` follows every chunk written, ``on_batch(done, total)`` every batch."""
        key, inputs = cache_key(extractor, corpus)
        directory = self.directory(key)
        manifest_path = directory / MANIFEST
        if manifest_path.exists():
            manifest = self._read_manifest(directory)
            if manifest.get("key") != key:
                raise StoreError(f"{directory} belongs to another run (key mismatch); remove it")
            if manifest.get("complete"):
                return self.load(directory, cached=True)
        else:
            manifest = {"key": key, "inputs": inputs, "complete": False}
            atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))

        sides = list(corpus.sides.values())
        sentences = [s for side in sides for s in side.sentences]
        chunks_dir = directory / "chunks"
        chunks_dir.mkdir(parents=True, exist_ok=True)
        done = self._done_indices(chunks_dir)
        todo = [i for i in range(len(sentences)) if i not in done]
        stats = BatchStats()
        started = time.perf_counter()
        if todo:
            encoded = extractor.encode(sentences)
            chunk_no = len(list(chunks_dir.glob("*.safetensors")))
            buffer_idx: list[int] = []
            buffer_states: list[torch.Tensor] = []
            bar = tqdm(total=len(sentences), initial=len(done), unit="sent", disable=not progress,
                       desc=f"extract {extractor.loaded.name}")
            for chosen, states in extractor.iter_batches(encoded, todo, batch_size, stats):
                buffer_idx += chosen
                buffer_states.append(states)
                bar.update(len(chosen))
                if on_batch is not None:
                    on_batch(bar.n, len(sentences))
                if len(buffer_idx) >= chunk_size or len(done) + len(buffer_idx) == len(sentences):
                    lengths = torch.tensor([len(encoded.input_ids[i]) for i in buffer_idx])
                    _save_atomic(
                        {"index": torch.tensor(buffer_idx), "n_tokens": lengths,
                         "states": torch.cat(buffer_states, dim=2)},
                        chunks_dir / f"{chunk_no:05d}.safetensors", {})
                    done.update(buffer_idx)
                    buffer_idx, buffer_states = [], []
                    if on_chunk is not None:
                        on_chunk(chunk_no)
                    chunk_no += 1
            bar.close()
        manifest["extraction"] = {
            "seconds": round(time.perf_counter() - started, 3),
            "sentences_computed": len(todo),
            "batch_size": batch_size,
            "device": str(extractor.loaded.device),
            "padding_fraction": round(stats.padding_fraction, 4),
            "truncated": 0 if not todo else encoded.truncated,
        }
        self._merge(directory, extractor, sides, len(sentences))
        atomic_write_text(directory / TEXTS, json.dumps(
            {side.key: list(side.sentences) for side in sides}, ensure_ascii=False))
        manifest["complete"] = True
        manifest["layers"] = extractor.layers
        manifest["poolings"] = list(extractor.config.poolings)
        manifest["sides"] = {s.key: {"language": s.language, "group": s.group,
                                     "sentences": len(s.sentences)} for s in sides}
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))
        shutil.rmtree(chunks_dir, ignore_errors=True)
        return self.load(directory)

    @staticmethod
    def _done_indices(chunks_dir: Path) -> set[int]:
        done: set[int] = set()
        for path in sorted(chunks_dir.glob("*.safetensors")):
            try:
                with safe_open(str(path), "pt") as handle:
                    done.update(handle.get_tensor("index").tolist())
            except Exception:
                path.unlink()
        return done

    def _merge(self, directory: Path, extractor: Extractor, sides: list, total: int) -> None:
        chunks = sorted((directory / "chunks").glob("*.safetensors"))
        if not chunks:
            return  # already merged by an earlier run that died before writing the manifest
        first_state = safe_open(str(chunks[0]), "pt").get_slice("states").get_shape()
        states = torch.empty(first_state[0], first_state[1], total, first_state[3])
        n_tokens = torch.zeros(total, dtype=torch.long)
        seen = torch.zeros(total, dtype=torch.bool)
        for path in chunks:
            with safe_open(str(path), "pt") as handle:
                index = handle.get_tensor("index")
                states[:, :, index] = handle.get_tensor("states")
                n_tokens[index] = handle.get_tensor("n_tokens")
                seen[index] = True
        if not bool(seen.all()):
            raise StoreError(f"{directory}: {int((~seen).sum())} sentences missing after extraction")
        meta = {"layers": json.dumps(extractor.layers),
                "poolings": json.dumps(list(extractor.config.poolings))}
        start = 0
        for side in sides:
            stop = start + len(side.sentences)
            tensors = {pooling: states[p, :, start:stop]
                       for p, pooling in enumerate(extractor.config.poolings)}
            tensors["n_tokens"] = n_tokens[start:stop]
            _save_atomic(tensors, directory / f"side.{side.key}.safetensors", meta)
            start = stop

    @staticmethod
    def _read_manifest(directory: Path) -> dict[str, Any]:
        path = directory / MANIFEST
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise StoreError(f"{directory} holds no {MANIFEST}: not an activation run") from None
        except ValueError as exc:
            raise StoreError(f"{path} is not valid JSON ({exc}); the run is corrupt") from None

    def load(self, directory: Path | str, cached: bool = False) -> Activations:
        """Read a complete run directory back."""
        directory = Path(directory)
        manifest = self._read_manifest(directory)
        if not manifest.get("complete"):
            raise StoreError(f"{directory} is an unfinished run; rerun the same command to resume")
        vectors, n_tokens = {}, {}
        for key in manifest["sides"]:
            path = directory / f"side.{key}.safetensors"
            try:
                with safe_open(str(path), "pt") as handle:
                    vectors[key] = torch.stack([handle.get_tensor(p) for p in manifest["poolings"]])
                    n_tokens[key] = handle.get_tensor("n_tokens")
            except (OSError, KeyError, RuntimeError, SafetensorError) as exc:
                raise StoreError(f"{path} is missing or unreadable: {exc}") from None
        try:
            texts = json.loads((directory / TEXTS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            texts = {}  # duplicates then count as distinct; neighbours show indices only
        return Activations(manifest["key"], directory, manifest["layers"], manifest["poolings"],
                           vectors, n_tokens, manifest, cached, texts)
