"""Does the budget still matter? Rerun the largest sizes at twice the budget and compare.

A fitted floor is a floor of the data only if more compute would not lower it. The check takes
the largest sizes of a finished sweep, trains them again at twice the budget (a fixed-budget
run: twice its cells; a ``converge`` run: a fixed budget of twice the cells it saw), and says
whether their validation MSE moved by more than the fit's own uncertainty at that size: the
half-width of the 95% bootstrap band of the huber fit there (or, when wider, the spread of the
seeds at that size).

The reruns are written to ``budget_check.parquet`` in the sweep directory, never to
``results.parquet``, so fits never mix budgets; the comparison goes to ``budget_check.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from scalelib.atomic import atomic_path
from scalelib.errors import ScalelibError
from scalelib.results import read_results
from scalelib.scaling import PowerLawFit, fit_groups, json_ready, scaling_rows
from scalelib.sweep import RunSpec, run_sweep

CHECK_TABLE = "budget_check.parquet"
CHECK_SUMMARY = "budget_check.json"


@dataclass(frozen=True)
class BudgetCheck:
    """The comparison for one size: its loss at the sweep's budget and at twice that.

    Parameters
    ----------
    size, params
        The model size checked.
    cells_seen, cells_seen_doubled
        Mean training cells seen per run at the sweep's budget and in the rerun.
    val_mse, val_mse_doubled
        Mean best validation MSE over seeds at each budget.
    change
        ``val_mse_doubled - val_mse`` (negative: more budget helped).
    uncertainty
        The fit's uncertainty at this size (see the module docstring).
    moved
        Whether ``|change|`` exceeds ``uncertainty``.
    """

    size: str
    params: int
    cells_seen: float
    cells_seen_doubled: float
    val_mse: float
    val_mse_doubled: float
    change: float
    uncertainty: float
    moved: bool


def doubled_run(run: RunSpec, cells_seen: int) -> RunSpec:
    """The same run at twice the budget (see the module docstring).

    Parameters
    ----------
    run
        A finished run of the sweep.
    cells_seen
        Cells that run saw (the budget of a ``converge`` run is its outcome).
    """
    config = run.config
    if config.budget_mode == "converge":
        config = config.with_(budget_mode="fixed", max_cells=2 * cells_seen, max_steps=None,
                              patience=None)
    elif config.max_cells is not None:
        config = config.with_(max_cells=2 * config.max_cells)
    else:
        config = config.with_(max_steps=2 * config.max_steps)
    return RunSpec(run.dataset, run.size, run.seed, run.n_train, config)


def check_budget(runs: Sequence[RunSpec], out_dir: str | Path, *, n_sizes: int = 2,
                 n_bootstrap: int = 200, progress: bool = True) -> list[BudgetCheck]:
    """Rerun the ``n_sizes`` largest sizes of a finished sweep at twice the budget.

    Parameters
    ----------
    runs
        The sweep's planned runs (all finished in ``out_dir/results.parquet``), one dataset and
        training-set size.
    out_dir
        The sweep directory.
    n_sizes
        How many of the largest sizes to rerun (every seed of each).
    n_bootstrap
        Bootstrap resamples of the huber fit whose band gives the uncertainty.
    progress
        Show terminal progress bars.

    Returns
    -------
    list of BudgetCheck
        One per size checked, largest last; also written to ``budget_check.json``.

    Raises
    ------
    ScalelibError
        When a run of the sweep has not finished, or the runs span several datasets.
    """
    out_dir = Path(out_dir)
    runs = [run.on_this_machine() for run in runs]  # the IDs the sweep recorded
    results = read_results(out_dir / "results.parquet")
    rows = scaling_rows(results.filter(pl.col("run_id").is_in([r.run_id for r in runs])))
    if rows.get_column("dataset_fingerprint").n_unique() != 1:
        raise ScalelibError("the budget check takes one dataset at a time; run it per --data")
    by_params = rows.group_by("size").agg(pl.col("params").first()).sort("params")
    names = by_params.get_column("size").to_list()[-n_sizes:]
    checked = [r for r in runs if r.size.name in names and r.run_id in set(rows["run_id"])]
    if len(names) < n_sizes or not checked:
        raise ScalelibError(f"finish the sweep first: the budget check reruns its {n_sizes} "
                            "largest sizes, which need finished runs in results.parquet")
    seen = dict(zip(rows["run_id"], rows["cells_seen"]))
    doubled = [doubled_run(run, int(seen[run.run_id])) for run in checked]
    reruns = run_sweep(doubled, out_dir, table=CHECK_TABLE, progress=progress,
                       baselines=False)
    fit = fit_groups(rows, by=(), methods=("huber",), n_bootstrap=n_bootstrap)[0]
    checks = [_compare(name, rows, reruns, fit) for name in names]
    _write_summary(out_dir / CHECK_SUMMARY, checks, fit.status)
    return checks


def _compare(name: str, rows: pl.DataFrame, reruns: pl.DataFrame,
             fit: PowerLawFit) -> BudgetCheck:
    before = rows.filter(pl.col("size") == name)
    after = reruns.filter((pl.col("size") == name) & (pl.col("status") == "ok"))
    params = int(before["params"][0])
    low, high = fit.band(np.array([float(params)]))
    band = float((high[0] - low[0]) / 2) if np.isfinite(low[0]) else math.nan
    spread = float(before["best_val_mse"].std()) if before.height > 1 else 0.0
    uncertainty = max(band, spread) if math.isfinite(band) else spread
    val, val2 = float(before["best_val_mse"].mean()), float(after["best_val_mse"].mean())
    change = val2 - val
    return BudgetCheck(size=name, params=params, cells_seen=float(before["cells_seen"].mean()),
                       cells_seen_doubled=float(after["cells_seen"].mean()), val_mse=val,
                       val_mse_doubled=val2, change=change, uncertainty=uncertainty,
                       moved=bool(abs(change) > uncertainty))


def _write_summary(path: Path, checks: list[BudgetCheck], fit_status: str) -> None:
    document = {"fit_status": fit_status, "checks": [asdict(c) for c in checks],
                "budget_matters": any(c.moved for c in checks)}
    with atomic_path(path) as temporary:
        Path(temporary).write_text(json.dumps(json_ready(document), indent=1, allow_nan=False))


def budget_check_sentence(checks: Sequence[BudgetCheck]) -> str:
    """One line per size and a verdict: did twice the budget move the loss beyond the fit's
    uncertainty?

    Parameters
    ----------
    checks
        From :func:`check_budget`.
    """
    lines = []
    for check in checks:
        verb = "moved" if check.moved else "did not move"
        lines.append(f"  {check.size} (P={check.params:,}): {check.val_mse:.4f} -> "
                     f"{check.val_mse_doubled:.4f} with {check.cells_seen_doubled:,.0f} cells "
                     f"(change {check.change:+.4f}, uncertainty {check.uncertainty:.4f}): {verb}")
    if any(check.moved for check in checks):
        lines.append("twice the budget moved the largest models beyond the fit's uncertainty: "
                     "the floor is a floor at this budget (compute ran out)")
    else:
        lines.append("twice the budget did not move the largest models beyond the fit's "
                     "uncertainty: the budget no longer matters at these sizes")
    return "\n".join(lines)
