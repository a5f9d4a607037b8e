"""The two fit methods of ``y = a x^-alpha + c``: ``grid`` (the reference study's) and ``huber``.

Each takes validated points and returns a :class:`~scalelib.scaling.powerlaw.PowerLawFit`;
:func:`_fitter` picks one by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from scalelib.errors import ScalelibError
from scalelib.fitrules import (
    ALPHA_BOUNDS,
    GRID_POINTS,
    GRID_TOP,
    HUBER_DELTA,
    METHODS,
    RISING_MESSAGE,
)
from scalelib.scaling.optimise import _huber, _lbfgs
from scalelib.scaling.params import _bounds, _Theta, _unpack
from scalelib.scaling.powerlaw import PowerLawFit, _assemble, rises

# --------------------------------------------------------------------------------------------
# The grid method (the reference study's)


class _GridBest(NamedTuple):
    a: float
    alpha: float
    c: float
    r2: float
    at_top: bool
    at_bottom: bool


class _GridProfile(NamedTuple):
    """OLS of ``log(y - c)`` on ``log x`` at every ``c`` of the grid (arrays over the grid)."""

    c: np.ndarray
    a: np.ndarray
    alpha: np.ndarray
    r2: np.ndarray


def _grid_profile(xs: np.ndarray, ys: np.ndarray, points: int = GRID_POINTS) -> _GridProfile:
    """The reference study's regressions for all ``points`` values of c at once."""
    cs = np.linspace(0.0, GRID_TOP * ys.min(), points)
    log_x = np.log(xs)
    centred_x = log_x - log_x.mean()
    targets = np.log(ys[None, :] - cs[:, None])
    means = targets.mean(axis=1)
    slopes = (targets - means[:, None]) @ centred_x / np.sum(centred_x**2)
    residuals = targets - means[:, None] - slopes[:, None] * centred_x[None, :]
    totals = np.sum((targets - means[:, None]) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(totals > 0, 1.0 - np.sum(residuals**2, axis=1) / totals, 0.0)
    intercepts = means - slopes * log_x.mean()
    alpha = -slopes
    clipped = np.clip(alpha, *ALPHA_BOUNDS)
    outside = clipped != alpha
    if outside.any():  # the exponent stays in its bounds: refit the intercept at the bound
        intercepts = np.where(outside, means + clipped * log_x.mean(), intercepts)
        fitted = intercepts[:, None] - clipped[:, None] * log_x[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            bounded_r2 = np.where(totals > 0, 1.0 - np.sum((targets - fitted) ** 2, axis=1)
                                  / totals, 0.0)
        r2 = np.where(outside, bounded_r2, r2)
    return _GridProfile(c=cs, a=np.exp(intercepts), alpha=clipped, r2=r2)


def _grid_search(xs: np.ndarray, ys: np.ndarray) -> _GridBest:
    """The c of the grid with the highest regression R^2, and its a and alpha."""
    profile = _grid_profile(xs, ys)
    best = int(np.nanargmax(profile.r2))
    return _GridBest(a=float(profile.a[best]), alpha=float(profile.alpha[best]),
                     c=float(profile.c[best]), r2=float(profile.r2[best]),
                     at_top=best == profile.c.size - 1, at_bottom=best == 0)


def _profile_starts(xs: np.ndarray, ys: np.ndarray, count: int = 2) -> list[np.ndarray]:
    """Huber starts from the grid profile: the ``count`` lowest local minima, along c, of the
    Huber loss of the regression curves (one per basin; cheap, vectorised)."""
    profile = _grid_profile(xs, ys)
    usable = (profile.c > 0) & (profile.alpha > ALPHA_BOUNDS[0]) & (
        profile.alpha < ALPHA_BOUNDS[1])
    if not usable.any():
        return []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_pred = np.logaddexp(
            np.log(profile.a)[:, None] - profile.alpha[:, None] * np.log(xs)[None, :],
            np.log(profile.c)[:, None])
        size = np.abs(np.log(ys)[None, :] - log_pred)
        loss = np.where(size <= HUBER_DELTA, 0.5 * size**2,
                        HUBER_DELTA * (size - 0.5 * HUBER_DELTA)).sum(axis=1)
    loss = np.where(usable & np.isfinite(loss), loss, np.inf)
    padded = np.concatenate([[np.inf], loss, [np.inf]])
    minima = np.flatnonzero((loss <= padded[:-2]) & (loss <= padded[2:]) & np.isfinite(loss))
    best = minima[np.argsort(loss[minima])][:count]
    return [np.array(_Theta(log_a=math.log(profile.a[i]), alpha=float(profile.alpha[i]),
                            log_c=math.log(profile.c[i]))) for i in best]


def _fit_grid(xs: np.ndarray, ys: np.ndarray) -> PowerLawFit:
    best = _grid_search(xs, ys)
    issues = []
    if best.at_top:
        reason = f"c is at the top of its grid ({GRID_TOP} x min y): the floor is not resolved"
        issues.append(("c_at_bound", reason))
    if best.at_bottom:
        issues.append(("c_at_bound", ("c is at the bottom of its grid (0): the floor is not "
                       "resolved")))
    if best.alpha <= ALPHA_BOUNDS[0] and rises(np.log(xs), np.log(ys)):
        issues.insert(0, ("increasing", RISING_MESSAGE))
    return _assemble("grid", xs, ys, best.a, best.alpha, best.c, best.r2, issues)


# --------------------------------------------------------------------------------------------
# The huber method (log-sum-exp, Huber loss, L-BFGS-B)


def _power_law_objective(vector: np.ndarray, log_x: np.ndarray, log_y: np.ndarray,
                         delta: float) -> tuple[float, np.ndarray]:
    theta = _unpack(vector)
    term = theta.log_a - theta.alpha * log_x
    log_pred = np.logaddexp(term, theta.log_c)
    value, slope = _huber(log_y - log_pred, delta)
    share = np.exp(term - log_pred)  # d log_pred / d log_a
    gradient = _Theta(log_a=-(slope @ share), alpha=slope @ (share * log_x),
                      log_c=-(slope @ (1.0 - share)))
    return value, np.array(gradient)


def _theta_from(a: float, alpha: float, c: float) -> np.ndarray | None:
    """Optimiser start from natural parameters (None when a or c is not positive)."""
    if not (a > 0 and c > 0 and np.isfinite(alpha)):
        return None
    alpha = min(max(alpha, ALPHA_BOUNDS[0]), ALPHA_BOUNDS[1])
    return np.array(_Theta(log_a=math.log(a), alpha=alpha, log_c=math.log(c)))


def _default_starts(xs: np.ndarray, ys: np.ndarray,
                    fractions: Sequence[float] = (0.1, 0.5, 0.9),
                    alphas: Sequence[float] = (0.1, 0.3, 0.6, 1.0, 2.0),
                    shifts: Sequence[float] = (-1.0, 0.0, 1.0)) -> list[np.ndarray]:
    """A scale-free grid: c a fraction of min y, the power-law term matched at median x.

    One start per combination of ``fractions`` (c over min y), ``alphas`` and ``shifts``
    (added to log a after matching ``a x^-alpha + c`` to the median y at the median log x).
    """
    mid_x, mid_y = float(np.median(np.log(xs))), float(np.median(ys))
    starts = []
    for fraction in fractions:
        c = fraction * ys.min()
        gap = max(mid_y - c, 1e-3 * mid_y)
        for alpha in alphas:
            for shift in shifts:
                starts.append(np.array(_Theta(log_a=math.log(gap) + alpha * mid_x + shift,
                                              alpha=alpha, log_c=math.log(c))))
    return starts


def _fit_huber(xs: np.ndarray, ys: np.ndarray, starts: Sequence[np.ndarray] | None = None,
               delta: float = HUBER_DELTA) -> PowerLawFit:
    if np.ptp(ys) == 0:  # constant: nothing to optimise, reported as flat
        return _assemble("huber", xs, ys, 0.0, 0.0, float(ys[0]), 0.0, [])
    if starts is None:
        starts = _default_starts(xs, ys) + _profile_starts(xs, ys)
    bounds = _bounds(_Theta, ys)
    optimum = _lbfgs(_power_law_objective, starts, (np.log(xs), np.log(ys), delta), bounds)
    theta = _unpack(optimum.vector)
    issues = []
    if not optimum.converged:
        issues.append(("not_converged", f"L-BFGS-B did not converge: {optimum.message}"))
    if min(abs(theta.alpha - bound) for bound in ALPHA_BOUNDS) < 1e-6:
        issues.append(("alpha_at_bound", f"alpha = {theta.alpha:g} is at a bound {ALPHA_BOUNDS}"))
    if theta.alpha < ALPHA_BOUNDS[0] + 1e-6 and rises(np.log(xs), np.log(ys)):
        issues.insert(0, ("increasing", RISING_MESSAGE))
    a, c = math.exp(theta.log_a), math.exp(theta.log_c)
    return _assemble("huber", xs, ys, a, theta.alpha, c, math.nan, issues)


# --------------------------------------------------------------------------------------------
# Choosing a method


def _fitter(method: str) -> Callable[[np.ndarray, np.ndarray], PowerLawFit]:
    fitters = {"grid": _fit_grid, "huber": _fit_huber}
    if method not in fitters:
        raise ScalelibError(f"unknown fit method {method!r}; choose one of {', '.join(METHODS)}")
    return fitters[method]
