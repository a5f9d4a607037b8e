"""What a joint fit ``L(N, D) = E + A / N^alpha + B / D^beta`` says about spending compute.

- :func:`optimal_allocation`: the model size ``N`` and data size ``D`` that minimise the fitted
  loss for a training budget of ``C`` FLOPs, where training costs ``C = c(N) D`` (``c(N)``
  FLOPs per training item: ``6 N`` per token for a language model, the model's exact count per
  cell for scalelib's transformers, see :class:`FlopsPerItem`). Found by a bounded scalar
  search over ``log N`` (for ``c = k N`` it matches the closed form of Hoffmann et al. 2022,
  ``N* = G (C / k)^(beta / (alpha + beta))``, ``G = (alpha A / (beta B))^(1 / (alpha + beta))``).
- :func:`stop_paying_ratio`: the data-to-parameter ratio ``D / N`` below which more parameters
  stop paying: at a model size ``N``, the loss gained by doubling ``N``,
  ``A N^-alpha (1 - 2^-alpha)``, falls below ``tolerance`` times the gain of doubling ``D``,
  ``B D^-beta (1 - 2^-beta)``, once ``D`` is under
  ``D*(N) = (tolerance B (1 - 2^-beta) N^alpha / (A (1 - 2^-alpha)))^(1 / beta)``.
  The ratio ``D*(N) / N`` depends on ``N`` unless ``alpha == beta``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from scalelib.errors import ScalelibError
from scalelib.scaling.joint import JointFit

SEARCH_DECADES = 8.0  # the search for N* spans this many decades beyond the fitted N


@dataclass(frozen=True)
class FlopsPerItem:
    """Training FLOPs per item (cell, token) as a function of the model size ``N``.

    Either a constant multiple of ``N`` (``multiple``), or a piecewise power law through
    measured ``(N, FLOPs per item)`` points (log-log linear interpolation, extended by the
    end segments' slopes), e.g. the ``params`` and ``flops_per_cell`` of a sweep's runs.
    """

    multiple: float | None = None
    points: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_points(cls, n: Sequence[float], flops: Sequence[float]) -> FlopsPerItem:
        """Interpolate measured FLOPs per item between model sizes.

        Parameters
        ----------
        n, flops
            Model sizes and their FLOPs per item (repeats of a size must agree); at least one
            size, all positive.
        """
        pairs = sorted({(float(a), float(b)) for a, b in zip(n, flops)})
        sizes = [a for a, _ in pairs]
        if not pairs or min(min(p) for p in pairs) <= 0 or not all(map(math.isfinite, sizes)):
            raise ScalelibError("FLOPs per item need positive model sizes and FLOP counts; "
                                "check the FLOPs column")
        if len(set(sizes)) != len(sizes):
            raise ScalelibError("one model size has several FLOP counts per item; give one "
                                "count per size (group the table by the data that changes it)")
        return cls(points=tuple(pairs))

    def __call__(self, n: float | np.ndarray) -> np.ndarray:
        """FLOPs per item at model size ``n``."""
        n = np.asarray(n, dtype=float)
        if self.multiple is not None:
            return self.multiple * n
        log_n, log_c = np.log(np.array(self.points)).T
        if log_n.size == 1:
            return np.exp(log_c[0] + np.log(n) - log_n[0])  # one size: c proportional to N
        slopes = np.diff(log_c) / np.diff(log_n)
        segment = np.clip(np.searchsorted(log_n, np.log(n)) - 1, 0, log_n.size - 2)
        return np.exp(log_c[segment] + slopes[segment] * (np.log(n) - log_n[segment]))

    def describe(self) -> str:
        """How the FLOPs per item are computed, in words."""
        if self.multiple is not None:
            return f"{self.multiple:g} N FLOPs per item"
        return f"FLOPs per item interpolated between {len(self.points)} model sizes"


@dataclass(frozen=True)
class Allocation:
    """The compute-optimal model and data size for one training budget.

    ``extrapolated`` is true when ``n`` or ``d`` lies outside the ranges the fit saw.
    """

    flops: float
    n: float
    d: float
    loss: float
    extrapolated: bool = False

    @property
    def ratio(self) -> float:
        """Data items per parameter, ``d / n``."""
        return self.d / self.n

    def to_dict(self) -> dict[str, float | bool]:
        """A JSON-ready dictionary."""
        return {"flops": self.flops, "n": self.n, "d": self.d, "loss": self.loss,
                "ratio": self.ratio, "extrapolated": self.extrapolated}


def optimal_allocation(fit: JointFit, flops: float, cost: FlopsPerItem, *,
                       n_range: tuple[float, float], d_range: tuple[float, float] | None = None,
                       ) -> Allocation:
    """The ``N`` and ``D = C / c(N)`` that minimise the fitted loss at a budget of ``C`` FLOPs.

    Parameters
    ----------
    fit
        A joint fit with finite parameters.
    flops
        Training budget ``C`` in FLOPs.
    cost
        FLOPs per item as a function of ``N``.
    n_range
        Smallest and largest ``N`` the fit saw; the search spans :data:`SEARCH_DECADES` beyond.
    d_range
        Smallest and largest ``D`` the fit saw (to mark an extrapolated allocation).

    Raises
    ------
    ScalelibError
        A budget that is not a positive number, or a fit without finite parameters.
    """
    _check_fit(fit)
    if not (math.isfinite(flops) and flops > 0):
        raise ScalelibError(f"the FLOP budget must be a positive number, got {flops!r}")

    def loss_at(log_n: float) -> float:
        n = math.exp(log_n)
        return float(fit.predict(n, flops / cost(n)))

    span = SEARCH_DECADES * math.log(10)
    bounds = (math.log(n_range[0]) - span, math.log(n_range[1]) + span)
    best = optimize.minimize_scalar(loss_at, bounds=bounds, method="bounded",
                                    options={"xatol": 1e-9})
    n = math.exp(best.x)
    d = flops / float(cost(n))
    outside = not n_range[0] <= n <= n_range[1] or (
        d_range is not None and not d_range[0] <= d <= d_range[1])
    return Allocation(flops=flops, n=n, d=d, loss=float(fit.predict(n, d)), extrapolated=outside)


def stop_paying_data(fit: JointFit, n: float | np.ndarray, tolerance: float = 0.1) -> np.ndarray:
    """The data size ``D*(N)`` below which doubling ``N`` gains less than ``tolerance`` times
    what doubling ``D`` gains (see the module docstring).

    Parameters
    ----------
    fit
        A joint fit with finite, positive exponents.
    n
        Model sizes.
    tolerance
        Gain of doubling ``N`` relative to the gain of doubling ``D`` (0.1: a tenth).
    """
    _check_fit(fit)
    if not tolerance > 0:
        raise ScalelibError(f"the tolerance must be positive, got {tolerance!r}")
    if fit.alpha <= 0 or fit.beta <= 0:
        raise ScalelibError("a zero exponent leaves no trade-off between N and D; the fit's "
                            "alpha and beta must both be positive")
    n = np.asarray(n, dtype=float)
    gain_n = fit.A * n ** -fit.alpha * (1 - 2 ** -fit.alpha)
    return (tolerance * fit.B * (1 - 2 ** -fit.beta) / gain_n) ** (1 / fit.beta)


def stop_paying_ratio(fit: JointFit, n: float | np.ndarray, tolerance: float = 0.1) -> np.ndarray:
    """``D*(N) / N``: data items per parameter below which more parameters stop paying.

    Parameters
    ----------
    fit
        A joint fit.
    n
        Model sizes.
    tolerance
        See :func:`stop_paying_data`.
    """
    return stop_paying_data(fit, n, tolerance) / np.asarray(n, dtype=float)


def _check_fit(fit: JointFit) -> None:
    values = (fit.E, fit.A, fit.B, fit.alpha, fit.beta)
    if not all(math.isfinite(v) for v in values):
        raise ScalelibError(f"the joint fit has no finite parameters ({fit.message or fit.status}); "
                            "fix the fit before allocating compute")
