"""The result of a power-law fit, and how fitted parameters become one.

:class:`PowerLawFit` holds ``y = a x^-alpha + c`` with its goodness of fit, bits, status and
bootstrap samples; :func:`_assemble` adds ``r2_log``, the flatness test, bits and the status to
the parameters a method fitted (see :mod:`scalelib.scaling` for every field and status).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import special

from scalelib.fitrules import ALPHA_BOUNDS, CI_LEVEL, FLAT_P_VALUE
from scalelib.scaling.numerics import _float, _log_r2, _power_law, entropy_bits
from scalelib.scaling.params import _sample_columns
from scalelib.statuses import (
    MIN_RESIDUAL_DOF,
    UNIDENTIFIED_SHARE,
    interval_share,
    most_serious,
    sort_flags,
)


@dataclass(frozen=True)
class PowerLawFit:
    """A fit of ``y = a x^-alpha + c`` (see :mod:`scalelib.scaling` for every field).

    ``bootstrap_params`` holds one ``(a, alpha, c)`` triple per kept bootstrap resample, so
    that plots can draw a band without refitting. ``flags`` lists every status that applies
    (:mod:`scalelib.statuses`), ``status`` is the most serious. ``best_y`` is the
    lowest fitted loss; ``baseline`` (``{"family", "val_mse"}``, None when the table has no
    baseline rows) is the best non-transformer baseline of the group, and ``unconverged``
    (None when the table has no ``converged`` column) counts the runs carrying the fit that
    had not converged.
    """

    method: str
    a: float
    alpha: float
    c: float
    r2: float
    r2_log: float
    bits: float
    n_runs: int
    n_x: int
    status: str = "ok"
    message: str = ""
    group: dict[str, Any] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] | None = None
    ci_level: float = CI_LEVEL
    n_bootstrap: int = 0
    bootstrap_seed: int | None = None
    bootstrap_failures: int = 0
    bootstrap_params: tuple[tuple[float, float, float], ...] = ()
    flags: tuple[str, ...] = ()
    best_y: float = math.nan
    baseline: dict[str, Any] | None = None
    unconverged: int | None = None

    def __post_init__(self) -> None:
        if self.status != "ok" and self.status not in self.flags:  # a status is always a flag
            object.__setattr__(self, "flags", sort_flags((*self.flags, self.status)))

    @property
    def ok(self) -> bool:
        """True when the fit has no problem worth a warning."""
        return self.status == "ok"

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

    def to_dict(self, *, with_bootstrap_params: bool = True) -> dict[str, Any]:
        """A JSON-ready dictionary in the layout of :mod:`scalelib.scaling` (NaN kept as NaN).

        Parameters
        ----------
        with_bootstrap_params
            Include ``bootstrap_params`` (one ``[a, alpha, c]`` list per kept resample).
        """
        out = {
            "group": dict(self.group), "method": self.method,
            "n_runs": self.n_runs, "n_x": self.n_x,
            "a": self.a, "alpha": self.alpha, "c": self.c,
            "r2": self.r2, "r2_log": self.r2_log, "bits": self.bits,
            "status": self.status, "message": self.message,
            "ci": None if self.ci is None else {k: list(v) for k, v in self.ci.items()},
            "ci_level": self.ci_level,
            "n_bootstrap": self.n_bootstrap, "bootstrap_seed": self.bootstrap_seed,
            "bootstrap_failures": self.bootstrap_failures,
            "flags": list(self.flags), "best_y": self.best_y,
            "baseline": None if self.baseline is None else dict(self.baseline),
            "unconverged": self.unconverged,
        }
        if with_bootstrap_params:
            out["bootstrap_params"] = [list(p) for p in self.bootstrap_params]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PowerLawFit:
        """Rebuild a fit from :meth:`to_dict` output (``null`` numbers become NaN).

        Parameters
        ----------
        data
            Dictionary with at least ``method``, ``a``, ``alpha``, ``c``, ``r2``, ``r2_log``,
            ``bits``, ``n_runs`` and ``n_x``; missing optional keys take their defaults.
        """
        ci = data.get("ci")
        return cls(
            method=data["method"],
            a=_float(data["a"]), alpha=_float(data["alpha"]), c=_float(data["c"]),
            r2=_float(data["r2"]), r2_log=_float(data["r2_log"]), bits=_float(data["bits"]),
            n_runs=int(data["n_runs"]), n_x=int(data["n_x"]),
            status=data.get("status", "ok"), message=data.get("message", ""),
            group=dict(data.get("group") or {}),
            ci=None if ci is None else {k: (_float(v[0]), _float(v[1])) for k, v in ci.items()},
            ci_level=_float(data.get("ci_level", CI_LEVEL)),
            n_bootstrap=int(data.get("n_bootstrap") or 0),
            bootstrap_seed=data.get("bootstrap_seed"),
            bootstrap_failures=int(data.get("bootstrap_failures") or 0),
            bootstrap_params=tuple(
                tuple(_float(v) for v in p) for p in data.get("bootstrap_params") or ()
            ),
            flags=tuple(data.get("flags") or ([] if data.get("status", "ok") == "ok"
                                              else [data["status"]])),
            best_y=_float(data.get("best_y")),
            baseline=dict(data["baseline"]) if data.get("baseline") else None,
            unconverged=data.get("unconverged"),
        )

    def with_issues(self, issues: list[tuple[str, str]]) -> PowerLawFit:
        """This fit with more ``(flag, reason)`` issues: flags merged, reasons appended to
        the message, ``status`` the most serious flag.

        Parameters
        ----------
        issues
            Pairs of a status name (:mod:`scalelib.statuses`) and a sentence.
        """
        if not issues:
            return self
        flags = sort_flags([*self.flags, *(flag for flag, _ in issues)])
        message = "; ".join(filter(None, [self.message, *(text for _, text in issues)]))
        return replace(self, flags=flags, status=most_serious(flags), message=message)


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


def flat_reason(p_value: float, n_points: int, n_params: int = 3) -> str:
    """The message of a ``flat`` fit: its F-test p-value and residual degrees of freedom.

    Parameters
    ----------
    p_value
        p-value of the F-test of the power law against a constant, in log y.
    n_points
        Number of fitted points.
    n_params
        Parameters of the power law (3).
    """
    return (f"y is flat in x: the power law fits log y not significantly better than a "
            f"constant (F-test p = {p_value:.2g} with {n_points - n_params} residual degrees "
            "of freedom)")


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
    rising = bool(issues) and issues[0][0] == "increasing"
    if p_value > FLAT_P_VALUE and not rising:
        reason = flat_reason(p_value, xs.size)
        if method == "huber":
            a, alpha, c = 0.0, 0.0, float(np.exp(np.mean(np.log(ys))))
            r2 = r2_log = 0.0
            reason += ("; reported as the constant L = c (geometric mean of y) with a = alpha "
                       "= 0, because alpha is not identifiable as a -> 0")
            issues = [("flat", reason)]
        else:
            reason += "; a, alpha, c and R^2 are reported as fitted"
            issues = [("flat", reason), *issues]
    bits = entropy_bits(c)
    if issues and issues[0][0] == "increasing":
        bits = math.nan  # a curve that rises has no floor to read as noise
    if not c > 0:
        issues.append(("no_floor", "c <= 0: no irreducible floor, so bits is undefined (NaN)"))
    elif c < 1e-9 * ys.min():
        reason = f"c = {c:.3g} is ~0: the points show no floor, so bits is not meaningful"
        issues.append(("no_floor", reason))
    shape_dof = int(np.unique(xs).size) - 3  # seeds at one size do not pin the curve's shape
    if shape_dof < MIN_RESIDUAL_DOF:
        issues.append(("unidentified", (f"{shape_dof} residual degree(s) of freedom in the "
                       f"curve's shape ({np.unique(xs).size} distinct sizes - 3 parameters, "
                       f"fewer than {MIN_RESIDUAL_DOF}): a, alpha and c are not identified; "
                       "add sizes")))
    if method == "huber":
        r2 = r2_log
    flags = sort_flags(flag for flag, _ in issues)
    return PowerLawFit(method=method, a=float(a), alpha=float(alpha), c=float(c), r2=float(r2),
                       r2_log=float(r2_log), bits=float(bits), n_runs=int(xs.size),
                       n_x=int(np.unique(xs).size), status=most_serious(flags),
                       message="; ".join(text for _, text in issues), flags=flags,
                       best_y=float(ys.min()))


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
