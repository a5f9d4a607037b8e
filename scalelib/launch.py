"""Sweeps on a Slurm cluster, or as local processes, through submitit: one job per run.

``scalelib sweep ... --launcher slurm`` plans the runs here and submits them as one Slurm job
array, one task per run, plus one job that fits the baselines. Every job runs
:func:`scalelib.sweep.run_sweep` on its own run into the one sweep directory, whose table lock
and per-run claims keep exactly one row per run however many jobs write at once, and which
skips runs already finished (a resubmitted sweep trains only what is missing).
``--launcher local`` does the same with submitit's local executor (each job a process on this
machine); the tests exercise the launcher that way.

A job with ``gpus_per_run`` above 1 starts one process per GPU and trains its run data-parallel
(:mod:`scalelib.distributed`), submitit exporting the variables ``torchrun`` would set.

Jobs reopen the dataset from its directory (a dataset never travels in a pickle), so only
datasets on disk can be launched. submitit is an optional dependency: ``pip install
'scalelib[cluster]'``.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from scalelib.config import ModelSize, TrainConfig
from scalelib.data.store import ExpressionDataset
from scalelib.errors import ScalelibError
from scalelib.sweep import RunSpec

LAUNCHERS = ("slurm", "local")


@dataclass(frozen=True)
class LaunchOptions:
    """Where and with what resources the jobs of a sweep run.

    Parameters
    ----------
    launcher
        ``"slurm"`` (sbatch) or ``"local"`` (processes on this machine).
    partition
        Slurm partition (None: the cluster's default).
    gpus_per_run
        GPUs of each run's job; above 1, one process per GPU trains the run data-parallel.
    time_min
        Time limit of each job in minutes.
    """

    launcher: str
    partition: str | None = None
    gpus_per_run: int = 0
    time_min: int = 60

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ScalelibError(f"unknown launcher {self.launcher!r}; choose one of "
                                f"{', '.join(LAUNCHERS)}")
        if self.gpus_per_run < 0 or self.time_min < 1:
            raise ScalelibError("--gpus-per-run must be 0 or more and --time at least 1 minute")
        if self.partition is not None and self.launcher != "slurm":
            raise ScalelibError("--partition is a Slurm setting; use it with --launcher slurm")

    @property
    def processes_per_run(self) -> int:
        """Processes each job starts (one per GPU, at least one)."""
        return max(1, self.gpus_per_run)


@dataclass(frozen=True)
class RunRecipe:
    """What a job needs to plan its run again: the dataset's directory instead of its data."""

    dataset_path: str
    subsample: str
    size: ModelSize
    seed: int
    n_train: int | None
    config: TrainConfig

    @classmethod
    def of(cls, run: RunSpec) -> RunRecipe:
        """The recipe of a planned run (its dataset must have been loaded from disk)."""
        path = run.dataset.manifest.get("path")
        if path is None:
            raise ScalelibError("only a dataset directory can be sent to other processes; "
                                "write the data with `scalelib data build` and pass --data")
        return cls(str(Path(path).resolve()), run.dataset.subsample, run.size, run.seed,
                   run.n_train, run.config)

    def plan(self, dataset: ExpressionDataset | None = None) -> RunSpec:
        """The run, with the dataset reopened from its directory (or ``dataset``, already
        opened from there) and seen through the run's subsampling strategy."""
        from scalelib.data.store import load_dataset

        dataset = dataset if dataset is not None else load_dataset(self.dataset_path)
        if dataset.subsample != self.subsample:
            dataset = dataset.subsampled(self.subsample)
        return RunSpec(dataset, self.size, self.seed, self.n_train, self.config)


@dataclass(frozen=True)
class JobOutcome:
    """What a finished run job reports back."""

    run_id: str
    trained: bool
    status: str


def train_run_job(recipe: RunRecipe, out_dir: str, *, rerun: bool,
                  in_memory: bool) -> JobOutcome:
    """The body of one run's job: train the run into ``out_dir`` unless it is finished.

    Parameters
    ----------
    recipe
        The run.
    out_dir
        The sweep directory shared by every job.
    rerun
        Train it even if the table already holds it.
    in_memory
        Hold the training cells in memory (False: read batches from the dataset on disk).
    """
    from scalelib.data.store import load_dataset
    from scalelib.distributed import joined
    from scalelib.sweep import SweepCallbacks, run_sweep

    _export_process_group()
    started: list[RunSpec] = []
    callbacks = SweepCallbacks(on_run_start=lambda i, n, run: started.append(run))
    dataset = load_dataset(recipe.dataset_path, obs_columns=None if in_memory else ())
    with joined(recipe.config.device):
        row = run_sweep([recipe.plan(dataset)], out_dir, rerun=rerun, callbacks=callbacks,
                        progress=False, in_memory=in_memory, baselines=False).row(0, named=True)
    return JobOutcome(row["run_id"], bool(started), row["status"])


def baselines_job(recipes: Sequence[RunRecipe], out_dir: str) -> int:
    """The body of the baselines job: fit those the runs need and the table lacks.

    Returns
    -------
    int
        Baseline rows written.
    """
    from scalelib.data.store import load_dataset
    from scalelib.results import finished_run_ids
    from scalelib.sweep import plan_baselines, run_baselines

    datasets = {path: load_dataset(path) for path in {recipe.dataset_path for recipe in recipes}}
    runs = [recipe.plan(datasets[recipe.dataset_path]).on_this_machine() for recipe in recipes]
    done = finished_run_ids(Path(out_dir) / "results.parquet")
    specs = [spec for spec in plan_baselines(runs) if spec.run_id not in done]
    return run_baselines(specs, Path(out_dir) / "results.parquet", progress=False).height


def _export_process_group() -> None:
    """Set the variables torchrun sets when submitit started several processes for a job."""
    import submitit

    environment = submitit.JobEnvironment()
    if environment.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def launch_sweep(runs: Sequence[RunSpec], out_dir: str | Path, options: LaunchOptions, *,
                 rerun: bool = False, in_memory: bool = True,
                 baselines: bool = True) -> list[JobOutcome]:
    """Submit one job per run (a job array) and a baselines job, and wait for them all.

    Parameters
    ----------
    runs
        Planned runs (see :func:`scalelib.sweep.plan_runs`), on a dataset read from disk.
    out_dir
        The sweep directory; submitit keeps each job's logs under ``out_dir/jobs``.
    options
        Launcher and resources.
    rerun, in_memory
        As for :func:`scalelib.sweep.run_sweep`.
    baselines
        Also submit the job that fits the baselines.

    Returns
    -------
    list of JobOutcome
        One per run whose job finished.

    Raises
    ------
    ScalelibError
        submitit or sbatch is missing, or a job failed (its log is named).
    """
    recipes = [RunRecipe.of(run) for run in runs]  # checked before anything is submitted
    executor = _executor(Path(out_dir), options)
    out = str(Path(out_dir).resolve())
    extra = [executor.submit(baselines_job, recipes, out)] if baselines else []
    job_body = functools.partial(train_run_job, rerun=rerun, in_memory=in_memory)
    jobs = executor.map_array(job_body, recipes, [out] * len(recipes))
    print(f"submitted {len(jobs)} run job(s){' and a baselines job' if extra else ''} "
          f"({options.launcher}); logs under {Path(out_dir) / 'jobs'}")
    outcomes, failures = [], []
    for job in tqdm([*extra, *jobs], desc="jobs", unit="job"):
        try:
            result = job.result()
        except RuntimeError as error:  # submitit's FailedJobError and UncompletedJobError
            failures.append(f"job {job.job_id}: {str(error).strip().splitlines()[-1]}")
        else:
            if isinstance(result, JobOutcome):
                outcomes.append(result)
    if failures:
        raise ScalelibError(f"{len(failures)} job(s) failed ({failures[0]}); read their logs "
                            f"under {Path(out_dir) / 'jobs'}, then submit the sweep again "
                            "(finished runs are kept)")
    return outcomes


def _executor(out_dir: Path, options: LaunchOptions):
    """A submitit executor for ``options`` with its logs under ``out_dir/jobs``."""
    try:
        import submitit
    except ImportError:
        raise ScalelibError("--launcher needs the optional package submitit: "
                            "pip install 'scalelib[cluster]'") from None
    if options.launcher == "slurm" and shutil.which("sbatch") is None:
        raise ScalelibError("--launcher slurm needs sbatch on PATH; run on a Slurm login node, "
                            "or use --launcher local to run the jobs on this machine")
    executor = submitit.AutoExecutor(folder=out_dir / "jobs", cluster=options.launcher)
    parameters = {"name": "scalelib-sweep", "timeout_min": options.time_min,
                  "tasks_per_node": options.processes_per_run, "nodes": 1}
    if options.gpus_per_run:
        parameters["gpus_per_node"] = options.gpus_per_run
    if options.partition is not None:
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    return executor
