"""What the scaling notebook computes around a sweep: data sources, plans, progress, curves, fits.

The notebook (``notebooks/scaling.py``) wires ``mo.ui`` controls to these functions and to
:mod:`scalelib.sweep`, :mod:`scalelib.scaling` and :mod:`scalelib.plots`. Nothing here imports
marimo: progress bars and live charts come in as callables (:class:`SweepMonitor`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from scalelib.config import TRAIN_PRESETS, ModelSize, TrainConfig
from scalelib.data.store import ExpressionDataset, is_dataset_dir, load_dataset
from scalelib.errors import ScalelibError
from scalelib.fitrules import budget_mix
from scalelib.model import count_parameters
from scalelib.scaling import PowerLawFit, ok_rows, transformer_rows
from scalelib.sweep import RunSpec, SweepCallbacks, plan_runs
from scalelib.train import CURVE_SCHEMA, StepInfo

SIMULATED = "simulated"
BUDGET_KINDS = ("preset", "steps", "cells")


def list_datasets(root: str | Path = "data", max_depth: int = 3) -> list[Path]:
    """Dataset directories (:func:`~scalelib.data.store.is_dataset_dir`) under ``root``.

    Parameters
    ----------
    root
        Folder to search (missing: no datasets).
    max_depth
        How many folder levels below ``root`` to look.
    """
    root = Path(root)
    found: list[Path] = []
    level = [root] if root.is_dir() else []
    for _ in range(max_depth + 1):
        following = []
        for folder in level:
            if is_dataset_dir(folder):
                found.append(folder)
                continue
            following += sorted(p for p in folder.iterdir()
                                if p.is_dir() and not p.name.startswith("."))
        level = following
    return sorted(found)


def load_sources(source: str, *, preset: str, out_dir: str | Path,
                 regimes: Sequence[str] = ("rich", "limited")) -> list[ExpressionDataset]:
    """The datasets a sweep trains on.

    Parameters
    ----------
    source
        ``"simulated"`` (one simulated dataset per regime of ``preset``, written under
        ``out_dir/datasets`` on first use and reloaded afterwards) or a dataset directory.
    preset
        ``"smoke"``, ``"demo"`` or ``"paper"``: genes and cells of the simulated regimes.
    out_dir
        Sweep directory.
    regimes
        Simulated regimes to load.
    """
    if source == SIMULATED:
        from scalelib.data.preprocess import load_or_simulate

        if not regimes:
            raise ScalelibError("choose at least one regime")
        return [load_or_simulate(regime, preset, Path(out_dir) / "datasets")
                for regime in regimes]
    return [load_dataset(source)]


def train_config(preset: str, budget_kind: str = "preset", budget: int | None = None,
                 **changes: Any) -> TrainConfig:
    """A training preset with its budget replaced (``steps`` or ``cells``) and other changes.

    Parameters
    ----------
    preset
        Name in :data:`scalelib.config.TRAIN_PRESETS`.
    budget_kind
        ``"preset"`` (keep the preset's budget), ``"steps"`` or ``"cells"``.
    budget
        The new budget (ignored for ``"preset"``).
    **changes
        Other :class:`~scalelib.config.TrainConfig` fields (``None`` values are ignored).
    """
    if preset not in TRAIN_PRESETS:
        raise ScalelibError(f"unknown training preset {preset!r}; choose one of "
                            f"{', '.join(TRAIN_PRESETS)}")
    if budget_kind not in BUDGET_KINDS:
        raise ScalelibError(f"unknown budget kind {budget_kind!r}; choose one of "
                            f"{', '.join(BUDGET_KINDS)}")
    config = TRAIN_PRESETS[preset]
    changes = {key: value for key, value in changes.items() if value is not None}
    if budget_kind != "preset":
        if not budget or budget < 1:
            raise ScalelibError("the training budget must be a positive number")
        changes.update(max_steps=budget if budget_kind == "steps" else None,
                       max_cells=budget if budget_kind == "cells" else None)
    return config.with_(**changes)


def uses_regime_budgets(source: str, budget_kind: str) -> bool:
    """Whether a plan takes ``scalelib demo``'s per-regime budgets: simulated regimes at the
    preset's budget (the demo halves the limited regime's), so the notebook's defaults plan
    exactly the demo's runs and find them finished."""
    return source == SIMULATED and budget_kind == "preset"


def plan(datasets: Sequence[ExpressionDataset], sizes: Sequence[ModelSize],
         config: TrainConfig, *, seeds: Sequence[int] = (0,),
         data_fractions: Sequence[float] = (1.0,),
         regime_budgets: bool = False) -> list[RunSpec]:
    """Runs over datasets x data sizes x model sizes x seeds (see :func:`~scalelib.sweep.plan_runs`).

    ``data_fractions`` are fractions of each dataset's training cells (1.0: all of them, as in
    ``scalelib demo``); more than one makes a data-size sweep on the nested subsets. With
    ``regime_budgets`` each dataset's budget is scaled as ``scalelib demo`` scales it
    (:func:`scalelib.demo.regime_budget`).
    """
    from scalelib.demo import regime_budget

    if not seeds:
        raise ScalelibError("choose at least one seed")
    runs: list[RunSpec] = []
    for dataset in datasets:
        available = dataset.n_cells("train")
        train_sizes = sorted({None if f >= 1 else max(1, round(f * available))
                              for f in data_fractions}, key=lambda n: n or math.inf)
        budget = regime_budget(config, dataset.regime) if regime_budgets else config
        runs += plan_runs(dataset, sizes, budget, seeds=seeds, train_sizes=train_sizes)
    return runs


def budget_refusal(runs: Sequence[RunSpec], results: pl.DataFrame) -> str | None:
    """Why ``runs`` must not be trained into a sweep whose table is ``results``, or None: they
    would put a second training budget into a regime, and the notebook's fits by regime (like
    the report's) refuse to mix budgets (:func:`scalelib.fitrules.mixed_budgets`).

    Parameters
    ----------
    runs
        Planned runs (see :func:`plan`).
    results
        The sweep directory's results table (empty when it has none).
    """
    planned = [{"regime": run.dataset.regime, "budget_steps": run.config.total_steps}
               for run in runs]
    finished = transformer_rows(ok_rows(results))
    if "budget_steps" in finished.columns:
        planned += finished.select("regime", "budget_steps").to_dicts()
    mixed = budget_mix(planned, ("regime",))
    if mixed is None:
        return None
    return (f"with these runs, {mixed}, and fits by regime take one budget: choose another "
            "sweep directory, or the budget of the runs already there")


def ladder_table(sizes: Sequence[ModelSize], n_genes: Sequence[int]) -> pl.DataFrame:
    """One row per size: shape and parameter count at each vocabulary size."""
    rows = []
    for size in sizes:
        row = size.to_dict()
        for genes in sorted(set(n_genes)):
            row[f"params (V={genes})"] = count_parameters(size, genes)
        rows.append(row)
    return pl.DataFrame(rows)


class ProgressLike(Protocol):
    """What :class:`SweepMonitor` needs of a progress bar (``mo.status.progress_bar``'s)."""

    def update(self, increment: int = 1, title: str | None = None,
               subtitle: str | None = None) -> None: ...


class SweepMonitor:
    """Sweep callbacks that drive progress bars and live training curves.

    Parameters
    ----------
    overall
        Progress bar advanced once per finished run.
    open_run_bar
        Makes a context manager of a progress bar for one run (entered when the run starts,
        left when it ends), e.g. ``lambda run: mo.status.progress_bar(total=...)``.
    on_curves
        Called with the curves so far (the ``curve.parquet`` format plus ``regime``) after
        every validation step, e.g. to redraw a chart.
    """

    def __init__(self, *, overall: ProgressLike | None = None,
                 open_run_bar: Callable[[RunSpec], AbstractContextManager] | None = None,
                 on_curves: Callable[[pl.DataFrame], None] | None = None) -> None:
        self.overall = overall
        self.open_run_bar = open_run_bar
        self.on_curves = on_curves
        self.rows: list[dict[str, Any]] = []
        self._run_columns: dict[str, Any] = {}  # the current run's identity, set at its start
        self._context: AbstractContextManager | None = None
        self._bar: ProgressLike | None = None

    def callbacks(self) -> SweepCallbacks:
        """The :class:`~scalelib.sweep.SweepCallbacks` to pass to ``run_sweep``."""
        return SweepCallbacks(on_run_start=self._start, on_step=self._step, on_run_end=self._end)

    def frame(self, regime: str | None = None) -> pl.DataFrame:
        """Curves recorded so far (one row per optimiser step), optionally of one regime."""
        frame = pl.DataFrame(self.rows, schema=LIVE_SCHEMA, orient="row") if self.rows else (
            pl.DataFrame(schema=LIVE_SCHEMA))
        return frame.filter(pl.col("regime") == regime) if regime else frame

    def _start(self, index: int, total: int, run: RunSpec) -> None:
        self._close()
        self._run_columns = {
            "run_id": run.run_id, "regime": run.dataset.regime, "size": run.size.name,
            "params": count_parameters(run.size, run.dataset.n_genes), "seed": run.seed}
        if self.open_run_bar is not None:
            self._context = self.open_run_bar(run)
            self._bar = self._context.__enter__()
        if self.overall is not None:
            self.overall.update(increment=0, subtitle=f"run {index + 1} of {total}: {run.label}")

    def _step(self, run: RunSpec, info: StepInfo) -> None:
        self.rows.append({
            **self._run_columns, "step": info.step, "cells_seen": info.cells_seen, "train_loss": info.train_loss,
            "val_mse": info.val_mse, "lr": info.lr, "elapsed_s": info.elapsed_s,
            "val_bits": info.val_bits, "cooldown": info.cooldown,
        })
        if self._bar is not None:
            best = f", best val {info.best_val_mse:.4f}" if info.best_val_mse is not None else ""
            self._bar.update(subtitle=f"loss {info.train_loss:.4f}{best}")
        if info.val_mse is not None and self.on_curves is not None:
            self.on_curves(self.frame(run.dataset.regime))

    def _end(self, run: RunSpec, row: dict) -> None:
        self._close()
        if self.overall is not None:
            self.overall.update(subtitle=f"{run.label}: {row['status']}")

    def _close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
        self._context = self._bar = None


LIVE_SCHEMA = {"run_id": pl.Utf8, "regime": pl.Utf8, "size": pl.Utf8, "params": pl.Int64,
               "seed": pl.Int64, **CURVE_SCHEMA}


def read_curves(sweep_dir: str | Path, results: pl.DataFrame) -> pl.DataFrame:
    """The saved curves (``runs/<run_id>/curve.parquet``) of the finished runs in ``results``.

    Returns the ``curve.parquet`` columns plus run_id, regime, size, params, seed and
    n_train_cells (empty, with that schema, when no curve is on disk).
    """
    keys = ("run_id", "regime", "size", "params", "seed", "n_train_cells")
    frames = []
    for row in transformer_rows(ok_rows(results)).select(keys).iter_rows(named=True):
        path = Path(sweep_dir) / "runs" / row["run_id"] / "curve.parquet"
        if path.exists():
            frames.append(pl.read_parquet(path).with_columns(
                *(pl.lit(row[key]).alias(key) for key in keys)))
    if not frames:
        return pl.DataFrame(schema={**{k: pl.Utf8 for k in keys[:3]}, "params": pl.Int64,
                                    "seed": pl.Int64, "n_train_cells": pl.Int64, **CURVE_SCHEMA})
    return pl.concat(frames, how="diagonal_relaxed")


def fit_readout(fits: Sequence[PowerLawFit]) -> pl.DataFrame:
    """One display row per fit: alpha, c and bits with their 95% intervals, R^2, status.

    The same rows as the results explorer shows (:func:`scalelib.explore.purefit.summary_rows`).
    """
    from scalelib.explore.purefit import LiteFit, summary_rows

    rows = summary_rows([LiteFit.from_dict(fit.to_dict()) for fit in fits])
    return pl.DataFrame(rows) if rows else pl.DataFrame()
