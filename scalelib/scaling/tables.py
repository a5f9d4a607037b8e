"""Fit every group of a results table, and tabulate fits (polars in, fits or a frame out)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from scalelib.errors import ScalelibError
from scalelib.fitrules import (
    BASELINE_KEYS,
    CI_NAMES,
    MSE_OBJECTIVE,
    TRANSFORMER,
    mixed_budgets,
    run_context,
    scaling_row_mask,
)
from scalelib.scaling.fitting import fit_power_law
from scalelib.scaling.joint import JointFit, failed_joint_fit, fit_joint
from scalelib.scaling.methods import _fitter
from scalelib.scaling.powerlaw import PowerLawFit
from scalelib.scaling.validation import _validate


def _require_columns(table: pl.DataFrame, columns: Iterable[str]) -> None:
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise ScalelibError(
            f"unknown column(s) {', '.join(map(repr, missing))}; the table has "
            f"{', '.join(table.columns)}"
        )


def ok_rows(table: pl.DataFrame) -> pl.DataFrame:
    """Rows with ``status == "ok"`` when the table has a text ``status`` column, else all.

    Parameters
    ----------
    table
        Any table; a results table in practice.
    """
    if "status" in table.columns and table.schema["status"] == pl.Utf8:
        return table.filter(pl.col("status") == "ok")
    return table




def transformer_rows(table: pl.DataFrame) -> pl.DataFrame:
    """Rows of trained models: all rows of a table without a ``model_family`` column.

    Parameters
    ----------
    table
        A results table (or any table).
    """
    if "model_family" not in table.columns:
        return table
    return table.filter(pl.col("model_family").fill_null(TRANSFORMER) == TRANSFORMER)


def baseline_rows(table: pl.DataFrame) -> pl.DataFrame:
    """Finished non-transformer baseline rows (empty for a table without ``model_family``).

    Parameters
    ----------
    table
        A results table.
    """
    if "model_family" not in table.columns:
        return table.clear()
    rows = ok_rows(table).filter(pl.col("model_family").fill_null(TRANSFORMER) != TRANSFORMER)
    return rows.filter(pl.col("best_val_mse").is_not_null())


def matching_baselines(runs: pl.DataFrame, baselines: pl.DataFrame) -> pl.DataFrame:
    """The baseline rows scored on the same data as ``runs``: same dataset fingerprint,
    training-set size and mask rate (the same validation cells and masks, the same training
    cells).

    Parameters
    ----------
    runs
        Transformer rows, e.g. one fit group.
    baselines
        Baseline rows (:func:`baseline_rows`).
    """
    keys = [k for k in BASELINE_KEYS if k in runs.columns and k in baselines.columns
            and runs[k].null_count() == 0]  # a key the runs do not record cannot tell apart
    if baselines.height == 0 or not keys:
        return baselines
    return baselines.join(runs.select(keys).unique(), on=keys, how="semi")


def scaling_rows(results: pl.DataFrame) -> pl.DataFrame:
    """Finished MSE runs that the fits against P use: per dataset, the runs at its largest D.

    A data-size sweep adds runs at smaller nested training sets to a dataset; the scaling fits
    in P use only the runs that saw the whole training set (the largest ``n_train_cells`` of
    each dataset fingerprint). The rule is :func:`scalelib.fitrules.scaling_row_mask`, which
    the offline explorer applies too.

    Parameters
    ----------
    results
        Results table.
    """
    keys = [c for c in ("status", "model_family", "objective", "best_val_mse", "n_train_cells",
                        "dataset_fingerprint", "dataset") if c in results.columns]
    mask = scaling_row_mask(results.select(keys).to_dicts())
    return results.filter(pl.Series(mask, dtype=pl.Boolean))


def data_size_rows(results: pl.DataFrame) -> pl.DataFrame:
    """Finished MSE runs of datasets trained at more than one training-set size D (data sweeps).

    Parameters
    ----------
    results
        Results table.
    """
    rows = transformer_rows(ok_rows(results)).filter(pl.col("best_val_mse").is_not_null())
    if "objective" in rows.columns:  # the joint fits are of MSE runs
        rows = rows.filter(pl.col("objective").fill_null(MSE_OBJECTIVE) == MSE_OBJECTIVE)
    several = pl.col("n_train_cells").n_unique().over("dataset_fingerprint") > 1
    return rows.filter(several)


def _refuse_mixed_budgets(rows: pl.DataFrame, by: Sequence[str]) -> None:
    """Raise when a fit group holds runs of several training budgets (:func:`mixed_budgets`)."""
    if "budget_steps" not in rows.columns:
        return
    refusal = mixed_budgets(rows.select([*dict.fromkeys([*by, "budget_steps"])]).to_dicts(), by)
    if refusal is not None:
        raise ScalelibError(refusal)


def _refuse_mixed_objectives(rows: pl.DataFrame, by: Sequence[str]) -> None:
    """Refuse a fit group holding runs of several training objectives (``objective``)."""
    if "objective" not in rows.columns or "objective" in by:
        return
    mixed = sorted({o for _, part in _groups(rows, by) if part["objective"].n_unique() > 1
                    for o in part["objective"].drop_nulls().unique().to_list()})
    if mixed:
        raise ScalelibError(f"a fit group mixes runs of the objectives {', '.join(mixed)}; "
                            "add objective to --group-by, or fit one objective's table")


def _groups(table: pl.DataFrame, by: Sequence[str]) -> list[tuple[dict[str, Any], pl.DataFrame]]:
    if not by:
        return [({}, table)]
    parts = table.partition_by(list(by), as_dict=True, maintain_order=True)
    keyed = [(dict(zip(by, key)), part) for key, part in parts.items()]
    return sorted(keyed, key=lambda item: tuple(_sort_key(v) for v in item[0].values()))


def _sort_key(value: Any) -> tuple:
    """Numbers in numeric order, then text, then missing values."""
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def _column(table: pl.DataFrame, name: str) -> np.ndarray:
    try:
        return table.get_column(name).cast(pl.Float64).to_numpy()
    except pl.exceptions.PolarsError as error:
        raise ScalelibError(f"column {name!r} is not numeric ({error}); pick another") from None


def fit_groups(table: pl.DataFrame, *, x: str = "params", y: str = "best_val_mse",
               by: Sequence[str] = ("regime",), methods: Sequence[str] = ("huber",),
               n_bootstrap: int = 0, seed: int = 0, baselines: pl.DataFrame | None = None,
               on_resample: Callable[[], object] | None = None) -> list[PowerLawFit]:
    """Fit every group of a table (only ``status == "ok"`` rows when it has a status column).

    Only trained models are fitted (``model_family == "transformer"`` when the table has that
    column), and a group must hold runs of one training budget (``budget_steps``; group by it
    to fit several, see :func:`scalelib.fitrules.mixed_budgets`). Two checks use what the table knows about the runs
    (:mod:`scalelib.statuses`): ``above_baseline`` when the group's best loss does not
    beat the best baseline scored on the same data, and ``budget_limited`` when a run carrying
    the fit (the larger half of the sizes, at least two) has ``converged`` false.

    Parameters
    ----------
    table
        A results table (or any table with the columns named).
    x
        Column of the x values, e.g. ``params``.
    y
        Column of the y values, e.g. ``best_val_mse``; baselines are compared in it too.
    by
        Columns whose value combinations define the groups (empty: the whole table).
    methods
        Fit methods, one fit per group and method.
    n_bootstrap
        Bootstrap resamples per fit (0: none).
    seed
        Seed of the bootstrap (the same for every fit).
    baselines
        Baseline rows to compare with (default: the table's own non-transformer rows).
    on_resample
        Called after each bootstrap resample of every fit (progress bars).

    Returns
    -------
    list of PowerLawFit
        Ordered by group then method, each with ``group`` set. A group that cannot be fitted
        (e.g. fewer than 3 distinct ``x``) gives a fit with status ``error``, NaN parameters
        and the reason in ``message``, so that other groups still report.

    Raises
    ------
    ScalelibError
        A named column is missing, the table has no finished runs, or a group mixes budgets.
    """
    _require_columns(table, [x, y, *by])
    for method in methods:
        _fitter(method)
    if baselines is None:
        baselines = baseline_rows(table)
    if table.height == 0:
        raise ScalelibError("the table has no rows; point to a table with one row per run")
    rows = transformer_rows(ok_rows(table))
    if rows.height == 0:
        raise ScalelibError("the table has no rows with status 'ok'; run or repair the sweep")
    rows = rows.filter(pl.col(y).is_not_null())  # MSE runs have no bits
    if rows.height == 0:
        raise ScalelibError(f"no run has a value in {y!r} (bits come from runs with "
                            "--objective gaussian or nb); pick another --y")
    _refuse_mixed_objectives(rows, by)
    _refuse_mixed_budgets(rows, by)
    fits = []
    for group, part in _groups(rows, by):
        context = run_context(part.to_dicts(), matching_baselines(part, baselines).to_dicts(),
                              x, y)
        for method in methods:
            try:
                xs, ys = _validate(_column(part, x), _column(part, y), x, y)
                fit = fit_power_law(xs, ys, method, n_bootstrap=n_bootstrap, seed=seed,
                                    on_resample=on_resample)
            except ScalelibError as error:
                fit = _failed_fit(method, part, x, str(error))
            fits.append(replace(fit, group=group, baseline=context.baseline,
                                unconverged=context.unconverged).with_issues(context.issues))
    return fits


def _failed_fit(method: str, part: pl.DataFrame, x: str, reason: str) -> PowerLawFit:
    nan = math.nan
    return PowerLawFit(method=method, a=nan, alpha=nan, c=nan, r2=nan, r2_log=nan, bits=nan,
                       n_runs=part.height, n_x=part.get_column(x).n_unique(), status="error",
                       message=reason, flags=("error",))


def fit_joint_table(table: pl.DataFrame, *, n: str = "params", d: str = "n_train_cells",
                    y: str = "best_val_mse", by: Sequence[str] = (), n_bootstrap: int = 0,
                    seed: int = 0, on_resample: Callable[[], object] | None = None,
                    errors: str = "raise") -> list[JointFit]:
    """Fit ``L(N, D)`` to every group of a table (``status == "ok"`` rows of trained models),
    e.g. a data sweep, with the checks of :func:`fit_groups` that need the runs
    (:func:`scalelib.fitrules.run_context` over the model sizes): ``above_baseline`` when the
    best run does not beat the best baseline scored on the same cells, ``budget_limited`` when
    a run at the larger half of the model sizes had not converged.

    Parameters
    ----------
    table
        A results table (or any table with the columns named).
    n
        Column of the model size ``N``.
    d
        Column of the data size ``D``.
    y
        Column of the loss.
    by
        Columns whose value combinations define the groups (empty: the whole table).
    n_bootstrap
        Bootstrap resamples per fit (0: none); see :func:`scalelib.scaling.joint.bootstrap_joint`.
    seed
        Seed of the bootstrap.
    on_resample
        Called after each bootstrap resample of every fit (progress bars).
    errors
        ``"raise"``: a group that cannot be fitted raises; ``"report"``: it gives a fit with
        status ``error``, NaN parameters and the reason in ``message`` (as :func:`fit_groups`).

    Returns
    -------
    list of JointFit
        One fit per group, in group order, each with ``group`` set and ``n``, ``d`` naming
        the columns.

    Raises
    ------
    ScalelibError
        A named column is missing or not numeric, a group mixes training budgets, or
        (``errors="raise"``) a group cannot be fitted.
    """
    _require_columns(table, [n, d, y, *by])
    rows = transformer_rows(ok_rows(table))
    if rows.height == 0:
        raise ScalelibError("the table has no rows to fit (none with status 'ok'); point to a "
                            "table with one row per run")
    _refuse_mixed_budgets(rows, by)
    baselines = baseline_rows(table)
    fits = []
    for group, part in _groups(rows, by):
        context = run_context(part.to_dicts(), matching_baselines(part, baselines).to_dicts(),
                              n, y, floor="E")
        try:
            fit = fit_joint(_column(part, n), _column(part, d), _column(part, y), names=(n, d),
                            n_bootstrap=n_bootstrap, seed=seed, on_resample=on_resample)
        except ScalelibError as error:
            if errors == "raise":
                raise
            fit = failed_joint_fit(str(error), n_runs=part.height, names=(n, d))
        fits.append(replace(fit, group=group).with_issues(context.issues))
    return fits


def fits_frame(fits: Sequence[PowerLawFit]) -> pl.DataFrame:
    """One row per fit: group columns, method, parameters, r2s, bits, status and CI bounds.

    Parameters
    ----------
    fits
        Power-law fits, e.g. from :func:`fit_groups`.

    Returns
    -------
    polars.DataFrame
        The fields of :meth:`PowerLawFit.to_dict` except ``group``, ``ci`` and
        ``bootstrap_params``, plus ``<name>_low``/``<name>_high`` for each name in
        ``CI_NAMES`` (NaN without bootstrap); an empty frame for no fits.
    """
    rows = []
    for fit in fits:
        row = dict(fit.group)
        row.update({k: v for k, v in fit.to_dict(with_bootstrap_params=False).items()
                    if k not in ("group", "ci")})
        for name in CI_NAMES:
            low, high = (fit.ci or {}).get(name, (math.nan, math.nan))
            row[f"{name}_low"], row[f"{name}_high"] = low, high
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
