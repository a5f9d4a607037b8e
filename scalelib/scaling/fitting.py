"""The power-law entry points: :func:`fit_power_law` and its percentile bootstrap."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np

from scalelib.fitrules import CI_LEVEL, CI_NAMES
from scalelib.scaling.methods import (
    _default_starts,
    _fit_grid,
    _fit_huber,
    _fitter,
    _profile_starts,
    _theta_from,
)
from scalelib.scaling.numerics import percentile_intervals
from scalelib.scaling.optimise import _single_threaded_blas
from scalelib.scaling.powerlaw import PowerLawFit, interval_issues
from scalelib.scaling.validation import _validate


def fit_power_law(x: Iterable[float], y: Iterable[float], method: str = "huber", *,
                  n_bootstrap: int = 0, seed: int = 0,
                  on_resample: Callable[[], object] | None = None) -> PowerLawFit:
    """Fit ``y = a x^-alpha + c``.

    Parameters
    ----------
    x, y
        Positive, finite values, one point per run (e.g. ``params`` and ``best_val_mse``).
    method
        ``"huber"`` (log-sum-exp, Huber loss, L-BFGS-B from a grid of starts) or ``"grid"``
        (the reference study's grid over ``c`` with OLS in log space).
    n_bootstrap
        Bootstrap resamples for 95% intervals (0: none); see :func:`bootstrap_power_law`.
    seed
        Seed of the bootstrap.
    on_resample
        Called after each bootstrap resample (progress bars).

    Returns
    -------
    PowerLawFit
        Frozen result; soft problems are in ``status`` and ``message``.

    Raises
    ------
    ScalelibError
        Fewer than 3 distinct ``x``, values that are missing or not positive, unknown method.
    """
    fitter = _fitter(method)
    xs, ys = _validate(x, y)
    with _single_threaded_blas():
        fit = fitter(xs, ys)
    if n_bootstrap > 0:
        fit = bootstrap_power_law(xs, ys, method, n_resamples=n_bootstrap, seed=seed, fit=fit,
                                  on_resample=on_resample)
    return fit


def _refit(xs: np.ndarray, ys: np.ndarray, method: str, full: PowerLawFit) -> PowerLawFit:
    """Refit a resample. Huber starts from the full-data fit, the two best basins of the
    resample's grid profile and one steep grid point, and falls back to the whole grid of
    starts when that does not converge.
    """
    if method == "grid":
        return _fit_grid(xs, ys)
    warm = _theta_from(full.a, full.alpha, full.c)
    starts = ([warm] if warm is not None else []) + _profile_starts(xs, ys) + _default_starts(
        xs, ys, fractions=(0.5,), alphas=(1.0,), shifts=(0.0,))
    fit = _fit_huber(xs, ys, starts=starts)
    if fit.status == "not_converged":
        fit = _fit_huber(xs, ys)
    return fit


def bootstrap_power_law(x: Iterable[float], y: Iterable[float], method: str = "huber", *,
                        n_resamples: int = 1000, seed: int = 0, fit: PowerLawFit | None = None,
                        level: float = CI_LEVEL,
                        on_resample: Callable[[], object] | None = None) -> PowerLawFit:
    """Percentile bootstrap over runs: resample rows with replacement and refit each resample.

    Resamples with fewer than 3 distinct ``x`` are skipped and counted in
    ``bootstrap_failures``. The result is ``fit`` (fitted here when None) with ``ci`` (intervals
    for alpha, a, c, bits and r2_log at ``level``) and the kept ``bootstrap_params``.

    Parameters
    ----------
    x, y
        The points of the full fit.
    method
        ``"huber"`` or ``"grid"``.
    n_resamples
        Number of resamples drawn.
    seed
        Seed of ``numpy.random.default_rng``; the same seed gives the same intervals.
    fit
        The full-data fit, when already computed (huber resamples start from it).
    level
        Coverage of the percentile intervals.
    on_resample
        Called after each resample, e.g. to advance a progress bar.

    Returns
    -------
    PowerLawFit
        The full-data fit with ``ci``, ``ci_level``, ``n_bootstrap``, ``bootstrap_seed``,
        ``bootstrap_failures`` and ``bootstrap_params`` set; intervals are NaN when no
        resample was kept.
    """
    fitter = _fitter(method)
    xs, ys = _validate(x, y)
    rng = np.random.default_rng(seed)
    kept, failures = [], 0
    with _single_threaded_blas():
        full = fit if fit is not None else fitter(xs, ys)
        for _ in range(n_resamples):
            rows = rng.integers(0, xs.size, size=xs.size)
            if np.unique(xs[rows]).size < 3:
                failures += 1
            else:
                kept.append(_refit(xs[rows], ys[rows], method, full))
            if on_resample is not None:
                on_resample()
    ci = percentile_intervals(kept, CI_NAMES, level)
    message = full.message
    if not kept:
        message = "; ".join(filter(None, [message, "bootstrap: every resample was skipped"]))
    fit = replace(full, ci=ci, ci_level=level, n_bootstrap=n_resamples, bootstrap_seed=seed,
                  bootstrap_failures=failures, message=message,
                  bootstrap_params=tuple((f.a, f.alpha, f.c) for f in kept))
    return fit.with_issues(interval_issues(fit, float(ys.min())))
