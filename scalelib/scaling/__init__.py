"""Scaling-law fits: ``L = a P^-alpha + c``, the joint ``L(N, D)``, bootstrap intervals, bits.

Two methods fit the power law with a floor to points ``(x, y)`` (typically ``x = params`` and
``y = best_val_mse``, one point per run; several seeds may share an ``x``):

``grid``
    The reference study's method (Kendiukhov 2026, arXiv 2602.15253): for 200 values of ``c``
    evenly spaced from 0 to ``0.99 * min(y)``, ordinary least squares of ``log(y - c)`` on
    ``log x``; the ``c`` with the highest R^2 of that regression wins.
``huber``
    The field's practice (Hoffmann et al. 2022; Besiroglu et al. 2024): a log-space fit with
    the log-sum-exp form ``log yhat = LSE(a' - alpha log x, e')`` (``a = exp(a')``,
    ``c = exp(e')``), a Huber loss (delta ``1e-3``) on ``log y - log yhat``, and L-BFGS-B
    started from a grid of points, keeping the lowest final loss.

Every fit reports two goodness-of-fit numbers:

``r2``
    The method's own R^2. Grid: R^2 of the linear regression of ``log(y - c)`` on ``log x`` at
    the chosen ``c`` (as the paper reports it). Huber: equal to ``r2_log``.
``r2_log``
    ``1 - SS_res / SS_tot`` of ``log y`` against ``log yhat`` of the fitted curve, the same
    definition for both methods, so the methods can be compared (0 when ``log y`` is constant).

Soft problems do not raise: the result carries ``flags`` (every problem found) and a
``status`` (the most serious flag, ``ok`` when none) from one vocabulary shared by both methods
(:mod:`scalelib.statuses`: ``error``, ``increasing``, ``above_baseline``,
``budget_limited``, ``unidentified``, ``flat``, ``no_floor``, ``c_at_bound``,
``alpha_at_bound``, ``not_converged``) and a ``message``. :func:`fit_groups` adds the two checks
that need the runs behind the points: ``above_baseline`` (the best model does not beat a
baseline on the same cells and masks) and ``budget_limited`` (runs carrying the fit had not
converged). :func:`describe` and :func:`verdict` say in words what the fitted ``c`` is: a floor
of the data, a floor at this budget, or no floor because a baseline does as well.
A ``flat`` fit is one whose power law does
not explain significantly more of ``log y`` than a constant (F-test, p > 0.05, or ``y``
constant). A flat ``grid`` fit keeps its fitted ``a``, ``alpha``, ``c``, ``r2`` and ``r2_log``
(the reference study reports its flat regime so, e.g. alpha = 0.009 with R^2 = 0.017). A flat
``huber`` fit, whose ``alpha`` is not identifiable as ``a -> 0``, is reported as the constant
``L = c`` (``c`` the geometric mean of ``y``) with ``a = alpha = r2 = r2_log = 0``; its
``message`` says so. Both methods keep ``alpha`` within ``ALPHA_BOUNDS`` (the grid refits the
intercept where the regression slope leaves them), so intervals respect the bounds too.
Input a user can fix (fewer than 3 distinct ``x``, values that are missing or not positive,
unknown columns) raises :class:`~scalelib.errors.ScalelibError`.

Fits JSON layout (:func:`write_fits` / :func:`read_fits`; read by the notebooks and report)::

    {
      "x": "params", "y": "best_val_mse",        # columns fitted (y = a x^-alpha + c)
      "created": "2026-02-20T10:00:00+00:00",    # UTC, ISO 8601
      "scalelib_version": "0.1.0",
      "fits": [                                   # PowerLawFit.to_dict(), one per group x method
        {"group": {"regime": "rich"},             # {} when the table was fitted whole
         "method": "huber",                       # "grid" or "huber"
         "n_runs": 7, "n_x": 7,                   # points fitted, distinct x values
         "a": 1.9, "alpha": 0.41, "c": 0.21,
         "r2": 0.99, "r2_log": 0.99,              # see above
         "bits": 0.75,                            # entropy_bits(c); null when c <= 0
         "status": "ok", "message": "",           # status: the most serious of flags
         "flags": [],                              # every status that applies
         "best_y": 1.95,                           # lowest fitted loss
         "baseline": {"family": "ridge", "val_mse": 2.1},  # best baseline, or null
         "unconverged": 0,                         # carrying runs not converged, or null
         "ci": {"alpha": [lo, hi], "a": [lo, hi], "c": [lo, hi], "bits": [lo, hi],
                "r2_log": [lo, hi]},              # 95% percentile intervals, or null
         "ci_level": 0.95,
         "n_bootstrap": 1000, "bootstrap_seed": 0, # 0 and null without a bootstrap
         "bootstrap_failures": 0,                 # resamples skipped (< 3 distinct x)
         "bootstrap_params": [[a, alpha, c], ...]}  # one per kept resample ([] without)
      ],
      "joint_fits": [                             # JointFit.to_dict(): L = E + A/N^alpha + B/D^beta
        {"group": {}, "n": "params", "d": "n_train_cells", "n_runs": 40,
         "E": .., "A": .., "B": .., "alpha": .., "beta": .., "r2_log": .., "bits": ..,
         "status": "ok", "message": ""}
      ]
    }

Non-finite numbers are written as ``null`` (strict JSON) and read back as NaN.
"""

from scalelib.fitrules import (
    ALPHA_BOUNDS,
    CI_LEVEL,
    CI_NAMES,
    FLAT_P_VALUE,
    GRID_POINTS,
    GRID_TOP,
    HUBER_DELTA,
    LOG_FLOOR,
    METHODS,
)
from scalelib.scaling.fitsfile import FitsFile, fits_document, json_ready, read_fits, write_fits
from scalelib.scaling.fitting import bootstrap_power_law, fit_power_law
from scalelib.scaling.joint import (
    JOINT_CI_NAMES,
    JointFit,
    bootstrap_joint,
    failed_joint_fit,
    fit_joint,
)
from scalelib.scaling.numerics import entropy_bits
from scalelib.scaling.powerlaw import PowerLawFit
from scalelib.scaling.stored import stored_fits_mismatch, stored_or_fitted
from scalelib.scaling.tables import (
    baseline_rows,
    data_size_rows,
    fit_groups,
    fit_joint_table,
    fits_frame,
    matching_baselines,
    ok_rows,
    scaling_rows,
    transformer_rows,
)
from scalelib.statuses import STATUS_ORDER, describe, most_serious, verdict

__all__ = [
    "ALPHA_BOUNDS",
    "CI_LEVEL",
    "CI_NAMES",
    "FLAT_P_VALUE",
    "GRID_POINTS",
    "GRID_TOP",
    "HUBER_DELTA",
    "JOINT_CI_NAMES",
    "LOG_FLOOR",
    "METHODS",
    "STATUS_ORDER",
    "FitsFile",
    "JointFit",
    "PowerLawFit",
    "baseline_rows",
    "bootstrap_joint",
    "bootstrap_power_law",
    "data_size_rows",
    "describe",
    "entropy_bits",
    "failed_joint_fit",
    "fit_groups",
    "fit_joint",
    "fit_joint_table",
    "fit_power_law",
    "fits_document",
    "fits_frame",
    "json_ready",
    "matching_baselines",
    "most_serious",
    "ok_rows",
    "read_fits",
    "scaling_rows",
    "stored_fits_mismatch",
    "stored_or_fitted",
    "transformer_rows",
    "verdict",
    "write_fits",
]
