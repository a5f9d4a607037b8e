"""The joint fit ``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022, approach 3)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from scalelib.fitrules import ALPHA_BOUNDS, HUBER_DELTA
from scalelib.scaling.numerics import _float, _log_r2, entropy_bits
from scalelib.scaling.optimise import _huber, _lbfgs, _single_threaded_blas
from scalelib.scaling.params import _bounds, _JointTheta, _unpack
from scalelib.scaling.validation import _validate


@dataclass(frozen=True)
class JointFit:
    """A fit of ``L(N, D) = E + A / N^alpha + B / D^beta`` (Chinchilla approach 3).

    ``bits`` is :func:`entropy_bits` of ``E``; ``n`` and ``d`` name the columns fitted.
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (NaN kept as NaN)."""
        return {
            "group": dict(self.group), "n": self.n, "d": self.d, "n_runs": self.n_runs,
            "E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
            "r2_log": self.r2_log, "bits": self.bits,
            "status": self.status, "message": self.message,
        }

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
        return cls(
            **numbers, n_runs=int(data["n_runs"]), status=data.get("status", "ok"),
            message=data.get("message", ""), group=dict(data.get("group") or {}),
            n=data.get("n", "N"), d=data.get("d", "D"),
        )


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
              delta: float = HUBER_DELTA, names: tuple[str, str] = ("N", "D")) -> JointFit:
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

    Returns
    -------
    JointFit
        The fit; ``status`` is ``not_converged`` or ``alpha_at_bound`` (either exponent at a
        bound) when something went wrong, with every problem in ``message``.

    Raises
    ------
    ScalelibError
        Fewer than 3 distinct ``n``, or values that are missing or not positive.
    """
    ns, ys = _validate(n, loss, names[0], "loss")
    ds, _ = _validate(d, loss, names[1], "loss")
    bounds = _bounds(_JointTheta, ys)
    args = (np.log(ns), np.log(ds), np.log(ys), delta)
    with _single_threaded_blas():
        optimum = _lbfgs(_joint_objective, _joint_starts(ns, ds, ys), args, bounds)
    theta = _unpack(optimum.vector, _JointTheta)
    issues = []
    if not optimum.converged:
        issues.append(("not_converged", f"L-BFGS-B did not converge: {optimum.message}"))
    if any(min(abs(v - b) for b in ALPHA_BOUNDS) < 1e-6 for v in (theta.alpha, theta.beta)):
        issues.append(("alpha_at_bound", f"an exponent is at a bound {ALPHA_BOUNDS}"))
    fit = JointFit(E=math.exp(theta.log_e), A=math.exp(theta.log_a), B=math.exp(theta.log_b),
                   alpha=theta.alpha, beta=theta.beta, r2_log=math.nan, bits=math.nan,
                   n_runs=int(ys.size), n=names[0], d=names[1])
    return replace(fit, r2_log=_log_r2(ys, fit.predict(ns, ds)), bits=entropy_bits(fit.E),
                   status=issues[0][0] if issues else "ok",
                   message="; ".join(text for _, text in issues))
