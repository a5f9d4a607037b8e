"""The joint fit ``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022, approach 3),
with a percentile bootstrap over runs and statuses from :mod:`scalelib.statuses`.

Statuses a joint fit can carry (the vocabulary of the power-law fits, where it applies):
``not_converged`` (L-BFGS-B), ``alpha_at_bound`` (``alpha`` or ``beta`` at an end of
``ALPHA_BOUNDS``), ``no_floor`` (``E`` below ``NO_FLOOR_SHARE`` of the lowest loss, the rule
the power-law fits apply to ``c``: the points show no floor; the optimiser's bound lies below
it, so an ``E`` that stopped just above the bound counts too),
``unidentified`` (fewer than ``MIN_RESIDUAL_DOF`` residual degrees of freedom beyond the five
parameters, or a bootstrap interval of ``alpha`` or ``beta`` covering more than
``UNIDENTIFIED_SHARE`` of ``ALPHA_BOUNDS``), and ``error`` (a group that could not be fitted);
:func:`scalelib.scaling.fit_joint_table` adds ``above_baseline`` and ``budget_limited`` from the
runs behind the points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from scalelib.fitrules import ALPHA_BOUNDS, CI_LEVEL, HUBER_DELTA, NO_FLOOR_SHARE
from scalelib.scaling.numerics import _float, _log_r2, entropy_bits, percentile_intervals
from scalelib.scaling.optimise import _huber, _lbfgs, _single_threaded_blas
from scalelib.scaling.params import _bounds, _JointTheta, _unpack
from scalelib.scaling.validation import _validate
from scalelib.statuses import MIN_RESIDUAL_DOF, UNIDENTIFIED_SHARE, most_serious, sort_flags

JOINT_PARAMS = ("E", "A", "B", "alpha", "beta")
JOINT_CI_NAMES = (*JOINT_PARAMS, "r2_log")
N_JOINT_PARAMS = len(JOINT_PARAMS)


@dataclass(frozen=True)
class JointFit:
    """A fit of ``L(N, D) = E + A / N^alpha + B / D^beta`` (Chinchilla approach 3).

    ``bits`` is :func:`entropy_bits` of ``E``; ``n`` and ``d`` name the columns fitted;
    ``flags`` holds every problem found and ``status`` the most serious. With a bootstrap,
    ``ci`` maps each of :data:`JOINT_CI_NAMES` to a percentile interval and
    ``bootstrap_params`` holds the kept resamples' ``(E, A, B, alpha, beta)``.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    r2_log: float
    bits: float
    n_runs: int
    status: str = "ok"
    message: str = ""
    group: dict[str, Any] = field(default_factory=dict)
    n: str = "N"
    d: str = "D"
    flags: tuple[str, ...] = ()
    n_n: int = 0
    n_d: int = 0
    ci: dict[str, tuple[float, float]] | None = None
    ci_level: float = CI_LEVEL
    n_bootstrap: int = 0
    bootstrap_seed: int | None = None
    bootstrap_failures: int = 0
    bootstrap_params: tuple[tuple[float, ...], ...] = ()

    def predict(self, n: float | np.ndarray, d: float | np.ndarray) -> np.ndarray:
        """The fitted surface at ``(n, d)``.

        Parameters
        ----------
        n, d
            Model size and data size, scalars or arrays that broadcast together.

        Returns
        -------
        numpy.ndarray
            ``E + A n^-alpha + B d^-beta``.
        """
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A * n ** -self.alpha + self.B * d ** -self.beta

    def with_issues(self, issues: Sequence[tuple[str, str]]) -> JointFit:
        """This fit with further ``(flag, reason)`` issues added to flags, status and message.

        Parameters
        ----------
        issues
            Problems found after the optimiser (e.g. by the bootstrap).
        """
        if not issues:
            return self
        flags = sort_flags([*self.flags, *(flag for flag, _ in issues)])
        message = "; ".join(filter(None, [self.message, *(reason for _, reason in issues)]))
        return replace(self, flags=flags, status=most_serious(flags), message=message)

    def to_dict(self, with_bootstrap_params: bool = True) -> dict[str, Any]:
        """A JSON-ready dictionary (NaN kept as NaN).

        Parameters
        ----------
        with_bootstrap_params
            Include the kept resamples' parameters (long with many resamples).
        """
        out = {
            "group": dict(self.group), "n": self.n, "d": self.d, "n_runs": self.n_runs,
            "n_n": self.n_n, "n_d": self.n_d,
            "E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
            "r2_log": self.r2_log, "bits": self.bits,
            "status": self.status, "message": self.message, "flags": list(self.flags),
            "ci": {k: list(v) for k, v in self.ci.items()} if self.ci else None,
            "ci_level": self.ci_level, "n_bootstrap": self.n_bootstrap,
            "bootstrap_seed": self.bootstrap_seed, "bootstrap_failures": self.bootstrap_failures,
        }
        if with_bootstrap_params:
            out["bootstrap_params"] = [list(p) for p in self.bootstrap_params]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JointFit:
        """Rebuild a joint fit from :meth:`to_dict` output.

        Parameters
        ----------
        data
            Dictionary with ``E``, ``A``, ``B``, ``alpha``, ``beta``, ``r2_log``, ``bits`` and
            ``n_runs`` (``null`` numbers become NaN); missing optional keys take defaults.
        """
        numbers = {k: _float(data[k]) for k in ("E", "A", "B", "alpha", "beta", "r2_log", "bits")}
        ci = data.get("ci")
        status = data.get("status", "ok")
        return cls(
            **numbers, n_runs=int(data["n_runs"]), status=status,
            message=data.get("message", ""), group=dict(data.get("group") or {}),
            n=data.get("n", "N"), d=data.get("d", "D"),
            flags=tuple(data.get("flags") or ([] if status == "ok" else [status])),
            n_n=int(data.get("n_n") or 0), n_d=int(data.get("n_d") or 0),
            ci={k: (_float(v[0]), _float(v[1])) for k, v in ci.items()} if ci else None,
            ci_level=float(data.get("ci_level") or CI_LEVEL),
            n_bootstrap=int(data.get("n_bootstrap") or 0),
            bootstrap_seed=data.get("bootstrap_seed"),
            bootstrap_failures=int(data.get("bootstrap_failures") or 0),
            bootstrap_params=tuple(tuple(_float(v) for v in p)
                                   for p in data.get("bootstrap_params") or ()),
        )


def failed_joint_fit(reason: str, *, n_runs: int, names: tuple[str, str] = ("N", "D")) -> JointFit:
    """A joint fit with status ``error``: NaN parameters and the reason in ``message``.

    Parameters
    ----------
    reason
        Why the points could not be fitted.
    n_runs
        Rows of the group.
    names
        Columns of ``N`` and ``D``.
    """
    nan = math.nan
    return JointFit(E=nan, A=nan, B=nan, alpha=nan, beta=nan, r2_log=nan, bits=nan,
                    n_runs=n_runs, status="error", message=reason, n=names[0], d=names[1],
                    flags=("error",))


def _joint_objective(vector: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                     log_y: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    theta = _unpack(vector, _JointTheta)
    model_term = theta.log_a - theta.alpha * log_n
    data_term = theta.log_b - theta.beta * log_d
    log_pred = np.logaddexp(np.logaddexp(model_term, data_term), theta.log_e)
    value, slope = _huber(log_y - log_pred, delta)
    model_share, data_share = np.exp(model_term - log_pred), np.exp(data_term - log_pred)
    gradient = _JointTheta(
        log_a=-(slope @ model_share), log_b=-(slope @ data_share),
        log_e=-(slope @ (1.0 - model_share - data_share)),
        alpha=slope @ (model_share * log_n), beta=slope @ (data_share * log_d),
    )
    return value, np.array(gradient)


def _joint_starts(ns: np.ndarray, ds: np.ndarray, ys: np.ndarray) -> list[np.ndarray]:
    """A scale-free grid: E a fraction of min L; each term a share of the median gap."""
    mid_n, mid_d = float(np.median(np.log(ns))), float(np.median(np.log(ds)))
    mid_y, starts = float(np.median(ys)), []
    for fraction in (0.25, 0.5, 0.9):
        e = fraction * ys.min()
        gap = max(mid_y - e, 1e-3 * mid_y)
        for alpha in (0.1, 0.3, 0.6, 1.0):
            for beta in (0.1, 0.3, 0.6, 1.0):
                for share in (0.2, 0.5, 0.8):
                    starts.append(np.array(_JointTheta(
                        log_a=math.log(share * gap) + alpha * mid_n,
                        log_b=math.log((1 - share) * gap) + beta * mid_d,
                        log_e=math.log(e), alpha=alpha, beta=beta)))
    return starts


def fit_joint(n: Iterable[float], d: Iterable[float], loss: Iterable[float], *,
              delta: float = HUBER_DELTA, names: tuple[str, str] = ("N", "D"),
              n_bootstrap: int = 0, seed: int = 0,
              on_resample: Callable[[], object] | None = None) -> JointFit:
    """Fit ``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022, approach 3).

    Log-sum-exp form, Huber loss (``delta``) on log residuals, L-BFGS-B from a grid of 144
    scale-free starts; exponents bounded to ``ALPHA_BOUNDS``.

    Parameters
    ----------
    n, d
        Model size and data size of each run (e.g. params and training cells or tokens).
    loss
        Final loss of each run.
    delta
        Huber threshold on log residuals.
    names
        Labels of ``n`` and ``d`` used in messages and stored in the result.
    n_bootstrap
        Bootstrap resamples for percentile intervals (0: none); see :func:`bootstrap_joint`.
    seed
        Seed of the bootstrap.
    on_resample
        Called after each bootstrap resample (progress bars).

    Returns
    -------
    JointFit
        The fit; soft problems are in ``flags``, ``status`` and ``message`` (see the module
        docstring).

    Raises
    ------
    ScalelibError
        Fewer than 3 distinct ``n`` or ``d``, or values that are missing or not positive.
    """
    ns, ds, ys = _checked_points(n, d, loss, names)
    with _single_threaded_blas():
        fit = _fit_points(ns, ds, ys, _joint_starts(ns, ds, ys), delta, names)
    if n_bootstrap > 0:
        fit = bootstrap_joint(ns, ds, ys, n_resamples=n_bootstrap, seed=seed, fit=fit,
                              delta=delta, on_resample=on_resample)
    return fit


def bootstrap_joint(n: Iterable[float], d: Iterable[float], loss: Iterable[float], *,
                    n_resamples: int = 1000, seed: int = 0, fit: JointFit | None = None,
                    delta: float = HUBER_DELTA, level: float = CI_LEVEL,
                    on_resample: Callable[[], object] | None = None) -> JointFit:
    """Percentile bootstrap of a joint fit over runs: resample rows with replacement, refit.

    Each resample starts L-BFGS-B from the full-data fit (then from a coarse grid, then from
    the full grid, while it does not converge). Resamples with fewer than 3 distinct ``n`` or
    ``d`` are skipped and counted in ``bootstrap_failures``. An interval of ``alpha`` or
    ``beta`` wider than ``UNIDENTIFIED_SHARE`` of ``ALPHA_BOUNDS`` adds ``unidentified``.

    Parameters
    ----------
    n, d, loss
        The points of the full fit.
    n_resamples
        Resamples drawn.
    seed
        Seed of ``numpy.random.default_rng``; the same seed gives the same intervals.
    fit
        The full-data fit, when already computed.
    delta
        Huber threshold on log residuals.
    level
        Coverage of the percentile intervals.
    on_resample
        Called after each resample.

    Returns
    -------
    JointFit
        The full-data fit with ``ci``, ``ci_level``, ``n_bootstrap``, ``bootstrap_seed``,
        ``bootstrap_failures`` and ``bootstrap_params`` set.
    """
    names = (fit.n, fit.d) if fit is not None else ("N", "D")
    ns, ds, ys = _checked_points(n, d, loss, names)
    rng = np.random.default_rng(seed)
    kept, failures = [], 0
    with _single_threaded_blas():
        full = fit if fit is not None else _fit_points(ns, ds, ys, _joint_starts(ns, ds, ys),
                                                       delta, names)
        warm = [np.array(_JointTheta(math.log(full.A), math.log(full.B), math.log(full.E),
                                     full.alpha, full.beta))]
        for _ in range(n_resamples):
            rows = rng.integers(0, ns.size, size=ns.size)
            if min(np.unique(ns[rows]).size, np.unique(ds[rows]).size) < 3:
                failures += 1
            else:
                kept.append(_refit(ns[rows], ds[rows], ys[rows], warm, delta, names))
            if on_resample is not None:
                on_resample()
    ci = percentile_intervals(kept, JOINT_CI_NAMES, level)
    fit = replace(full, ci=ci, ci_level=level, n_bootstrap=n_resamples, bootstrap_seed=seed,
                  bootstrap_failures=failures,
                  bootstrap_params=tuple(tuple(getattr(f, k) for k in JOINT_PARAMS)
                                         for f in kept))
    return fit.with_issues(_interval_issues(ci))


def _checked_points(n: Iterable[float], d: Iterable[float], loss: Iterable[float],
                    names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ns, ys = _validate(n, loss, names[0], "loss")
    ds, _ = _validate(d, loss, names[1], "loss")
    return ns, ds, ys


def _fit_points(ns: np.ndarray, ds: np.ndarray, ys: np.ndarray, starts: list[np.ndarray],
                delta: float, names: tuple[str, str]) -> JointFit:
    """The joint fit from the given starts, with its issues judged."""
    bounds = _bounds(_JointTheta, ys)
    args = (np.log(ns), np.log(ds), np.log(ys), delta)
    optimum = _lbfgs(_joint_objective, starts, args, bounds)
    theta = _unpack(optimum.vector, _JointTheta)
    issues = []
    if not optimum.converged:
        issues.append(("not_converged", f"L-BFGS-B did not converge: {optimum.message}"))
    at_bound = [f"{name} = {value:g}" for name, value in (("alpha", theta.alpha),
                                                          ("beta", theta.beta))
                if min(abs(value - b) for b in ALPHA_BOUNDS) < 1e-6]
    if at_bound:  # one flag for either exponent; the message names which
        verb = "is" if len(at_bound) == 1 else "are"
        issues.append(("alpha_at_bound",
                       f"{' and '.join(at_bound)} {verb} at a bound of {ALPHA_BOUNDS}"))
    if math.exp(theta.log_e) < NO_FLOOR_SHARE * ys.min():
        reason = (f"E = {math.exp(theta.log_e):.3g} is ~0 (below {NO_FLOOR_SHARE:g} of the "
                  "lowest loss): the points show no floor")
        issues.append(("no_floor", reason))
    if ys.size - N_JOINT_PARAMS < MIN_RESIDUAL_DOF:
        issues.append(("unidentified", (f"{ys.size} points leave fewer than {MIN_RESIDUAL_DOF} "
                       f"residual degrees of freedom for {N_JOINT_PARAMS} parameters")))
    fit = JointFit(E=math.exp(theta.log_e), A=math.exp(theta.log_a), B=math.exp(theta.log_b),
                   alpha=theta.alpha, beta=theta.beta, r2_log=math.nan, bits=math.nan,
                   n_runs=int(ys.size), n=names[0], d=names[1],
                   n_n=int(np.unique(ns).size), n_d=int(np.unique(ds).size))
    fit = replace(fit, r2_log=_log_r2(ys, fit.predict(ns, ds)), bits=entropy_bits(fit.E))
    return fit.with_issues(issues)


def _refit(ns: np.ndarray, ds: np.ndarray, ys: np.ndarray, warm: list[np.ndarray],
           delta: float, names: tuple[str, str]) -> JointFit:
    """A resample's fit from the full-data optimum; from a coarse grid as well when that does
    not converge, and from the whole grid when neither does."""
    fit = _fit_points(ns, ds, ys, warm, delta, names)
    for starts in (warm + _joint_starts(ns, ds, ys)[::24], _joint_starts(ns, ds, ys)):
        if "not_converged" not in fit.flags:
            break
        fit = _fit_points(ns, ds, ys, starts, delta, names)
    return fit


def _interval_issues(ci: dict[str, tuple[float, float]]) -> list[tuple[str, str]]:
    width = ALPHA_BOUNDS[1] - ALPHA_BOUNDS[0]
    wide = [name for name in ("alpha", "beta")
            if ci[name][1] - ci[name][0] > UNIDENTIFIED_SHARE * width]
    if not wide:
        return []
    reason = (f"the bootstrap interval of {' and '.join(wide)} covers more than "
              f"{UNIDENTIFIED_SHARE:.0%} of {ALPHA_BOUNDS}")
    return [("unidentified", reason)]
