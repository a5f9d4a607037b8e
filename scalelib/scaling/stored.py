"""A sweep's fits: its ``fits.json`` while that still describes the runs, else fitted anew.

One staleness rule for every face (report, scaling notebook, explorer bundle): a stored file is
used when it fits ``best_val_mse`` against ``params`` per regime alone, with every wanted method
for exactly the regimes of the runs and as many runs per regime as they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from scalelib.errors import ScalelibError
from scalelib.fitrules import METHODS
from scalelib.scaling.fitsfile import FitsFile, read_fits
from scalelib.scaling.tables import fit_groups

FITS_NAME = "fits.json"


def stored_fits_mismatch(stored: FitsFile, rows: pl.DataFrame,
                         methods: Sequence[str] = METHODS) -> str | None:
    """Why a fits file does not describe ``rows`` (None when it does).

    Parameters
    ----------
    stored
        The fits file's contents.
    rows
        The runs the fits must describe (:func:`scalelib.scaling.scaling_rows`).
    methods
        Methods that must be fitted for every regime.
    """
    if (stored.x, stored.y) != ("params", "best_val_mse"):
        return f"it fits {stored.y} against {stored.x}, not best_val_mse against params"
    if any(set(fit.group) != {"regime"} for fit in stored.fits):
        return "its fits are not grouped by regime alone"
    counts = dict(rows.group_by("regime").len().iter_rows())
    have = {(fit.group["regime"], fit.method): fit.n_runs for fit in stored.fits}
    if {regime for regime, _ in have} != set(counts):
        return (f"it fits regimes {sorted({r for r, _ in have})}, the results hold "
                f"{sorted(counts)}")
    for regime, n_runs in counts.items():
        for method in methods:
            found = have.get((regime, method))
            if found != n_runs:
                return (f"its {method} fit of {regime} "
                        + ("is missing" if found is None else f"has {found} runs")
                        + f", the results have {n_runs}")
    return None


def stored_or_fitted(
    sweep_dir: str | Path, rows: pl.DataFrame, *, methods: Sequence[str] = METHODS,
    n_bootstrap: int = 1000, seed: int = 0, refit: bool = False,
    baselines: pl.DataFrame | None = None, on_resample: Callable[[], object] | None = None,
) -> tuple[FitsFile, str | None]:
    """The fits per regime of ``rows``: ``sweep_dir/fits.json`` when it matches, else fitted.

    Parameters
    ----------
    sweep_dir
        Directory that may hold ``fits.json``.
    rows
        The runs the fits must describe (:func:`scalelib.scaling.scaling_rows`).
    methods
        Fit methods wanted.
    n_bootstrap, seed
        Bootstrap resamples and seed, used only when fitting.
    refit
        Fit even when the stored file matches.
    baselines
        Baseline rows the fits are compared with when fitting (``above_baseline``); default:
        those among ``rows``.
    on_resample
        Called after each bootstrap resample while fitting (for progress bars).

    Returns
    -------
    fits, reason
        The fits (``joint_fits`` kept from a stored file) and why they were fitted here; the
        reason is None when they come from ``fits.json``.
    """
    path = Path(sweep_dir) / FITS_NAME
    if refit:
        reason = "a refit was asked for"
    elif not path.is_file():
        reason = f"the results directory has no {FITS_NAME}"
    else:
        try:
            stored = read_fits(path)
        except ScalelibError as error:
            reason = f"{FITS_NAME} is unreadable ({error})"
        else:
            mismatch = stored_fits_mismatch(stored, rows, methods)
            if mismatch is None:
                wanted = tuple(fit for fit in stored.fits if fit.method in methods)
                return FitsFile(stored.x, stored.y, wanted, stored.joint_fits, stored.created,
                                stored.scalelib_version), None
            reason = f"{FITS_NAME} does not match the runs: {mismatch}"
    fitted = fit_groups(rows, by=("regime",), methods=tuple(methods), n_bootstrap=n_bootstrap,
                        seed=seed, baselines=baselines, on_resample=on_resample)
    return FitsFile("params", "best_val_mse", tuple(fitted)), reason
