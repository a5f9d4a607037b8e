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


def percentile_intervals(fits: Sequence[Any], names: Sequence[str],
                         level: float) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the named attributes over bootstrap fits (finite values only;
    NaN bounds where none is finite), shared by the power-law and joint bootstraps."""
    tail = 50 * (1 - level)
    intervals = {}
    for name in names:
        values = np.array([getattr(fit, name) for fit in fits], dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            low, high = np.percentile(values, [tail, 100 - tail])
            intervals[name] = (float(low), float(high))
        else:
            intervals[name] = (math.nan, math.nan)
    return intervals
