"""Data-parallel training across the processes ``torchrun`` starts (DistributedDataParallel).

Under ``torchrun --nproc-per-node N -m scalelib sweep ...`` every process runs the same sweep.
Rank 0 makes the decisions that touch shared files (which runs are finished, which run it may
claim) and tells the others; every rank trains each run on its shard of every batch; rank 0
alone writes checkpoints, curves and results rows.

How a step is split: every rank draws the same global batch and the same training mask (the
same seeds), keeps a contiguous shard of its cells (:meth:`ProcessGroup.shard`), and divides
its summed squared error by ``masked positions of the whole batch / world size``. DDP averages
the gradients over ranks, so a step equals the one-process step on the whole batch, up to
floating-point rounding. Validation and test passes are sharded the same way and their sums
added over ranks, so every rank sees the same scores and stops at the same step. Dropout
draws are the one thing that differ from one process: each rank seeds its own.

Without torchrun (no ``WORLD_SIZE`` above 1 in the environment) everything here is the
identity of a single process.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from scalelib.hardware import resolve_device
from scalelib.locks import file_lock

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the data-parallel processes of a run.

    Parameters
    ----------
    rank
        Position among the processes (0 is the one that writes).
    world_size
        Number of processes.
    local_rank
        Position among the processes on this machine (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0

    def shard(self, n_rows: int) -> slice:
        """The contiguous rows of an ``n_rows`` batch this rank takes (all of them in one
        process; shards differ in length by at most one row)."""
        return slice(n_rows * self.rank // self.world_size,
                     n_rows * (self.rank + 1) // self.world_size)

    def device(self, device: torch.device) -> torch.device:
        """``device``, with a bare ``cuda`` narrowed to this process's GPU."""
        if device.type == "cuda" and self.world_size > 1 and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def data_parallel(self, model: torch.nn.Module, seed: int) -> torch.nn.Module:
        """``model`` wrapped in DDP, and this rank's own dropout stream seeded from ``seed``
        (in one process: ``model`` itself, and the random state left alone).

        Parameters
        ----------
        model
            The model, already on its device and initialised identically on every rank.
        seed
            The run seed.
        """
        if self.world_size == 1:
            return model
        torch.manual_seed(seed * self.world_size + self.rank)
        device = next(model.parameters()).device
        device_ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value added over all ranks (float64; returned as given in one process)."""
        if self.world_size == 1:
            return values
        totals = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(totals)
        return tuple(totals.tolist())

    def from_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` run on rank 0 only and its (picklable) result given to every rank."""
        if self.world_size == 1:
            return compute()
        box = [compute() if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    @contextlib.contextmanager
    def lock(self, path: str | Path, *, wait: bool = True) -> Iterator[bool]:
        """The whole group holds the file lock at ``path``: rank 0 takes it (see
        :func:`scalelib.locks.file_lock`) and every rank learns whether it got it."""
        if self.world_size == 1:
            with file_lock(path, wait=wait) as held:
                yield held
            return
        with file_lock(path, wait=wait) if self.is_main else contextlib.nullcontext() as held:
            yield self.from_main(lambda: held)

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size > 1:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        backend = dist.get_backend()
        return torch.device("cuda", self.local_rank) if backend == "nccl" else torch.device("cpu")


SINGLE_PROCESS = ProcessGroup()


def current() -> ProcessGroup:
    """The process group this process belongs to (a single process outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE_PROCESS
    return ProcessGroup(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def launched_by_torchrun() -> bool:
    """Whether the environment asks for more than one process (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def joined(device_name: str = "auto") -> Iterator[ProcessGroup]:
    """Join the process group ``torchrun`` set up for the ``with`` block (gloo on CPUs, NCCL
    on GPUs) and leave it afterwards; a single process joins nothing.

    Ranks other than 0 print nothing to stdout inside the block (rank 0 speaks for all).

    Parameters
    ----------
    device_name
        The runs' ``--device`` (``auto``, ``cpu``, ``cuda``...), which picks the backend.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield current()
        return
    on_gpu = resolve_device(device_name).type == "cuda"
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if on_gpu else "gloo")
    group = current()
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(
                sys.stdout if group.is_main else sink):
            yield group
    finally:
        dist.destroy_process_group()
