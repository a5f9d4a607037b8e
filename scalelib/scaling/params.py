"""Optimiser parameters: the only place that maps optimiser vectors (and sample arrays) to names.

Exponents are bounded to ``ALPHA_BOUNDS``; log coefficients to at least
``log(min y) - LOG_FLOOR`` (see :func:`_bounds`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from scalelib.fitrules import ALPHA_BOUNDS, LOG_FLOOR


class _Theta(NamedTuple):
    """Optimiser coordinates of ``a x^-alpha + c``."""

    log_a: float
    alpha: float
    log_c: float


class _JointTheta(NamedTuple):
    """Optimiser coordinates of ``E + A / N^alpha + B / D^beta``."""

    log_a: float
    log_b: float
    log_e: float
    alpha: float
    beta: float


class _Natural(NamedTuple):
    """Columns of ``bootstrap_params``: one array per parameter."""

    a: np.ndarray
    alpha: np.ndarray
    c: np.ndarray


def _unpack(vector: np.ndarray, kind: type = _Theta) -> Any:
    """Name the entries of an optimiser vector."""
    return kind(*(float(v) for v in vector))


def _bounds(kind: type, ys: np.ndarray) -> list[tuple[float | None, float | None]]:
    """L-BFGS-B bounds by field name: exponents in ``ALPHA_BOUNDS``; log coefficients at least
    ``log(min y) - LOG_FLOOR`` (below it a term is negligible everywhere, and the bound stops a
    degenerate fit from drifting towards minus infinity for thousands of iterations)."""
    floor = math.log(ys.min()) - LOG_FLOOR
    return [ALPHA_BOUNDS if name in ("alpha", "beta") else (floor, None)
            for name in kind._fields]


def _sample_columns(samples: np.ndarray) -> _Natural:
    """Name the columns of an ``(n, 3)`` array of bootstrap ``(a, alpha, c)`` triples."""
    return _Natural(*np.asarray(samples, dtype=float).reshape(-1, 3).T)
