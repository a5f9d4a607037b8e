"""Checks of the points a user hands to a fit; problems raise a ScalelibError naming the fix."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from scalelib.errors import ScalelibError

# Values a fit accepts: a power law's a = L x^alpha must stay a float for every x and alpha in
# the fitters' bounds, which values near the float limits (1e308) do not allow.
VALUE_RANGE = (1e-100, 1e100)


def _checked(values: Iterable[float], name: str) -> np.ndarray:
    """A 1-D float array of finite, positive values, or a ScalelibError naming the fix."""
    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as error:
        raise ScalelibError(f"{name} must be numbers ({error}); pick a numeric column") from None
    bad = int(np.sum(~np.isfinite(array)))
    if bad:
        raise ScalelibError(
            f"{name} has {bad} missing, NaN or infinite value(s); drop those rows "
            "(e.g. failed runs) before fitting"
        )
    if np.any(array <= 0):
        raise ScalelibError(
            f"{name} must be positive for a log-log fit, but {int(np.sum(array <= 0))} value(s) "
            f"are <= 0 (smallest {array.min():g}); drop or fix those rows"
        )
    outside = int(np.sum((array < VALUE_RANGE[0]) | (array > VALUE_RANGE[1])))
    if outside:
        raise ScalelibError(
            f"{name} has {outside} value(s) outside {VALUE_RANGE[0]:g} to {VALUE_RANGE[1]:g} "
            f"(largest {array.max():g}, smallest {array.min():g}), too extreme to fit in "
            "floating point; rescale the column (e.g. divide it by a power of ten)"
        )
    return array


def _validate(x: Iterable[float], y: Iterable[float], x_name: str = "x",
              y_name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    xs, ys = _checked(x, x_name), _checked(y, y_name)
    if xs.shape != ys.shape:
        raise ScalelibError(f"{x_name} and {y_name} differ in length ({xs.size} vs {ys.size})")
    distinct = np.unique(xs).size
    if distinct < 3:
        raise ScalelibError(
            f"a power law with a floor needs at least 3 distinct {x_name} values, got "
            f"{distinct}; add runs at more values of {x_name} (or group by fewer columns)"
        )
    return xs, ys
