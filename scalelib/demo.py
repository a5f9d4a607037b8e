"""The main job: simulate both regimes, train the demo ladder on each, fit, plot, summarise.

Output directory (default ``data/demo``)::

    datasets/rich/, datasets/limited/   simulated datasets (scalelib.data.store format)
    runs/<run_id>/                      best.pt, curve.parquet, row.json per run
    results.parquet                     one row per run (scalelib.results schema)
    fits.json                           grid and huber fits per regime with bootstrap intervals
    scaling.png, scaling.svg            validation MSE against P (log-log) with fitted curves

Everything is reused when present: a second ``scalelib demo`` reloads the datasets, skips
finished runs and only refits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from scalelib.config import TRAIN_PRESETS, TrainConfig, get_ladder, select_sizes
from scalelib.data.preprocess import load_or_simulate
from scalelib.errors import ScalelibError
from scalelib.plots import save_chart, scaling_chart
from scalelib.results import print_table, read_results
from scalelib.scaling import (
    METHODS,
    PowerLawFit,
    baseline_rows,
    describe,
    fit_groups,
    matching_baselines,
    transformer_rows,
    verdict,
    write_fits,
)
from scalelib.sweep import RunSpec, SweepCallbacks, check_sweep_dir, plan_runs
from scalelib.workers import run_with_workers

DEMO_REGIMES = ("rich", "limited")
# Training cells seen per run. The limited regime (900 training cells, twice the genes, so
# about 2.5x the cost per cell) gets half the budget, still 22 epochs, with early stopping. So
# the demo regimes differ in V, D and budget together (the reference study's in V and D), and
# their losses compare in shape, not in level.
REGIME_BUDGET_FRACTION = {"rich": 1.0, "limited": 0.5}


@dataclass(frozen=True)
class DemoSummary:
    """What the demo produced: its tables and the paths of its files."""

    out_dir: Path
    results: pl.DataFrame
    fits: list[PowerLawFit]
    files: dict[str, Path]
    wall_time_s: float


def run_demo(
    out_dir: str | Path = "data/demo",
    *,
    preset: str = "demo",
    seeds: Sequence[int] = (0,),
    n_bootstrap: int = 1000,
    rerun: bool = False,
    progress: bool = True,
    callbacks: SweepCallbacks | None = None,
    workers: int = 1,
    config: TrainConfig | None = None,
    sizes: Sequence[str] | None = None,
    regimes: Sequence[str] = DEMO_REGIMES,
) -> DemoSummary:
    """Simulate both demo regimes, train the demo ladder on each, fit and plot.

    Parameters
    ----------
    out_dir
        Output directory (see the module docstring).
    preset
        ``"demo"`` (the demo regimes, ladder and training preset) or ``"smoke"`` (the same
        job in seconds, for tests and notebooks).
    seeds
        Run seeds; each seed adds one run per size and regime.
    n_bootstrap
        Bootstrap resamples for the fit intervals.
    rerun
        Retrain runs already in the results table.
    progress
        Show terminal progress bars.
    callbacks
        Sweep progress hooks (notebooks).
    workers
        Processes training at once on this machine (see :mod:`scalelib.workers`).
    config, sizes, regimes
        As for :func:`plan_demo`.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if preset not in ("demo", "smoke"):
        raise ScalelibError(f"unknown demo preset {preset!r}; choose demo or smoke")
    check_sweep_dir(out_dir)
    runs = plan_demo(out_dir, preset=preset, seeds=seeds, config=config, sizes=sizes,
                     regimes=regimes)
    run_with_workers(runs, out_dir, workers, rerun=rerun, callbacks=callbacks, progress=progress)
    results = read_results(out_dir / "results.parquet")  # the runs and their baselines
    fits = fit_groups(results, by=("regime",), methods=METHODS, n_bootstrap=n_bootstrap)
    files = {
        "results": out_dir / "results.parquet",
        "fits": write_fits(fits, out_dir / "fits.json"),
    }
    chart = scaling_chart(results, fits, method="huber",
                          title=f"{preset.capitalize()}: validation MSE against parameters")
    for path in save_chart(chart, out_dir / "scaling"):
        files[f"figure ({path.suffix[1:]})"] = path
    return DemoSummary(out_dir, results, fits, files, time.perf_counter() - started)


def plan_demo(out_dir: str | Path, *, preset: str = "demo", seeds: Sequence[int] = (0,),
              config: TrainConfig | None = None, sizes: Sequence[str] | None = None,
              regimes: Sequence[str] = DEMO_REGIMES) -> list[RunSpec]:
    """The demo's runs: the ladder of ``preset`` on both regimes, each at its regime's budget.

    Parameters
    ----------
    out_dir
        Output directory (its ``datasets/`` are simulated when missing).
    preset
        ``"demo"`` or ``"smoke"``.
    seeds
        Run seeds.
    config
        Training configuration (default: the training preset of ``preset``), e.g. the
        ``converge`` budget mode with a cap; its budget is the rich regime's, scaled per
        regime by :data:`REGIME_BUDGET_FRACTION`.
    sizes
        Names of the ladder's sizes to train (default all).
    regimes
        Which of :data:`DEMO_REGIMES` to train (default both).
    """
    config = TRAIN_PRESETS[preset] if config is None else config
    ladder = select_sizes(get_ladder(preset), list(sizes) if sizes else None)
    unknown = sorted(set(regimes) - set(DEMO_REGIMES))
    if unknown or not regimes:
        raise ScalelibError(f"unknown demo regime(s) {', '.join(unknown) or '(none given)'}; "
                            f"choose from {', '.join(DEMO_REGIMES)}")
    runs = []
    for regime in regimes:
        dataset = load_or_simulate(regime, preset, Path(out_dir) / "datasets")
        runs += plan_runs(dataset, ladder, regime_budget(config, regime), seeds=seeds)
    return runs


def regime_budget(config: TrainConfig, regime: str) -> TrainConfig:
    """``config`` with its budget scaled by the regime's :data:`REGIME_BUDGET_FRACTION`
    (unchanged for a regime not listed there).

    Parameters
    ----------
    config
        A training preset.
    regime
        The dataset's regime label.
    """
    fraction = REGIME_BUDGET_FRACTION.get(regime, 1.0)
    if config.max_cells is not None:
        return config.with_(max_cells=round(config.max_cells * fraction))
    return config.with_(max_steps=max(1, round(config.max_steps * fraction)))


def print_summary(summary: DemoSummary) -> None:
    """Print, per regime, the runs (with convergence; in the ``converge`` budget mode also
    their steps and the last doubling's gain), the baselines, each fit with its status in
    words, and where the files are."""
    transformers = transformer_rows(summary.results)
    baselines = baseline_rows(summary.results)
    for regime in DEMO_REGIMES:
        runs = transformers.filter(pl.col("regime") == regime).sort("params")
        if not runs.height:
            continue
        print(f"\n{regime}: transformers ({runs['converged'].sum()} of {runs.height} converged)")
        gains = ["steps", "val_improvement"] if (runs["budget_mode"] == "converge").any() else []
        print_table(runs.select("size", "params", "cells_seen", *gains, "converged",
                                "best_val_mse", "test_mse", "wall_time_s"))
        matched = matching_baselines(runs, baselines).sort("best_val_mse")
        if matched.height:
            print(f"{regime}: baselines on the same cells and masks")
            print_table(matched.select(pl.col("model_family").alias("baseline"),
                                       "best_val_mse", "test_mse"))
            best_model, best_baseline = runs["best_val_mse"].min(), matched["best_val_mse"][0]
            verb = "beats" if best_model < best_baseline else "does NOT beat"
            print(f"{regime}: the best transformer ({best_model:.4f}) {verb} the best baseline, "
                  f"{matched['model_family'][0]} ({best_baseline:.4f})")
        for fit in summary.fits:
            if fit.group.get("regime") == regime:
                print("  " + fit_sentence(fit))
    print(f"\nfinished in {summary.wall_time_s / 60:.1f} min; files:")
    for label, path in summary.files.items():
        print(f"  {label:<14} {path}")


def fit_sentence(fit: PowerLawFit) -> str:
    """Two lines: method, alpha with interval, c, R^2 in log space, bits and status; then the
    verdict in words (:func:`scalelib.scaling.describe`)."""
    def interval(name: str) -> str:
        if not fit.ci or name not in fit.ci:
            return ""
        low, high = fit.ci[name]
        return f" [{low:.3g}, {high:.3g}]"

    bits = f"{fit.bits:.2f}{interval('bits')}" if fit.status != "no_floor" else "n/a (no floor)"
    as_dict = fit.to_dict(with_bootstrap_params=False)
    return (f"{fit.method:<6} alpha {fit.alpha:.3f}{interval('alpha')}  c {fit.c:.3g}"
            f"{interval('c')}  R^2(log) {fit.r2_log:.3f}  bits {bits}  [{fit.status}]\n"
            f"         {verdict(as_dict)}: {describe(as_dict)}")
