"""A sweep split between several processes on this machine: ``--workers N``.

Small models do not keep several cores busy: their steps are many small tensor operations, and
two threads on two cores are slower per step than one (threads wait on each other, worse on a
shared machine). Running N processes of one thread each, every process training whole runs,
uses the cores instead. :func:`run_with_workers` starts N - 1 worker processes and works as the
N-th itself (``python -m scalelib.workers``, the runs passed as JSON on its input); all of them run :func:`scalelib.sweep.run_sweep` on the same runs and sweep
directory, whose per-run claims give each run to exactly one process (and whose table lock
keeps every row), so results are those of a one-process sweep. The runs are offered longest
first (training FLOPs times budget) so that no long run starts last while the others idle.

Workers reopen the datasets from their directories (a dataset never travels in a pickle).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from scalelib.config import ModelSize, TrainConfig
from scalelib.data.store import ExpressionDataset
from scalelib.errors import ScalelibError
from scalelib.model import training_flops_per_cell
from scalelib.sweep import RunSpec, SweepCallbacks, run_sweep


@dataclass(frozen=True)
class WorkerRun:
    """What a worker needs to plan a run again: its dataset's directory instead of its data."""

    dataset_path: str
    subsample: str
    size: ModelSize
    seed: int
    n_train: int | None
    config: TrainConfig

    @classmethod
    def of(cls, run: RunSpec) -> WorkerRun:
        """The recipe of a planned run (its dataset must have been read from a directory)."""
        path = run.dataset.manifest.get("path")
        if path is None:
            raise ScalelibError("--workers needs datasets on disk; write the data with "
                                "`scalelib data build` and pass --data, or use --workers 1")
        return cls(str(Path(path).resolve()), run.dataset.subsample, run.size, run.seed,
                   run.n_train, run.config)

    def to_dict(self) -> dict:
        """A JSON-ready dictionary (see :meth:`from_dict`)."""
        return {**dataclasses.asdict(self), "size": self.size.to_dict(),
                "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, fields: dict) -> WorkerRun:
        """The recipe written by :meth:`to_dict`."""
        return cls(**{**fields, "size": ModelSize(**fields["size"]),
                      "config": TrainConfig(**fields["config"])})


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def estimated_cost(run: RunSpec) -> float:
    """Training FLOPs of the run's whole budget (its cap in the ``converge`` mode)."""
    cells = run.config.max_cells or run.config.total_steps * run.config.batch_size
    return training_flops_per_cell(run.size, run.dataset.n_genes) * cells


def run_with_workers(
    runs: Sequence[RunSpec],
    out_dir: str | Path,
    workers: int,
    *,
    rerun: bool = False,
    callbacks: SweepCallbacks | None = None,
    progress: bool = True,
    in_memory: bool = True,
    baselines: bool = True,
) -> pl.DataFrame:
    """Train ``runs`` into ``out_dir`` with ``workers`` processes of this machine.

    Each process gets ``usable_cores() // workers`` torch threads (at least one). With one
    worker this is :func:`scalelib.sweep.run_sweep` in this process, threads untouched.

    Parameters
    ----------
    runs
        Planned runs (see :func:`scalelib.sweep.plan_runs`), on datasets read from disk.
    out_dir
        The sweep directory.
    workers
        Processes training at once, this one included.
    rerun
        Train runs again even when finished (one worker only: several would each retrain
        every run).
    callbacks, progress, in_memory, baselines
        As for :func:`scalelib.sweep.run_sweep`; callbacks and progress follow the runs this
        process trains (the progress bar counts every run, wherever it trained), and the
        baselines are fitted here.

    Returns
    -------
    polars.DataFrame
        The results rows of ``runs``.
    """
    if workers < 1:
        raise ScalelibError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        return run_sweep(runs, out_dir, rerun=rerun, callbacks=callbacks, progress=progress,
                         in_memory=in_memory, baselines=baselines)
    if rerun:
        raise ScalelibError("--rerun retrains in one process; use it with --workers 1")
    ordered = sorted(runs, key=estimated_cost, reverse=True)  # longest first
    recipes = json.dumps([WorkerRun.of(run).to_dict() for run in ordered])  # checked first
    threads = max(1, usable_cores() // workers)
    command = [sys.executable, "-m", "scalelib.workers", str(Path(out_dir).resolve()),
               str(threads), "memory" if in_memory else "stream"]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(workers - 1):
            process = subprocess.Popen(command, stdin=subprocess.PIPE, env=environment, text=True)
            process.stdin.write(recipes)
            process.stdin.close()
            processes.append(process)
        table = run_sweep(ordered, out_dir, callbacks=callbacks, progress=progress,
                          in_memory=in_memory, baselines=baselines)
        for process in processes:
            process.wait()
    finally:
        torch.set_num_threads(threads_before)
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
    failed = [process.returncode for process in processes if process.returncode != 0]
    if failed:  # this process waited on every run, and trained those a dead worker left
        warnings.warn(f"{len(failed)} worker process(es) exited with an error (status "
                      f"{failed[0]}); this process trained the runs they left", stacklevel=2)
    return table


def work(recipes: Sequence[WorkerRun], out_dir: str, threads: int, in_memory: bool) -> None:
    """The body of a worker process: plan the runs again from their datasets' directories,
    then take part in the sweep (no baselines, no progress bar).

    Parameters
    ----------
    recipes
        The runs, in the order to offer them.
    out_dir
        The sweep directory.
    threads
        Torch threads of this process.
    in_memory
        Hold training cells in memory (False: stream them from the dataset's file).
    """
    from scalelib.data.store import load_dataset

    torch.set_num_threads(threads)
    opened = {path: load_dataset(path, obs_columns=None if in_memory else ())
              for path in {recipe.dataset_path for recipe in recipes}}
    runs = [RunSpec(_view(opened[r.dataset_path], r.subsample), r.size, r.seed, r.n_train,
                    r.config) for r in recipes]
    run_sweep(runs, out_dir, progress=False, in_memory=in_memory, baselines=False)


def _view(dataset: ExpressionDataset, subsample: str) -> ExpressionDataset:
    """``dataset`` under the training order ``subsample`` (itself when that is its own)."""
    return dataset if dataset.subsample == subsample else dataset.subsampled(subsample)


if __name__ == "__main__":  # a worker: python -m scalelib.workers OUT THREADS memory|stream
    work([WorkerRun.from_dict(fields) for fields in json.load(sys.stdin)], sys.argv[1],
         int(sys.argv[2]), sys.argv[3] == "memory")
