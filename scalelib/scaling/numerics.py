"""Numbers shared by every fit: the power-law curve, R^2, entropy in bits, null as NaN."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def entropy_bits(c: float | np.ndarray) -> float | np.ndarray:
    """Bits per masked gene of an irreducible MSE ``c``: ``0.5 * log2(2 pi e c)``.

    This is the differential entropy of a Gaussian with variance ``c``. It treats the
    irreducible MSE as the variance of Gaussian noise on log1p expression; since the Gaussian
    has the largest entropy of all distributions with a given variance, it is an upper bound on
    the entropy of that noise under MSE. ``c <= 0`` (or NaN) gives NaN.

    Parameters
    ----------
    c
        Irreducible MSE, a scalar or an array.

    Returns
    -------
    float or numpy.ndarray
        Bits, a float for a scalar ``c`` and an array of the same shape otherwise.

    Examples
    --------
    >>> round(float(entropy_bits(1.44)), 2)
    2.31
    """
    values = np.asarray(c, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = np.where(values > 0, 0.5 * np.log2(2 * np.pi * np.e * values), np.nan)
    return float(bits) if bits.ndim == 0 else bits


def _power_law(x: np.ndarray, a: Any, alpha: Any, c: Any) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return a * x ** -alpha + c


def _r2(observed: np.ndarray, predicted: np.ndarray) -> float:
    """``1 - SS_res / SS_tot``; 0 when ``observed`` is constant; NaN for a bad prediction."""
    if not np.all(np.isfinite(predicted)):
        return math.nan
    total = float(np.sum((observed - observed.mean()) ** 2))
    if total == 0.0:
        return 0.0
    return 1.0 - float(np.sum((observed - predicted) ** 2)) / total


def _log_r2(y: np.ndarray, predicted: np.ndarray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return _r2(np.log(y), np.log(predicted))


def _float(value: Any) -> float:
    """``value`` as a float; ``None`` (JSON ``null``) becomes NaN."""
    return math.nan if value is None else float(value)


def percentile_intervals(fits: Sequence[Any], names: Sequence[str], level: float, *,
                         keep_infinite: bool = False) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the named attributes over bootstrap fits (see
    :func:`percentile_interval`), shared by the power-law and joint bootstraps and the
    allocations derived from them."""
    return {name: percentile_interval([getattr(fit, name) for fit in fits], level,
                                      keep_infinite=keep_infinite)
            for name in names}


def percentile_interval(values: Sequence[float] | np.ndarray, level: float, *,
                        keep_infinite: bool = False) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap values.

    Parameters
    ----------
    values
        One value per resample.
    level
        Coverage, e.g. 0.95.
    keep_infinite
        False: only finite values count (linear interpolation between order statistics).
        True: infinite values count as resamples too (a quantity beyond every size, such as
        the data size below which more parameters stop paying when ``alpha`` is 0), and the
        ends are the order statistics just outside the percentiles (numpy's ``lower`` and
        ``higher``), so an end is infinite when more than the tail share of resamples is.

    Returns
    -------
    tuple of float
        ``(low, high)``; NaN ends when no value counts.
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)] if keep_infinite else values[np.isfinite(values)]
    if not values.size:
        return (math.nan, math.nan)
    tail = 50 * (1 - level)
    if keep_infinite:
        return (float(np.percentile(values, tail, method="lower")),
                float(np.percentile(values, 100 - tail, method="higher")))
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))
