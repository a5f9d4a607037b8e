"""The optimiser shared by the huber and joint fits: Huber loss and multi-start L-BFGS-B."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import optimize

from scalelib.errors import ScalelibError

_LBFGS_OPTIONS = {"maxiter": 500, "ftol": 1e-12, "gtol": 1e-8}


def _huber(residual: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Summed Huber loss of ``residual`` divided by ``delta``, and its gradient."""
    size = np.abs(residual)
    value = np.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta))
    return float(value.sum()) / delta, np.clip(residual, -delta, delta) / delta


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread: L-BFGS-B on a handful of parameters runs several times faster
    that way, on a busy machine many times (threadpoolctl is optional; without it, no-op)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


class _Optimum(NamedTuple):
    vector: np.ndarray
    loss: float
    converged: bool
    message: str


def _lbfgs(objective: Callable, starts: Sequence[np.ndarray], args: tuple,
           bounds: Sequence[tuple[float | None, float | None]]) -> _Optimum:
    """Run L-BFGS-B from every start; keep the lowest final loss.

    A run that stops on an abnormal line search counts as converged when its projected
    gradient is negligible (the Huber kink makes line searches fail at the optimum).
    """
    best = None
    for start in starts:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = optimize.minimize(objective, start, args=args, jac=True, method="L-BFGS-B",
                                       bounds=bounds, options=_LBFGS_OPTIONS)
        if np.isfinite(result.fun) and (best is None or result.fun < best.fun):
            best = result
    if best is None:
        raise ScalelibError("the fit diverged from every starting point; check the data scale")
    gradient = _projected_gradient(best.x, best.jac, bounds)
    small = bool(np.max(np.abs(gradient)) <= 1e-4 * max(1.0, abs(best.fun)))
    return _Optimum(best.x, float(best.fun), bool(best.success) or small, str(best.message))


def _projected_gradient(vector: np.ndarray, gradient: np.ndarray,
                        bounds: Sequence[tuple[float | None, float | None]]) -> np.ndarray:
    """The gradient with components pointing out of an active bound set to zero."""
    projected = np.array(gradient, dtype=float)
    for i, (low, high) in enumerate(bounds):
        at_low = low is not None and vector[i] <= low and projected[i] > 0
        at_high = high is not None and vector[i] >= high and projected[i] < 0
        if at_low or at_high:
            projected[i] = 0.0
    return projected
