"""User-facing errors (each carries one clear message and the exit code the CLI returns) and
notices (one line on stderr for what the user should know but that stops nothing)."""

import os
import sys


def notice(message: str) -> None:
    """One line on stderr (stdout stays the results); under several processes, from the main
    one only."""
    if os.environ.get("RANK", "0") == "0":
        print(f"note: {message}", file=sys.stderr, flush=True)


class ProbeError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""

    exit_code = 2


class DataError(ProbeError):
    """A parallel-data file or selection is invalid."""


class ModelError(ProbeError):
    """A model cannot be found, loaded or probed."""


class StoreError(ProbeError):
    """The activation store holds something unexpected."""
