"""Plan and run many trainings (sizes x seeds x data sizes), resumably and concurrently.

A sweep directory holds ``results.parquet`` (one row per finished run, see
:mod:`scalelib.results`) and ``runs/<run_id>/`` (checkpoint, curve, ``row.json``). A run's ID
hashes everything that determines its outcome, so re-running a sweep skips the runs already in
the table and trains only what is missing.

Several processes may run sweeps into one directory at once (identical commands, or the
workers of a cluster job): a worker claims a run by holding a lock on ``runs/<run_id>/.claim``
while it trains, other workers pass that run by and come back to it at the end, when they wait
for the claim and find the run finished (or, if its worker died, train it themselves). The
table's own lock (:func:`scalelib.results.append_results`) keeps every row. Each run's row is
also kept in its ``row.json``, written before the table: a run whose row never reached the
table is picked up from there instead of retrained, and :func:`rebuild_results` rebuilds a
damaged table from the run directories.

Under ``torchrun`` the processes of one sweep act as one worker that trains each run data-
parallel: rank 0 holds the claims, decides, and writes (see :mod:`scalelib.distributed`).

Before training, a sweep fits the baselines of :mod:`scalelib.baselines` once per dataset and
training-set size (on the same nested training subset the runs of that size use, scored on
the same masks) and stores them as rows whose ``model_family`` is the baseline's; their IDs
hash the dataset fingerprint, family, training-set size and mask settings, so a resumed sweep
does not fit them again.

At the whole training set every subsampling strategy holds the same cells, so a run drawn
``rebalanced`` or ``geosketch`` there computes exactly what the same run drawn at random does.
Such a run is not trained again when its random twin has finished in the same table: its row is
the twin's, relabelled with its own run ID, fingerprint and strategy, and its ``checkpoint``
names the twin's (see :func:`repeated_row`). The runs that can be copied are trained last, so
their twins come first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from scalelib.atomic import atomic_path
from scalelib.baselines import FAMILIES, BaselineResult, family_spec, fit_baselines
from scalelib.config import ModelSize, TrainConfig
from scalelib.data.store import ExpressionDataset
from scalelib.distributed import current
from scalelib.errors import ScalelibError
from scalelib.hardware import resolve_device, resolve_dtype
from scalelib.locks import file_lock
from scalelib.model import count_parameters, training_flops_per_cell
from scalelib.objectives import GENE_OUTPUTS, HEAD_OUTPUTS, uses_counts
from scalelib.provenance import code_version
from scalelib.results import (
    LATER_COLUMNS,
    RESULT_COLUMNS,
    TRANSFORMER,
    append_results,
    finished_run_ids,
    read_results,
    rows_to_frame,
    table_lock_path,
    write_results,
)
from scalelib.train import StepInfo, TrainResult, train

# Settings that change how fast a run goes but not what it computes: left out of run IDs.
_NOT_IN_RUN_ID = ("device", "eval_batch_size")


@dataclass(frozen=True)
class RunSpec:
    """One planned training run.

    Parameters
    ----------
    dataset
        The data (its fingerprint, not its identity, enters the run ID).
    size
        Model shape.
    seed
        Run seed.
    n_train
        Nested training-subset size (None: all training cells).
    config
        Hyper-parameters and budget.
    """

    dataset: ExpressionDataset = field(compare=False, repr=False)
    size: ModelSize
    seed: int
    n_train: int | None
    config: TrainConfig

    @functools.cached_property
    def run_id(self) -> str:
        """A 16-hex-digit hash of dataset fingerprint, size, seed, data size and config.

        Pure: it hashes the config as given and looks at no hardware. :func:`run_sweep` first
        replaces ``dtype="auto"`` by the precision it means on this machine (see
        :meth:`on_this_machine`), so the ID of a trained run names the precision its row records.
        """
        config = {k: v for k, v in self.config.to_dict().items() if k not in _NOT_IN_RUN_ID}
        if config["objective"] == "mse":
            del config["objective"]  # IDs of MSE runs stay those of runs from before objectives
        key = {
            "dataset": self.dataset.fingerprint,
            "size": self.size.to_dict(),
            "seed": self.seed,
            "n_train": self.n_train,
            "config": config,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def on_this_machine(self) -> RunSpec:
        """This run with its dtype request resolved to ``"fp32"`` or ``"bf16"`` here.

        A run's numbers depend on the precision it computed in, so the ID hashes the resolved
        precision: re-running a row with its recorded ``dtype`` gives the same ID and the same
        losses, and a sweep resumed on a machine where auto means bf16 does not skip runs that
        were computed in fp32.
        """
        dtype = resolve_dtype(self.config.dtype, resolve_device(self.config.device), self.size)
        return dataclasses.replace(self, config=dataclasses.replace(self.config, dtype=dtype))

    @property
    def label(self) -> str:
        """A short human label: regime, size, seed, data size, a likelihood objective and
        (when not random) how the training subset was drawn."""
        data = f" D={self.n_train}" if self.n_train else ""
        objective = "" if self.config.objective == "mse" else f" {self.config.objective}"
        drawn = f" {self.dataset.subsample}" if self.dataset.subsample != "random" else ""
        return f"{self.dataset.regime} {self.size.name} seed {self.seed}{data}{objective}{drawn}"


def plan_runs(
    dataset: ExpressionDataset,
    sizes: Sequence[ModelSize],
    config: TrainConfig,
    *,
    seeds: Sequence[int] = (0,),
    train_sizes: Sequence[int] | None = None,
    subsamples: Sequence[str] | None = None,
) -> list[RunSpec]:
    """All combinations of sizes x seeds (x nested training sizes x subsample strategies),
    smallest models first.

    Parameters
    ----------
    dataset
        Data shared by every run.
    sizes
        Model shapes.
    config
        Training configuration shared by every run.
    seeds
        Run seeds.
    train_sizes
        Nested training-subset sizes for a data-size sweep (None: all training cells).
    subsamples
        Strategies drawing the nested subsets, each an order the dataset holds (None: the
        dataset's own, ``dataset.subsample``); at the whole training set every strategy has
        the same cells, so those runs repeat one another under each strategy's label
        (:func:`run_sweep` trains them once, see :func:`repeated_row`).
    """
    if not sizes:
        raise ScalelibError("no model sizes to run; pass at least one size")
    if uses_counts(config.objective):
        dataset.require_counts()  # refused before any baseline or run is computed
    available = dataset.n_cells("train")
    data_sizes: list[int | None] = list(train_sizes) if train_sizes else [None]
    too_big = [n for n in data_sizes if n is not None and n > available]
    if too_big:
        raise ScalelibError(
            f"data size(s) {too_big} exceed the {available} training cells of the dataset; "
            "drop them or build a larger dataset"
        )
    views = [dataset.subsampled(name) for name in dict.fromkeys(subsamples or [])] or [dataset]
    return [
        RunSpec(view, size, seed, n_train, config)
        for view in views
        for n_train in data_sizes
        for size in sizes
        for seed in seeds
    ]


@dataclass
class SweepCallbacks:
    """Hooks for a front end (notebook, CLI) to follow a sweep; all optional."""

    on_run_start: Callable[[int, int, RunSpec], None] | None = None
    on_step: Callable[[RunSpec, StepInfo], None] | None = None
    on_run_end: Callable[[RunSpec, dict], None] | None = None


def run_sweep(
    runs: Sequence[RunSpec],
    out_dir: str | Path,
    *,
    rerun: bool = False,
    callbacks: SweepCallbacks | None = None,
    progress: bool = True,
    in_memory: bool = True,
    table: str = "results.parquet",
    baselines: bool = True,
) -> pl.DataFrame:
    """Train every planned run not yet finished and append its row to ``results.parquet``.

    Each row is written as soon as its run ends, so an interrupted sweep loses at most the run
    in progress. A run that fails (out of memory, say) is recorded with ``status`` ``failed:
    <reason>`` and the sweep goes on; errors in the input (:class:`ScalelibError`) stop it.
    Runs claimed by another process on the same directory are trained by that process (see
    the module docstring).
    First, the baselines of every dataset and training-set size the runs use are fitted and
    stored, unless already in the table (see :func:`plan_baselines`).

    Parameters
    ----------
    runs
        Planned runs (see :func:`plan_runs`).
    out_dir
        Sweep directory (created when missing).
    rerun
        Train runs again even when already finished.
    callbacks
        Progress hooks; ``on_run_start`` fires for the runs this call trains, ``on_run_end``
        for those and for the runs it copies from their random twins.
    progress
        Show terminal progress bars.
    in_memory
        Hold training cells in memory (True) or read batches from the memory-mapped matrix.
    table
        File name of the results table in ``out_dir`` (another name keeps runs apart from the
        sweep's fits, e.g. the budget check's reruns).
    baselines
        Fit and store the baselines of the runs' data (False: transformers only).

    Returns
    -------
    polars.DataFrame
        The results rows of ``runs`` (finished earlier, now, or by another process); the
        baseline rows stay in the table (``scalelib.scaling.baseline_rows``).
    """
    runs = [run.on_this_machine() for run in runs]
    out_dir = Path(out_dir)
    results_path = out_dir / table
    check_sweep_dir(out_dir)
    callbacks = callbacks or SweepCallbacks()
    group = current()  # data-parallel processes: rank 0 decides and writes
    progress = progress and group.is_main
    done = set() if rerun else group.from_main(lambda: finished_run_ids(results_path))
    if baselines and group.is_main:
        run_baselines([b for b in plan_baselines(runs) if b.run_id not in done], results_path,
                      progress=progress)
    pending = sorted((run for run in runs if run.run_id not in done),
                     key=lambda run: whole_set_twin(run) is not None)  # twins first
    overall = tqdm(total=len(pending), desc="sweep", unit="run", disable=not progress)
    trained = 0

    def finish(run: RunSpec) -> None:  # under the run's claim
        nonlocal trained
        if group.from_main(lambda: rerun or not _recorded_elsewhere(run, out_dir, table)):
            row = group.from_main(lambda: repeated_row(run, results_path))
            if row is None:  # not a copy of its random twin: train it
                if callbacks.on_run_start:
                    callbacks.on_run_start(trained, len(pending), run)
                row = _train_one(run, out_dir / "runs" / run.run_id, callbacks, progress,
                                 in_memory)
                trained += 1
            if group.is_main:
                _write_row_file(row, out_dir / "runs" / run.run_id, table)
                append_results([row], results_path)
            if callbacks.on_run_end:
                callbacks.on_run_end(run, row)
            overall.set_postfix_str(f"{run.label}: {row['status']}")
        overall.update(1)

    claimed_elsewhere = []
    for run in pending:  # first pass: runs no other process is training
        with group.lock(_claim_path(out_dir, run), wait=False) as claimed:
            if claimed:
                finish(run)
            else:
                claimed_elsewhere.append(run)
    for run in claimed_elsewhere:  # then wait for the others (or train them if their worker died)
        with group.lock(_claim_path(out_dir, run)):
            finish(run)
    overall.close()
    group.barrier()  # every rank reads the table after rank 0 wrote its last row
    wanted = [run.run_id for run in runs]
    return read_results(results_path).filter(pl.col("run_id").is_in(wanted))


def check_sweep_dir(out_dir: str | Path) -> Path:
    """Make sure ``out_dir`` is, or can become, a writable sweep directory; return it.

    Parameters
    ----------
    out_dir
        The sweep directory (``--out``).

    Raises
    ------
    ScalelibError
        It is a file, lies under a file, or cannot be created or written.
    """
    out_dir = Path(out_dir)
    try:
        (out_dir / "runs").mkdir(parents=True, exist_ok=True)
        with file_lock(table_lock_path(out_dir / "results.parquet"), wait=False):
            pass
    except OSError as error:
        raise ScalelibError(f"cannot use {out_dir} as a sweep directory ({error.strerror}); "
                            "choose a writable folder with --out") from None
    return out_dir


def _claim_path(out_dir: Path, run: RunSpec) -> Path:
    return out_dir / "runs" / run.run_id / ".claim"


def _recorded_elsewhere(run: RunSpec, out_dir: Path, table: str) -> bool:
    """Whether the run finished already: in the table (another process), or in its run
    directory with a row that never reached the table (which is then appended)."""
    results_path = out_dir / table
    if run.run_id in finished_run_ids(results_path):
        return True
    row = _finished_row(out_dir / "runs" / run.run_id, run.run_id, table)
    if row is not None:
        append_results([row], results_path)
    return row is not None


def _finished_row(run_dir: Path, run_id: str, table: str) -> dict | None:
    """The ``row.json`` of a run that finished with status ok (None otherwise)."""
    row = read_row_file(run_dir / "row.json", table)
    if row is None or row.get("run_id") != run_id or row.get("status") != "ok":
        return None
    return row


def read_row_file(path: Path, table: str = "results.parquet") -> dict | None:
    """A run's ``row.json`` as a full results row (None when missing, unreadable, or written
    for another table of the sweep, such as ``budget_check.parquet``).

    Columns the file lacks (a row written by an older scalelib) take the values
    :func:`~scalelib.results.read_results` gives them in old tables, or null; columns the
    schema does not know are dropped.
    """
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(row, dict) or not row.get("run_id"):
        return None
    if row.get("table", "results.parquet") != table:
        return None
    return {name: row.get(name, LATER_COLUMNS.get(name)) for name in RESULT_COLUMNS}


def _write_row_file(row: dict, run_dir: Path, table: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "row.json") as temporary:
        temporary.write_text(json.dumps({**row, "table": table}, indent=2, default=str))


def rebuild_results(out_dir: str | Path) -> tuple[pl.DataFrame, Path | None]:
    """Rebuild ``out_dir/results.parquet`` from the ``row.json`` of every run directory.

    Rows of the existing table whose run directory has no ``row.json`` are kept when the table
    is readable; an unreadable table is moved aside (``results.parquet.damaged-<UTC time>``),
    never deleted.

    Parameters
    ----------
    out_dir
        Sweep directory.

    Returns
    -------
    table, moved_to
        The table written, and where the damaged table went (None when nothing was moved).

    Raises
    ------
    ScalelibError
        ``out_dir`` holds no run directory with a readable ``row.json``.
    """
    out_dir = Path(out_dir)
    results_path = out_dir / "results.parquet"
    rows = [row for path in sorted(out_dir.glob("runs/*/row.json"))
            if (row := read_row_file(path)) is not None]
    if not rows:
        raise ScalelibError(f"no run directory under {out_dir / 'runs'} holds a readable "
                            "row.json; check --out, or rerun the sweep")
    moved_to = None
    with file_lock(table_lock_path(results_path)):
        try:
            existing = read_results(results_path)
        except ScalelibError:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            moved_to = results_path.with_name(f"{results_path.name}.damaged-{stamp}")
            results_path.rename(moved_to)
            existing = None
        rebuilt = rows_to_frame(rows)
        if existing is not None:
            kept = existing.filter(~pl.col("run_id").is_in(rebuilt["run_id"].to_list()))
            rebuilt = pl.concat([kept, rebuilt], how="vertical")
        write_results(rebuilt, results_path)
    return rebuilt, moved_to


def whole_set_twin(run: RunSpec) -> RunSpec | None:
    """The random-order run that ``run`` repeats, if any.

    Parameters
    ----------
    run
        A planned run.

    Returns
    -------
    RunSpec or None
        The same run drawn at random when ``run`` trains on the whole training set under
        another strategy (the same cells, seed and settings); None for a random run or a
        smaller subset.
    """
    if run.dataset.subsample == "random":
        return None
    if run.n_train not in (None, run.dataset.n_cells("train")):
        return None
    return dataclasses.replace(run, dataset=run.dataset.subsampled("random"))


def repeated_row(run: RunSpec, results_path: Path) -> dict | None:
    """The row of ``run`` taken from its finished random twin (:func:`whole_set_twin`).

    Parameters
    ----------
    run
        A planned run.
    results_path
        The table the twin's row would be in.

    Returns
    -------
    dict or None
        The twin's row with this run's ``run_id``, ``dataset_fingerprint`` and ``subsample``
        (metrics, wall time and ``checkpoint`` stay the twin's); None when ``run`` has no twin
        or the twin has not finished with status ok.
    """
    twin = whole_set_twin(run)
    if twin is None:
        return None
    finished = read_results(results_path).filter(
        (pl.col("run_id") == twin.run_id) & (pl.col("status") == "ok"))
    if finished.height == 0:
        return None
    row = finished.row(0, named=True)
    return {**row, "run_id": run.run_id, "dataset_fingerprint": run.dataset.fingerprint,
            "subsample": run.dataset.subsample, "finished_at": _now()}


def _train_one(run: RunSpec, run_dir: Path, callbacks: SweepCallbacks, progress: bool,
               in_memory: bool) -> dict:
    on_step = partial(callbacks.on_step, run) if callbacks.on_step else None
    try:
        result = train(run.dataset, run.size, run.config, seed=run.seed, n_train=run.n_train,
                       out_dir=run_dir, on_step=on_step, progress=progress, in_memory=in_memory)
    except ScalelibError:
        raise
    except (RuntimeError, MemoryError) as error:  # torch reports OOM and kernel failures so
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        row = results_row(run, None, status=f"failed: {type(error).__name__}: {error}"[:300])
    else:
        row = results_row(run, result)
    return row


def results_row(run: RunSpec, result: TrainResult | None, status: str = "ok") -> dict:
    """The results-table row of a run (schema: :mod:`scalelib.results`).

    Parameters
    ----------
    run
        The planned run.
    result
        Its outcome; None for a failed run, whose metrics are then null.
    status
        ``"ok"`` or ``"failed: <reason>"``.
    """
    dataset, size, config = run.dataset, run.size, run.config
    row = {
        "run_id": run.run_id,
        "model_family": TRANSFORMER,
        "setting": None,
        **_dataset_columns(dataset, run.n_train),
        "size": size.name,
        "d_model": size.d_model,
        "n_layers": size.n_layers,
        "n_heads": size.n_heads,
        "ff_mult": size.ff_mult,
        "seed": run.seed,
        "batch_size": config.batch_size,
        "lr": config.peak_lr(size.d_model),
        "schedule": config.schedule,
        "budget_mode": config.budget_mode,
        "mask_rate": config.mask_rate,
        "torch_version": torch.__version__,
        "code_version": code_version(),
        "finished_at": _now(),
        "status": status,
    }
    metrics = result.metrics() if result is not None else dict.fromkeys(TrainResult.__annotations__)
    metrics.pop("curve", None)
    row.update(metrics)
    row["objective"] = config.objective
    row["train_flops"] = (
        result.cells_seen * result.flops_per_cell if result is not None else None
    )
    if result is None:
        row.update(params=count_parameters(size, dataset.n_genes, HEAD_OUTPUTS[config.objective],
                                          GENE_OUTPUTS[config.objective]),
                   flops_per_cell=training_flops_per_cell(size, dataset.n_genes),
                   budget_steps=config.total_steps, world_size=current().world_size)
    return row


def _dataset_columns(dataset: ExpressionDataset, n_train: int | None) -> dict:
    """The results columns that describe the data of a row."""
    return {
        "regime": dataset.regime,
        "source": dataset.source,
        "dataset": dataset.manifest.get("path", dataset.manifest.get("name", "in-memory")),
        "dataset_fingerprint": dataset.fingerprint,
        "n_genes": dataset.n_genes,
        "n_train_cells": n_train or dataset.n_cells("train"),
        "n_val_cells": dataset.n_cells("val"),
        "n_test_cells": dataset.n_cells("test"),
        "subsample": dataset.subsample,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- baselines

@dataclass(frozen=True)
class BaselineSpec:
    """One baseline family fitted on one dataset's nested training subset.

    Parameters
    ----------
    dataset
        The data (its fingerprint enters the run ID).
    family
        A family of :data:`scalelib.baselines.FAMILIES`.
    n_train
        Training cells it is fitted on (the nested subset of that size).
    mask_rate, eval_mask_seed
        The evaluation masks of the runs it is compared with.
    seed
        Seed of the inner split and the kNN reference subsample.
    """

    dataset: ExpressionDataset = field(compare=False, repr=False)
    family: str
    n_train: int
    mask_rate: float
    eval_mask_seed: int
    seed: int = 0

    @functools.cached_property
    def run_id(self) -> str:
        """A 16-hex-digit hash of dataset fingerprint, family (with its grid), training-set
        size, mask settings and seed."""
        key = {
            "dataset": self.dataset.fingerprint,
            "model_family": family_spec(self.family),
            "n_train": self.n_train,
            "mask_rate": self.mask_rate,
            "eval_mask_seed": self.eval_mask_seed,
            "seed": self.seed,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def data_key(self) -> tuple:
        """What the families fitted together share: data, training size, masks, seed."""
        return (self.dataset.fingerprint, self.n_train, self.mask_rate, self.eval_mask_seed,
                self.seed)


def plan_baselines(runs: Sequence[RunSpec], families: Sequence[str] = FAMILIES) -> list[BaselineSpec]:
    """The baselines a set of runs is compared with: every family once per dataset,
    training-set size and evaluation mask (in the order the runs first use them).

    Parameters
    ----------
    runs
        Planned runs (see :func:`plan_runs`).
    families
        Baseline families.
    """
    planned: dict[str, BaselineSpec] = {}
    for run in runs:
        n_train = run.n_train or run.dataset.n_cells("train")
        for family in families:
            spec = BaselineSpec(run.dataset, family, n_train, run.config.mask_rate,
                                run.config.eval_mask_seed)
            planned.setdefault(spec.run_id, spec)
    return list(planned.values())


def run_baselines(specs: Sequence[BaselineSpec], results_path: str | Path, *,
                  progress: bool = True) -> pl.DataFrame:
    """Fit planned baselines (the families of one data key together) and append their rows.

    A fit that fails (too few training cells, a singular system) is recorded with ``status``
    ``failed: <reason>`` and the others go on.

    Parameters
    ----------
    specs
        Planned baselines (see :func:`plan_baselines`).
    results_path
        Results parquet file.
    progress
        Show a terminal progress bar.

    Returns
    -------
    polars.DataFrame
        The rows written.
    """
    groups: dict[tuple, list[BaselineSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.data_key, []).append(spec)
    rows = []
    for group in tqdm(groups.values(), desc="baselines", unit="dataset", disable=not progress):
        first = group[0]
        try:
            results = fit_baselines(first.dataset, families=[s.family for s in group],
                                    n_train=first.n_train, mask_rate=first.mask_rate,
                                    eval_mask_seed=first.eval_mask_seed, seed=first.seed)
            written = [baseline_row(spec, result) for spec, result in zip(group, results)]
        except (ScalelibError, np.linalg.LinAlgError, MemoryError) as error:
            reason = f"failed: {type(error).__name__}: {error}"[:300]
            written = [baseline_row(spec, None, status=reason) for spec in group]
        append_results(written, results_path)
        rows.extend(written)
    return read_results(results_path).filter(pl.col("run_id").is_in([r["run_id"] for r in rows]))


def baseline_row(spec: BaselineSpec, result: BaselineResult | None, status: str = "ok") -> dict:
    """The results-table row of a baseline: data and mask columns, its scores as
    ``best_val_mse`` and ``test_mse``, its fit time as ``wall_time_s``; model and training
    columns null.

    Parameters
    ----------
    spec
        The planned baseline.
    result
        Its outcome; None for a failed fit.
    status
        ``"ok"`` or ``"failed: <reason>"``.
    """
    row = dict.fromkeys(RESULT_COLUMNS)
    row.update(_dataset_columns(spec.dataset, spec.n_train))
    row.update(run_id=spec.run_id, model_family=spec.family, seed=spec.seed,
               mask_rate=spec.mask_rate, objective="mse", device="cpu", dtype="fp64",
               world_size=1,
               code_version=code_version(),
               finished_at=_now(), status=status)
    if result is not None:
        row.update(best_val_mse=result.val_mse, test_mse=result.test_mse, setting=result.setting,
                   wall_time_s=result.fit_seconds)
    return row
