"""Content-addressed, resumable, verified store of pooled activations (safetensors).

A run's directory is named by a hash of everything that changes the vectors: model identity and
weight/adapter fingerprints, dtype, the sentences, the extraction config. While it runs, finished
batches are written as chunk files (atomically: temporary name, then rename; at least every
``CHUNK_SECONDS``), each holding the global indices of its sentences, so a killed run resumes
with the sentences it had not done. When all are done, the chunks are merged into one file per
side and the manifest is marked complete — last; a rerun with the same key then only loads.

Every tensor file carries the SHA-256 of its tensors in its metadata and the manifest that of
``sentences.json``; both are checked on load. A corrupt or missing chunk is recomputed; a corrupt
or missing merged file makes the whole key recompute (with a one-line notice), never get used.
One process at a time works on a key (a file lock in its directory); a second one waits and
then loads what the first wrote.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .data import ParallelCorpus
from .distributed import Processes
from .errors import StoreError, notice
from .extract import BatchStats, Extractor, SinkRecord
from .files import MANIFEST, atomic_write, atomic_write_text, check_not_a_file

ENGINE_VERSION = 2  # 2: attention-sink exclusion, layer 0 = input of the first block
TEXTS = "sentences.json"
CHUNK_SECONDS = 30.0
SINGLE = Processes()


class CorruptFile(StoreError):
    """A stored file is missing, unreadable or fails its checksum."""


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
    return inputs_key(inputs), inputs


def inputs_key(inputs: dict[str, Any]) -> str:
    """The key of a store entry: SHA-256 of its inputs as sorted JSON (the same after a JSON
    round trip, so a stored manifest's inputs can be checked against its key)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


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


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")  # no copy
    return digest.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> str:
    """Atomically write ``tensors`` with their digest in the metadata; returns the digest."""
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {**metadata, "sha256": tensor_digest(tensors)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return metadata["sha256"]


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a file written by ``save_tensors``, checked against its digest."""
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError, RuntimeError, ValueError) as exc:
        raise CorruptFile(f"{path} is missing or unreadable ({exc})") from None
    if metadata.get("sha256") != tensor_digest(tensors):
        raise CorruptFile(f"{path} fails its checksum (changed after it was written)")
    return tensors, metadata


class ActivationStore:
    """Directory of runs keyed by content; see the module docstring."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        check_not_a_file(self.root, "--store")

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
        chunk_seconds: float = CHUNK_SECONDS,
        processes: Processes = SINGLE,
    ) -> Activations | None:
        """Load the activations of ``corpus`` if stored, else compute what is missing and store.
        A chunk is written every ``chunk_size`` sentences or ``chunk_seconds``, whichever comes
        first. ``on_chunk(number)`` follows every chunk written, ``on_batch(done, total)`` every
        batch. Under several ``processes`` each computes its shard into chunks named by its
        rank; the main one merges and returns the activations, the others return None."""
        key, inputs = cache_key(extractor, corpus)
        directory = self.directory(key)
        lock = None
        if processes.main:  # the main process holds the key for all of its launch
            directory.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(directory / ".lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                notice(f"another process is extracting {directory.name}; waiting for it")
                lock.acquire()
        try:
            return self._extract_locked(key, inputs, directory, extractor, corpus, batch_size,
                                        chunk_size, chunk_seconds, progress, on_chunk, on_batch,
                                        processes)
        finally:
            if lock is not None:
                lock.release()

    def _ready(self, key: str, directory: Path) -> Activations | None:
        """The stored activations when complete and verified; else None, the key reset to an
        unfinished manifest and its chunks checked (a corrupt one removed)."""
        manifest_path = directory / MANIFEST
        if manifest_path.exists():
            manifest = self._read_manifest(directory)
            if manifest.get("key") != key:
                raise StoreError(f"{directory} belongs to another run (key mismatch); remove it")
            if manifest.get("complete"):
                try:
                    return self.load(directory, cached=True)
                except CorruptFile as exc:
                    notice(f"{exc}; recomputing these activations")
                    self._discard_merged(directory, manifest)
        return None

    def _extract_locked(self, key: str, inputs: dict, directory: Path, extractor: Extractor,
                        corpus: ParallelCorpus, batch_size: int, chunk_size: int,
                        chunk_seconds: float, progress: bool, on_chunk: Callable | None,
                        on_batch: Callable | None, processes: Processes) -> Activations | None:
        manifest_path = directory / MANIFEST
        sides = list(corpus.sides.values())
        chunks_dir = directory / "chunks"
        manifest = {"key": key, "inputs": inputs, "complete": False}
        ready = None
        if processes.main:
            ready = self._ready(key, directory)
            if ready is None:
                atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))
                chunks_dir.mkdir(parents=True, exist_ok=True)
                self._done_indices(chunks_dir, clean=True)
        processes.barrier()
        if not processes.main:
            if not self._read_manifest(directory).get("complete"):
                self._extract_shard(directory, extractor, sides, batch_size, chunk_size,
                                    chunk_seconds, False, None, None, processes)
            return None
        if ready is not None:
            return ready
        todo, stats, started, encoded = self._extract_shard(
            directory, extractor, sides, batch_size, chunk_size, chunk_seconds, progress,
            on_chunk, on_batch, processes)
        manifest["extraction"] = {
            "seconds": round(time.perf_counter() - started, 3),
            "sentences_computed": len(todo),
            "processes": processes.world,
            "batch_size": batch_size,
            "device": str(extractor.loaded.device),
            "padding_fraction": round(stats.padding_fraction, 4),
            "truncated": 0 if encoded is None else encoded.truncated,
        }
        total = sum(len(side.sentences) for side in sides)
        sinks, manifest["side_sha256"] = self._merge(directory, extractor, sides, total)
        manifest["sinks"] = sinks.to_dict()
        texts = json.dumps({side.key: list(side.sentences) for side in sides}, ensure_ascii=False)
        atomic_write_text(directory / TEXTS, texts)
        manifest["texts_sha256"] = hashlib.sha256(texts.encode()).hexdigest()
        manifest["complete"] = True
        manifest["layers"] = extractor.layers
        manifest["poolings"] = list(extractor.config.poolings)
        manifest["sides"] = {s.key: {"language": s.language, "group": s.group,
                                     "sentences": len(s.sentences)} for s in sides}
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))
        shutil.rmtree(chunks_dir, ignore_errors=True)
        return self.load(directory)

    def _extract_shard(self, directory: Path, extractor: Extractor, sides: list,
                       batch_size: int, chunk_size: int, chunk_seconds: float, progress: bool,
                       on_chunk: Callable | None, on_batch: Callable | None,
                       processes: Processes) -> tuple[list[int], BatchStats, float, Any]:
        """This process's shard of the sentences no chunk holds yet, into chunks named by its
        rank; all processes wait for each other at the end (the main one then merges)."""
        sentences = [s for side in sides for s in side.sentences]
        chunks_dir = directory / "chunks"
        done = self._done_indices(chunks_dir, clean=False)
        todo = [i for i in range(len(sentences)) if i not in done]
        stats = BatchStats()
        started = time.perf_counter()
        encoded = None
        if todo:
            encoded = extractor.encode(sentences)
            mine = processes.shard(todo, encoded.lengths)
            prefix = f"rank{processes.rank:03d}-"
            chunk_no = max((int(p.stem.rpartition("-")[2])
                            for p in chunks_dir.glob(f"{prefix}*.safetensors")), default=-1) + 1
            buffer_idx: list[int] = []
            buffer_states: list[torch.Tensor] = []
            last_save = time.monotonic()
            total = len(done) + len(mine)
            bar = tqdm(total=total, initial=len(done), unit="sent", disable=not progress,
                       desc=f"extract {extractor.loaded.name}"
                            + (f" (process 1 of {processes.world})" if processes.world > 1 else ""))
            count = len(done)
            extractor.take_sink_record()  # count this run's batches only
            for chosen, states in extractor.iter_batches(encoded, mine, batch_size, stats):
                buffer_idx += chosen
                buffer_states.append(states)
                count += len(chosen)
                bar.update(len(chosen))
                if on_batch is not None:
                    on_batch(count, total)
                if (len(buffer_idx) >= chunk_size or count == total
                        or time.monotonic() - last_save >= chunk_seconds):
                    lengths = torch.tensor([len(encoded.input_ids[i]) for i in buffer_idx])
                    save_tensors(
                        {"index": torch.tensor(buffer_idx), "n_tokens": lengths,
                         "states": torch.cat(buffer_states, dim=2)},
                        chunks_dir / f"{prefix}{chunk_no:05d}.safetensors",
                        {"sinks": json.dumps(extractor.take_sink_record().to_dict())})
                    buffer_idx, buffer_states = [], []
                    last_save = time.monotonic()
                    if on_chunk is not None:
                        on_chunk(chunk_no)
                    chunk_no += 1
            bar.close()
        processes.barrier()
        return todo, stats, started, encoded

    @staticmethod
    def _discard_merged(directory: Path, manifest: dict[str, Any]) -> None:
        """Forget a complete run whose files failed verification, so it is computed again."""
        for key in manifest.get("sides", {}):
            (directory / f"side.{key}.safetensors").unlink(missing_ok=True)
        (directory / TEXTS).unlink(missing_ok=True)
        shutil.rmtree(directory / "chunks", ignore_errors=True)

    @staticmethod
    def _done_indices(chunks_dir: Path, clean: bool = True) -> set[int]:
        """Sentences held by valid chunks; with ``clean`` (the main process, before the others
        read) a chunk that fails its check is removed (recomputed), and so is a stray
        temporary file."""
        done: set[int] = set()
        for path in sorted(chunks_dir.glob("*.safetensors")):
            try:
                tensors, _ = load_tensors(path)
                done.update(tensors["index"].tolist())
            except (CorruptFile, KeyError) as exc:
                if clean:
                    notice(f"{exc}; its sentences are recomputed")
                    path.unlink(missing_ok=True)
        if clean:
            for stray in chunks_dir.glob(".*.tmp"):  # a write cut short by a kill
                stray.unlink(missing_ok=True)
        return done

    def _merge(self, directory: Path, extractor: Extractor, sides: list, total: int
               ) -> tuple[SinkRecord, dict[str, str]]:
        """Chunks -> one verified file per side; returns the merged sink record of all chunks
        and each side file's digest (the manifest records them: a side file of another entry,
        valid on its own, is then found on load)."""
        chunks = sorted((directory / "chunks").glob("*.safetensors"))
        if not chunks:
            raise StoreError(f"{directory}: no chunks to merge; remove the directory and rerun")
        sinks = extractor.new_sink_record()
        states = n_tokens = seen = None
        for path in chunks:
            tensors, metadata = load_tensors(path)
            if states is None:
                p, l_, _, d = tensors["states"].shape
                states = torch.empty(p, l_, total, d)
                n_tokens = torch.zeros(total, dtype=torch.long)
                seen = torch.zeros(total, dtype=torch.bool)
            index = tensors["index"]
            states[:, :, index] = tensors["states"]
            n_tokens[index] = tensors["n_tokens"]
            seen[index] = True
            sinks.merge(SinkRecord.from_dict(json.loads(metadata.get("sinks", "{}"))))
        if not bool(seen.all()):
            raise StoreError(f"{directory}: {int((~seen).sum())} sentences missing after extraction")
        meta = {"layers": json.dumps(extractor.layers),
                "poolings": json.dumps(list(extractor.config.poolings))}
        start, digests = 0, {}
        for side in sides:
            stop = start + len(side.sentences)
            tensors = {pooling: states[p, :, start:stop]
                       for p, pooling in enumerate(extractor.config.poolings)}
            tensors["n_tokens"] = n_tokens[start:stop]
            digests[side.key] = save_tensors(tensors, directory / f"side.{side.key}.safetensors",
                                             meta)
            start = stop
        return sinks, digests

    def verified(self, key: str, data: str, model: dict[str, Any], owner: str) -> Activations:
        """The complete entry of ``key`` (or of the key it is the 24-character prefix of, for
        runs that recorded only their entry's name), loaded only after its manifest is checked:
        it records that key, its inputs hash to it, and they hold data fingerprint ``data`` and
        model identity ``model`` (``owner``'s). A ``StoreError`` naming both otherwise."""
        directory = self.directory(key)
        manifest = self._read_manifest(directory)
        stored = str(manifest.get("key", ""))
        inputs = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
        problems = []
        if not stored.startswith(key):
            problems.append(f"its key {stored[:12]}… is not {key[:12]}…")
        elif inputs_key(inputs) != stored:
            problems.append("its inputs do not hash to its key (changed after it was written)")
        if inputs.get("data") != data:
            problems.append(f"its data fingerprint {str(inputs.get('data'))[:12]}… is not "
                            f"{data[:12]}…")
        if not _same(inputs.get("model"), model):
            problems.append("its model identity differs")
        if problems:
            raise StoreError(f"the activations {directory} are not those of {owner}: "
                             + "; ".join(problems))
        return self.load(directory)

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
        """Read a complete run directory back, verifying every file (``CorruptFile`` if one
        fails: rerun the run command to recompute)."""
        directory = Path(directory)
        manifest = self._read_manifest(directory)
        engine = manifest.get("inputs", {}).get("engine")
        if engine != ENGINE_VERSION:
            raise StoreError(f"{directory} was written by engine version {engine}; this is "
                             f"version {ENGINE_VERSION}, whose states differ: rerun the command "
                             "to recompute them")
        if not manifest.get("complete"):
            raise StoreError(f"{directory} is an unfinished run; rerun the same command to resume")
        vectors, n_tokens = {}, {}
        recorded = manifest.get("side_sha256")  # absent in entries written before it was
        for key in manifest["sides"]:
            path = directory / f"side.{key}.safetensors"
            tensors, metadata = load_tensors(path)
            if recorded is not None and metadata.get("sha256") != recorded.get(key):
                raise CorruptFile(f"{path} is not the file this entry wrote (its digest differs "
                                  "from the manifest's: copied from another entry?)")
            try:
                vectors[key] = torch.stack([tensors[p] for p in manifest["poolings"]])
                n_tokens[key] = tensors["n_tokens"]
            except KeyError as exc:
                raise CorruptFile(f"side {key} lacks tensor {exc}") from None
        path = directory / TEXTS
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError:
            raise CorruptFile(f"{path} is missing") from None
        if hashlib.sha256(raw.encode()).hexdigest() != manifest.get("texts_sha256"):
            raise CorruptFile(f"{path} fails its checksum (changed after it was written)")
        texts = json.loads(raw)
        return Activations(manifest["key"], directory, manifest["layers"], manifest["poolings"],
                           vectors, n_tokens, manifest, cached, texts)
