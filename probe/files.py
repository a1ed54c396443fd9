"""Atomic file writes: a temporary file beside the target, then a rename. A failed write (a full
disk, a permission error) removes the temporary file and raises one clear ``StoreError``; the
target is then either its old self or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import StoreError

MANIFEST = "manifest.json"  # written last: a directory that holds it is complete


def _file_mode() -> int:
    """What a plainly created file gets: 0666 less the process's umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


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
        os.chmod(tmp, _FILE_MODE)  # mkstemp's 0600 would make every output private
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


def check_not_a_file(directory: Path, option: str = "--output (or --name)") -> None:
    """``directory``, or the first of its parents that exists, is a directory (the error names
    the ``option`` that chose it)."""
    for path in (directory, *Path(directory).parents):
        if path.exists():
            if not path.is_dir():
                raise StoreError(f"{path} is a file, not a directory; choose another {option}")
            return


def check_output_file(path: Path, earlier: Callable[[Path], bool], what: str,
                      example: str) -> None:
    """``--output`` names one file to write: not a directory, not below a file, and not an
    existing file (or link) unless ``earlier(path)`` says it is an earlier ``what`` of the same
    command, which is replaced; anything else (a run's manifest, data) is never overwritten."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"--output {path} is a directory; name the {what} to write (e.g. "
                         f"{path / example})")
    check_not_a_file(path.parent)
    if (path.exists() or path.is_symlink()) and not earlier(path):
        raise StoreError(f"--output {path} exists and is no earlier {what}; it is not "
                         "overwritten: choose another --output")


UNFINISHED = ".unfinished"  # in a run directory while a command writes it; holds its kind
REWRITTEN = ("figures", "mexa_export")  # a run's own sub-directories, rewritten with it


def start_run_directory(path: Path, keep: Iterable[str] = ()) -> Path:
    """Create a run directory to (re)write (its writer checked it is one of its kind, or new):
    the old manifest goes first, then every other file of an earlier run and its
    ``REWRITTEN`` sub-directories, but the writer's lock and marker and ``keep`` (e.g. a
    checkpoint the run reuses); other sub-directories (an activation store) stay. So a file
    only some settings write is never left beside a new manifest, as if the new run had made
    it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).unlink(missing_ok=True)
    spared = {WRITER_LOCK, UNFINISHED, *keep}
    for entry in path.iterdir():
        if entry.name in spared:
            continue
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink(missing_ok=True)
        elif entry.name in REWRITTEN:
            shutil.rmtree(entry)
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
