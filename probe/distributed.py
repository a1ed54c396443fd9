"""Several processes on one extraction, launched by ``accelerate launch`` or ``torchrun`` (no
launcher of our own): which process this is, a barrier, and the length-balanced shards.

Every process computes the same key, reads the same finished chunks and deals the same
remaining sentences into shards: sentences sorted by length, longest first, each given to the
process with the fewest tokens so far (so every process gets about the same work, not the same
count). Only the main process prints, merges and writes the run directory.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import DataError


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    state: Any = None  # accelerate's PartialState when there are several

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def device(self, requested: str) -> str:
        """``auto`` under several processes: this process's own GPU (``cuda:LOCAL_RANK``)."""
        if requested == "auto" and self.world > 1 and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested

    def check(self, sentences: int) -> None:
        if self.world > sentences:
            raise DataError(f"{self.world} processes for {sentences} sentences: every process "
                            "needs at least one; launch fewer processes")

    def shard(self, indices: Sequence[int], lengths: Sequence[int]) -> list[int]:
        """This process's share of ``indices`` (``lengths[i]``: tokens of sentence i)."""
        if self.world == 1:
            return list(indices)
        order = sorted(indices, key=lambda i: (-lengths[i], i))
        loads = [(0, rank) for rank in range(self.world)]
        mine = []
        for i in order:
            load, rank = heapq.heappop(loads)
            if rank == self.rank:
                mine.append(i)
            heapq.heappush(loads, (load + lengths[i], rank))
        return sorted(mine)


def launched_world() -> int:
    """How many processes the launcher started (1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def current() -> Processes:
    """This process under ``accelerate launch`` / ``torchrun`` (gloo on CPU, NCCL on GPUs)."""
    if launched_world() == 1:
        return Processes()
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state.local_process_index, state)
