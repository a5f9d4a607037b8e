"""The result of a power-law fit, and how fitted parameters become one.

:class:`PowerLawFit` holds ``y = a x^-alpha + c`` with its goodness of fit, bits, status and
bootstrap samples; :func:`_assemble` adds ``r2_log``, the flatness test, bits and the status to
the parameters a method fitted (see :mod:`scalelib.scaling` for every field and status).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from scalelib.fitrules import ALPHA_BOUNDS, FLAT_P_VALUE, FitRecord, judged
from scalelib.scaling.numerics import _log_r2, _power_law
from scalelib.scaling.params import _sample_columns
from scalelib.statuses import (
    UNIDENTIFIED_SHARE,
    interval_share,
)


@dataclass(frozen=True)
class PowerLawFit(FitRecord):
    """A fit of ``y = a x^-alpha + c`` (see :mod:`scalelib.scaling` for every field).

    ``bootstrap_params`` holds one ``(a, alpha, c)`` triple per kept bootstrap resample, so
    that plots can draw a band without refitting. ``flags`` lists every status that applies
    (:mod:`scalelib.statuses`), ``status`` is the most serious. ``best_y`` is the
    lowest fitted loss; ``baseline`` (``{"family", "val_mse"}``, None when the table has no
    baseline rows) is the best non-transformer baseline of the group, and ``unconverged``
    (None when the table has no ``converged`` column) counts the runs carrying the fit that
    had not converged.
    """

    def predict(self, x: float | np.ndarray) -> np.ndarray:
        """The fitted curve ``a x^-alpha + c`` at ``x``.

        Parameters
        ----------
        x
            Value(s) of the x column (e.g. parameter counts).
        """
        return _power_law(np.asarray(x, dtype=float), self.a, self.alpha, self.c)

    def bootstrap_array(self) -> np.ndarray:
        """The bootstrap samples as an ``(n, 3)`` array with columns a, alpha, c."""
        return np.asarray(self.bootstrap_params, dtype=float).reshape(-1, 3)

    def band(self, x: np.ndarray, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the bootstrap curves at ``x`` (NaN without samples).

        Parameters
        ----------
        x
            1-D array of x values.
        level
            Coverage of the band (None or 0: ``ci_level``).

        Returns
        -------
        low, high : numpy.ndarray
            Lower and upper percentiles of the bootstrap curves at each ``x``.
        """
        x = np.asarray(x, dtype=float)
        samples = self.bootstrap_array()
        if not len(samples):
            nan = np.full(x.shape, np.nan)
            return nan, nan.copy()
        columns = _sample_columns(samples)
        curves = _power_law(x[None, :], columns.a[:, None], columns.alpha[:, None],
                            columns.c[:, None])
        tail = 50 * (1 - (level or self.ci_level))
        return np.nanpercentile(curves, tail, axis=0), np.nanpercentile(curves, 100 - tail, axis=0)


# --------------------------------------------------------------------------------------------
# Assembly: goodness of fit, flatness, bits, status


def _flat_p_value(log_y: np.ndarray, log_pred: np.ndarray, n_params: int = 3) -> float:
    """p-value of the F-test of the fitted curve against a constant (NaN without dof)."""
    residual_dof = log_y.size - n_params
    total = float(np.sum((log_y - log_y.mean()) ** 2))
    if total == 0.0:
        return 1.0
    if residual_dof < 1 or not np.all(np.isfinite(log_pred)):
        return math.nan
    residual = float(np.sum((log_y - log_pred) ** 2))
    if residual == 0.0:
        return 0.0
    statistic = ((total - residual) / (n_params - 1)) / (residual / residual_dof)
    return float(special.fdtrc(n_params - 1, residual_dof, max(statistic, 0.0)))


def rises(log_x: np.ndarray, log_y: np.ndarray) -> bool:
    """True when ``log y`` rises with ``log x`` significantly (least-squares slope > 0,
    t-test p < ``FLAT_P_VALUE``); False without a residual degree of freedom.

    Parameters
    ----------
    log_x, log_y
        Logarithms of the points.
    """
    dof = log_x.size - 2
    centred_x = log_x - log_x.mean()
    spread = float(np.sum(centred_x**2))
    if dof < 1 or spread == 0.0:
        return False
    slope = float(np.sum(centred_x * (log_y - log_y.mean()))) / spread
    residual = float(np.sum((log_y - log_y.mean() - slope * centred_x) ** 2))
    if slope <= 0:
        return False
    if residual == 0.0:
        return True
    t_squared = slope**2 * spread * dof / residual
    return float(special.betainc(dof / 2, 0.5, dof / (dof + t_squared))) < FLAT_P_VALUE


def _assemble(method: str, xs: np.ndarray, ys: np.ndarray, a: float, alpha: float, c: float,
              r2: float, issues: list[tuple[str, str]]) -> PowerLawFit:
    """Add r2_log, bits, the flatness test and the status to fitted parameters.

    A fit judged flat (F-test p > ``FLAT_P_VALUE``) gets status ``flat``. Grid: the fitted
    ``a``, ``alpha``, ``c``, ``r2`` and ``r2_log`` are kept (the reference study reports its
    flat regime that way, a small alpha with a small R^2), and the method's other issues follow
    in the message. Huber: ``alpha`` is not identifiable as ``a -> 0``, so the fit is reported
    as the constant ``L = c`` (``c`` the geometric mean of ``y``, ``a = alpha = r2 = r2_log =
    0``), and the message says so.
    """
    predicted = _power_law(xs, a, alpha, c)
    r2_log = _log_r2(ys, predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_value = _flat_p_value(np.log(ys), np.log(predicted))
    fields = judged(method, a, alpha, c, r2, r2_log, p_value, issues, n_points=int(xs.size),
                    n_sizes=int(np.unique(xs).size), min_y=float(ys.min()),
                    mean_log_y=float(np.mean(np.log(ys))))
    return PowerLawFit(method=method, n_runs=int(xs.size), n_x=int(np.unique(xs).size),
                       best_y=float(ys.min()), **fields)


def interval_issues(fit: PowerLawFit, y_min: float) -> list[tuple[str, str]]:
    """``unidentified`` when a bootstrap interval of alpha or c covers more than
    ``UNIDENTIFIED_SHARE`` of its allowed range (alpha in ``ALPHA_BOUNDS``, c in ``[0, y_min]``).

    A flat fit is left alone: its verdict is that alpha does not matter.

    Parameters
    ----------
    fit
        A fit with bootstrap intervals (``ci``).
    y_min
        The lowest fitted loss, the top of c's range.
    """
    if not fit.ci or "flat" in fit.flags:
        return []
    ranges = {"alpha": ALPHA_BOUNDS, "c": (0.0, y_min)}
    wide = []
    for name, (low, high) in ranges.items():
        share = interval_share(*fit.ci.get(name, (math.nan, math.nan)), low, high)
        if share > UNIDENTIFIED_SHARE:
            interval = ", ".join(f"{v:.3g}" for v in fit.ci[name])
            wide.append(f"{name}'s interval [{interval}] covers {share:.0%} of its allowed "
                        f"range [{low:g}, {high:.3g}]")
    if not wide:
        return []
    return [("unidentified", "; ".join(wide) + ": not identified by these points; add sizes "
             "or seeds")]
