"""Strict readers of user files: the bytes of a file, its lines, JSONL values and CSV rows,
each bad input refused with one message naming its own file (and line).

Every reader goes through ``read_bytes``: the path must be a regular file — a character or block
device (``/dev/zero``), a FIFO, a socket or a directory is refused before anything is read, so
nothing fills memory or waits for a writer — no larger than ``MAX_TEXT_BYTES``. Lines are split on
line breaks only, ``\\n`` and ``\\r\\n``; never on the other characters ``str.splitlines`` breaks
at (U+2028, U+2029, ``\\x85``, ``\\x0b``, ``\\x0c``, a lone ``\\r``), which may sit inside a
sentence or a JSON string.

The formats built on these: plain text lines (``read_lines``), JSONL (``read_jsonl``), CSV tables
with a header (``read_csv_rows``); parallel TSV/JSONL (``data.load_tsv``, ``data.load_jsonl``),
Alpaca records (``train.records.read_alpaca``), BUCC and gold pairs
(``mining_run.read_sentences``, ``mining_run.read_gold``), sweep score tables
(``train.sweep.read_points``), lens word lists (``latent.load_words``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from .errors import DataError

MAX_TEXT_BYTES = 1 << 30  # 1 GiB: the largest text input any reader takes


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    for test, name in ((stat.S_ISREG, None), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_file(path: Path, cap: int | None = None) -> int:
    """The size of ``path``, a regular file of at most ``cap`` bytes (default ``MAX_TEXT_BYTES``);
    anything else is an error naming the file, decided from ``stat`` before any open."""
    cap = MAX_TEXT_BYTES if cap is None else cap
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    kind = _kind(info.st_mode)
    if kind is not None:
        raise DataError(f"{path} is {kind}, not a regular file; give a file")
    if info.st_size > cap:
        exact = f" ({info.st_size} bytes)" if info.st_size >= 1 << 10 else ""
        raise DataError(f"{path} is {_size(info.st_size)}{exact}, over the {_size(cap)} cap on "
                        "text inputs (readers.MAX_TEXT_BYTES)")
    return info.st_size


def read_bytes(path: Path, cap: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes (``check_file``); the file is opened
    non-blocking and checked again after opening, so a path swapped for a FIFO cannot hang."""
    cap = MAX_TEXT_BYTES if cap is None else cap
    check_file(path, cap)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        kind = _kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise DataError(f"{path} is {kind}, not a regular file; give a file")
        data = handle.read(cap + 1)
    if len(data) > cap:  # grew since the stat
        raise DataError(f"{path} is over the {_size(cap)} cap on text inputs "
                        "(readers.MAX_TEXT_BYTES)")
    return data


def numbered_lines(path: Path, cap: int | None = None) -> list[tuple[int, str]]:
    """(line number from 1, text) of a UTF-8 file split on ``\\n`` and ``\\r\\n`` only; a BOM
    is dropped, lines are not stripped; an undecodable line is an error naming file and line."""
    chunks = read_bytes(path, cap).split(b"\n")
    if chunks[-1] == b"":
        chunks.pop()
    lines = []
    for number, chunk in enumerate(chunks, 1):
        try:
            line = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid UTF-8 (byte "
                            f"0x{chunk[exc.start]:02x} at column {exc.start + 1})") from None
        line = line.removesuffix("\r")
        lines.append((number, line.removeprefix("\ufeff") if number == 1 else line))
    return lines


def read_lines(path: Path, allow_empty: bool = False) -> list[str]:
    """Stripped lines of a UTF-8 text file; an undecodable line is an error naming file and line,
    and so is an empty line or file unless ``allow_empty`` (translation pairs drop them later)."""
    lines = []
    for number, line in numbered_lines(path):
        if not line.strip() and not allow_empty:
            raise DataError(f"{path}, line {number}: empty line (every line must hold a sentence)")
        lines.append(line.strip())
    if not lines and not allow_empty:
        raise DataError(f"{path} is empty")
    return lines


class _RepeatedKey(ValueError):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique (``json`` would silently keep the last of two)."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen[key] = value
    return seen


def _loads(text: str, where: str) -> Any:
    """One JSON value; invalid JSON or a key twice in one object is an error naming ``where``."""
    try:
        return json.loads(text, object_pairs_hook=_unique_object)
    except _RepeatedKey as exc:
        raise DataError(f"{where}: key {exc.args[0]!r} appears twice in one object") from None


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSONL file; a line that is not JSON, or
    an object with a key twice, is an error naming file and line (raw control characters such
    as ``\\x0b`` inside a string are not JSON: write them escaped, as every JSON writer does)."""
    values = []
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            values.append((number, _loads(line, f"{path}, line {number}")))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg}, column "
                            f"{exc.colno})") from None
    return values


def read_json(path: Path) -> Any:
    """The one JSON value of a file (through ``read_bytes``); an error names file and line."""
    try:
        return _loads(read_bytes(path).decode("utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg}, column "
                        f"{exc.colno})") from None


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row)]) of a comma-separated file with a header; a row whose field
    count differs from the header's, or a header naming a column twice, is an error."""
    lines = numbered_lines(path)
    if not lines:
        raise DataError(f"{path} is empty")
    # csv sees the same records as numbered_lines (a quoted field may span lines)
    text = "\n".join(line for _, line in lines) + "\n"
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise DataError(f"{path}, line 1: not a CSV header ({exc})") from None
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DataError(f"{path}, line 1: column(s) {', '.join(twice)} named twice")
    rows = []
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}, line {start}: not CSV ({exc})") from None
        if not fields or not any(f.strip() for f in fields):
            continue  # a blank line
        if len(fields) != len(header):
            raise DataError(f"{path}, line {start}: {len(fields)} fields, the header has "
                            f"{len(header)}")
        rows.append((start, dict(zip(header, fields, strict=True))))
    return header, rows


def finite_number(text: str, where: str, column: str) -> float | None:
    """A CSV cell as a finite float; None for an empty cell; text, ``nan`` or ``inf`` is an
    error naming ``where`` (file and line) and the column."""
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {column} is {text.strip()[:40]!r}, not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {column} is {text.strip()!r}, not a finite number")
    return value
