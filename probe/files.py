"""Atomic file writes: a temporary file beside the target, then a rename. A failed write (a full
disk, a permission error) removes the temporary file and raises one clear ``StoreError``; the
target is then either its old self or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import StoreError

MANIFEST = "manifest.json"  # written last: a directory that holds it is complete


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)`` and rename the result to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise StoreError(f"could not write {path}: {exc.strerror or exc}") from None
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StoreError(f"could not write {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def start_run_directory(path: Path) -> Path:
    """Create a run directory to (re)write, its old manifest removed first: until the new one
    is written last, the directory never looks complete with old and new files mixed."""
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_directory(path: Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside ``path``, renamed to ``path`` when the block ends
    without an error (an existing ``path`` is removed first if ``replace``); on an error the
    staging directory is removed and ``path`` is left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    except OSError as exc:
        raise StoreError(f"could not write {path}: {exc.strerror or exc}") from None
    try:
        yield staging
        if replace and path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except OSError as exc:
        raise StoreError(f"could not write {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


WRITER_LOCK = ".writer.lock"  # in a run or training directory while one process writes it


@contextlib.contextmanager
def writer_lock(directory: Path) -> Iterator[Path]:
    """Hold ``directory``'s writer lock for the block: a second process that asks for it while
    it is held gets one clear ``StoreError`` at once (it never waits and never writes). The
    directory is created if needed; an existing file at its path is an error."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"{directory} is a file, not a directory; choose another --output")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"could not create {directory}: {exc.strerror or exc}") from None
    lock = FileLock(str(directory / WRITER_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise StoreError(f"another layer-analysis process is writing {directory}; wait for it "
                         "to finish (or stop it) and run again") from None
    try:
        yield directory
    finally:
        lock.release()
