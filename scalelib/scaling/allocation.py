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
- :func:`stop_paying_intervals` and :func:`allocation_intervals`: percentile intervals of
  ``D*(N)``, ``N*``, ``D*`` and ``D*/N`` over the joint fit's bootstrap resamples
  (``JointFit.bootstrap_params``). A resample whose exponent sits at 0 has no finite answer:
  with ``alpha = 0`` more parameters never pay (``D* = inf``), with ``beta = 0`` they always do
  (``D* = 0``), and a compute optimum at the edge of the search lies beyond it (``N* = 0`` or
  ``inf``); such resamples count, so an interval end can be 0 or infinite, which
  :func:`beyond_words` puts in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize

from scalelib.errors import ScalelibError
from scalelib.scaling.joint import JOINT_PARAMS, JointFit
from scalelib.scaling.numerics import percentile_interval, percentile_intervals

SEARCH_DECADES = 8.0  # the search for N* spans this many decades beyond the fitted N
EDGE_TOLERANCE = 1e-4  # an optimum within this of a search bound (in log N) is at the edge
BEYOND = "beyond the measured range"


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

    ``extrapolated`` is true when ``n`` or ``d`` lies outside the ranges the fit saw; ``edge``
    is ``"below"`` or ``"above"`` when the optimum sits at that end of the search (the fitted
    loss still falls there: the true optimum lies beyond), else None.
    """

    flops: float
    n: float
    d: float
    loss: float
    extrapolated: bool = False
    edge: str | None = None

    @property
    def ratio(self) -> float:
        """Data items per parameter, ``d / n``."""
        return self.d / self.n

    def to_dict(self) -> dict[str, float | bool]:
        """A JSON-ready dictionary."""
        return {"flops": self.flops, "n": self.n, "d": self.d, "loss": self.loss,
                "ratio": self.ratio, "extrapolated": self.extrapolated, "edge": self.edge}


def allocatable(fit: JointFit) -> bool:
    """True when a joint fit allows an allocation: it was fitted (status not ``error``) and
    both exponents are positive (a zero one leaves no trade-off between N and D)."""
    return fit.status != "error" and fit.alpha > 0 and fit.beta > 0  # NaN compares False


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
    edge = ("below" if best.x - bounds[0] < EDGE_TOLERANCE else
            "above" if bounds[1] - best.x < EDGE_TOLERANCE else None)
    return Allocation(flops=flops, n=n, d=d, loss=float(fit.predict(n, d)),
                      extrapolated=outside or edge is not None, edge=edge)


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
    return _stop_paying(fit, n, tolerance)


def _stop_paying(fit: JointFit, n: float | np.ndarray, tolerance: float) -> np.ndarray:
    """``D*(N)`` for any exponents: inf where ``alpha = 0`` (or overflow), 0 where
    ``beta = 0`` (or underflow), NaN where both are 0."""
    n = np.asarray(n, dtype=float)
    alpha, beta = np.float64(fit.alpha), np.float64(fit.beta)  # numpy: 1 / 0 is inf, not an error
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        gain_n = fit.A * n ** -alpha * (1 - 2 ** -alpha)
        return (tolerance * fit.B * (1 - 2 ** -beta) / gain_n) ** (1 / beta)


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


def resampled_fits(fit: JointFit) -> list[JointFit]:
    """The joint fit of each kept bootstrap resample (its ``bootstrap_params``), finite ones.

    Parameters
    ----------
    fit
        A bootstrapped joint fit (none without ``bootstrap_params``).
    """
    fits = [replace(fit, **dict(zip(JOINT_PARAMS, params)), ci=None, bootstrap_params=())
            for params in fit.bootstrap_params]
    return [f for f in fits if all(math.isfinite(getattr(f, k)) for k in JOINT_PARAMS)]


def stop_paying_intervals(fit: JointFit, n: Sequence[float], tolerance: float = 0.1
                          ) -> list[tuple[float, float]] | None:
    """Percentile intervals (the fit's ``ci_level``) of ``D*(N)`` at each model size over the
    bootstrap resamples; ends can be 0 or inf (see the module docstring). Divide by ``N`` for
    the ratio's. None without resamples.

    Parameters
    ----------
    fit
        A bootstrapped joint fit.
    n
        Model sizes.
    tolerance
        See :func:`stop_paying_data`.
    """
    fits = resampled_fits(fit)
    if not fits:
        return None
    values = np.stack([_stop_paying(f, n, tolerance) for f in fits])
    return [percentile_interval(column, fit.ci_level, keep_infinite=True)
            for column in values.T]


@dataclass(frozen=True)
class _Optimum:
    """A resample's compute optimum, 0 or inf where it lies beyond the search."""

    n: float
    d: float
    ratio: float


def allocation_intervals(fit: JointFit, flops: float, cost: FlopsPerItem, *,
                         n_range: tuple[float, float]) -> dict[str, tuple[float, float]] | None:
    """Percentile intervals (the fit's ``ci_level``) of the compute-optimal ``n``, ``d`` and
    ``ratio`` at a budget over the bootstrap resamples; an optimum at the lower edge of the
    search counts as ``N* = 0``, ``D* = inf``, at the upper edge as ``N* = inf``, ``D* = 0``.
    None without resamples.

    Parameters
    ----------
    fit
        A bootstrapped joint fit.
    flops, cost, n_range
        As for :func:`optimal_allocation`.
    """
    fits = resampled_fits(fit)
    if not fits:
        return None
    optima = []
    for resample in fits:
        best = optimal_allocation(resample, flops, cost, n_range=n_range)
        if best.edge == "below":
            optima.append(_Optimum(n=0.0, d=math.inf, ratio=math.inf))
        elif best.edge == "above":
            optima.append(_Optimum(n=math.inf, d=0.0, ratio=0.0))
        else:
            optima.append(_Optimum(n=best.n, d=best.d, ratio=best.ratio))
    return percentile_intervals(optima, ("n", "d", "ratio"), fit.ci_level, keep_infinite=True)


def beyond_words(value: float, *, low: str, high: str) -> str | None:
    """Words for a quantity that is 0 or infinite (None when it is a finite, positive number).

    Parameters
    ----------
    value
        The quantity (``D*``, ``N*``, a ratio or an interval end).
    low, high
        What 0 and infinity mean for this quantity, e.g. ``"more parameters pay at every D"``.
    """
    if value == 0:
        return f"{BEYOND}: {low}"
    if math.isinf(value):
        return f"{BEYOND}: {high}"
    return None


def _check_fit(fit: JointFit) -> None:
    values = (fit.E, fit.A, fit.B, fit.alpha, fit.beta)
    if not all(math.isfinite(v) for v in values):
        raise ScalelibError(f"the joint fit has no finite parameters ({fit.message or fit.status}); "
                            "fix the fit before allocating compute")
