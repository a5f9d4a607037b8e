"""A sweep split between several processes on this machine: ``--workers N``.

Small models do not keep several cores busy: their steps are many small tensor operations, and
two threads on two cores are slower per step than one (threads wait on each other, worse on a
shared machine). Running N processes of one thread each, every process training whole runs,
uses the cores instead.

:func:`run_with_workers` starts N - 1 processes from the standard library's process pool
(:class:`concurrent.futures.ProcessPoolExecutor`, spawned) and works as the N-th itself. All of
them run :func:`scalelib.sweep.run_sweep` over the same runs and sweep directory, whose per-run
claims give each run to exactly one process and whose table lock keeps every row, so the
results are those of a one-process sweep and no scheduler is needed. The runs are offered
longest first (training FLOPs times budget) so that no long run starts last while the others
idle. The other processes reopen the datasets from their directories
(:class:`scalelib.launch.RunRecipe`, as cluster jobs do): a dataset never travels in a pickle.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import torch

from scalelib.errors import ScalelibError
from scalelib.launch import RunRecipe
from scalelib.model import training_flops_per_cell
from scalelib.sweep import RunSpec, SweepCallbacks, run_sweep


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
        As for :func:`scalelib.sweep.run_sweep`; callbacks follow the runs this process
        trains, the progress bar counts every run wherever it trained, and the baselines are
        fitted here.

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
    recipes = [RunRecipe.of(run) for run in ordered]  # checked before any process starts
    threads = max(1, usable_cores() // workers)
    out = str(Path(out_dir).resolve())
    pool = ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn"))
    with pool, _torch_threads(threads):
        others = [pool.submit(work, recipes, out, threads, in_memory)
                  for _ in range(workers - 1)]
        table = run_sweep(ordered, out_dir, callbacks=callbacks, progress=progress,
                          in_memory=in_memory, baselines=baselines)
    failed = [error for error in (future.exception() for future in others) if error is not None]
    if failed:  # this process waited on every run, and trained those a dead worker left
        warnings.warn(f"{len(failed)} worker process(es) stopped with an error ({failed[0]!r}); "
                      "this process trained the runs they left", stacklevel=2)
    return table


def work(recipes: Sequence[RunRecipe], out_dir: str, threads: int, in_memory: bool) -> None:
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
    runs = [recipe.plan(opened[recipe.dataset_path]) for recipe in recipes]
    run_sweep(runs, out_dir, progress=False, in_memory=in_memory, baselines=False)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """This process's torch threads set to ``threads``, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
