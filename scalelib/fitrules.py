"""What both fit implementations share: methods, settings, the fit record and the runs a fit
in P uses.

Pure Python (standard library only) and outside :mod:`scalelib.scaling` (whose package imports
numpy and scipy), so that the offline explorer bundles it unchanged: :mod:`scalelib.scaling`
and the explorer's :mod:`scalelib.explore.purefit` import these names instead of keeping copies.
The status rules live beside it in :mod:`scalelib.statuses`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from scalelib.statuses import MIN_RESIDUAL_DOF, most_serious, sort_flags

METHODS = ("grid", "huber")
GRID_POINTS = 200  # values of c tried by the grid method
GRID_TOP = 0.99  # the grid of c stops at GRID_TOP * min(y)
HUBER_DELTA = 1e-3  # Huber loss threshold on log residuals
ALPHA_BOUNDS = (0.0, 5.0)  # exponent bounds of the huber and joint fits
LOG_FLOOR = 25.0  # log coefficients stay above log(min y) - LOG_FLOOR
# A fitted floor (c, or E of the joint fit) below this share of the lowest loss is ~0: no_floor.
# L-BFGS-B stops pushing a vanishing floor down once its gradient is negligible, far above the
# bound exp(-LOG_FLOOR) ~ 1.4e-11 of min y (1.2e-7 on a planted surface without a floor), so the
# bound alone misses it; the grid method's smallest nonzero c is ~0.005 of min y, far above.
NO_FLOOR_SHARE = 1e-4
FLAT_P_VALUE = 0.05  # F-test level above which a power law is no better than a constant
CI_LEVEL = 0.95
CI_NAMES = ("alpha", "a", "c", "bits", "r2_log")
RISING_MESSAGE = ("y increases with x: there is no power-law decline, so c is no floor and "
                  "bits is undefined (NaN)")
TRANSFORMER = "transformer"  # model_family of trained runs; baselines are mean, pca, ridge, knn
MSE_OBJECTIVE = "mse"  # the objective of the fits in P; likelihood runs are fitted in bits


def dataset_key(row: Mapping[str, Any]) -> Any:
    """The dataset a run trained on: its content fingerprint (the path in older tables)."""
    return row.get("dataset_fingerprint") or row.get("dataset")


def is_fitted_run(row: Mapping[str, Any]) -> bool:
    """A finished transformer run trained on MSE with a validation loss (baselines, failures
    and runs of likelihood objectives, fitted in bits on their own, are not)."""
    return (row.get("status", "ok") == "ok"
            and (row.get("model_family") or TRANSFORMER) == TRANSFORMER
            and (row.get("objective") or MSE_OBJECTIVE) == MSE_OBJECTIVE
            and row.get("best_val_mse") is not None)


def scaling_row_mask(rows: Iterable[Mapping[str, Any]]) -> list[bool]:
    """Which runs a fit against P uses: finished transformer runs, per dataset those at its
    largest training set D (a data-size sweep's smaller nested sets would mix D into the fit).

    Parameters
    ----------
    rows
        Results rows (dictionaries in the :mod:`scalelib.results` schema).
    """
    rows = list(rows)
    largest: dict[Any, int] = {}
    for row in rows:
        if is_fitted_run(row):
            key, cells = dataset_key(row), row.get("n_train_cells") or 0
            largest[key] = max(cells, largest.get(key, 0))
    return [is_fitted_run(row) and (row.get("n_train_cells") or 0) == largest[dataset_key(row)]
            for row in rows]

BASELINE_KEYS = ("dataset_fingerprint", "n_train_cells", "mask_rate")  # same cells and masks


def matching_baselines(runs: Sequence[Mapping[str, Any]],
                       baselines: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The baseline rows scored on the same data as ``runs``: the same dataset fingerprint,
    training-set size and mask rate (the same validation cells and masks, the same training
    cells). A key that some run does not record cannot tell rows apart and is not used.

    Parameters
    ----------
    runs
        Transformer rows, e.g. one fit group.
    baselines
        Baseline rows (``model_family`` mean, pca, ridge or knn).
    """
    keys = [k for k in BASELINE_KEYS if runs and all(run.get(k) is not None for run in runs)]
    wanted = {tuple(run[k] for k in keys) for run in runs}
    return [row for row in baselines if tuple(row.get(k) for k in keys) in wanted]


class RunContext(NamedTuple):
    """What a fit's runs say beyond their losses (see :func:`run_context`)."""

    baseline: dict[str, Any] | None
    unconverged: int | None
    issues: list[tuple[str, str]]


def run_context(runs: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]],
                x: str, y: str, floor: str = "c") -> RunContext:
    """The best matching baseline and the unconverged runs carrying a fit, as status issues.

    ``above_baseline`` when the best run does not beat the best baseline scored on the same
    cells and masks (:func:`matching_baselines`); ``budget_limited`` when a run at the larger
    half of the distinct ``x`` values (at least the two largest) has ``converged`` false.

    Parameters
    ----------
    runs
        The transformer rows of one fit group.
    baselines
        Baseline rows of the table (matched to ``runs`` here).
    x, y
        Columns of the fit; baselines are compared in ``y``.
    floor
        The fit's floor as the reasons name it (``c``, or ``E`` of a joint fit).

    Returns
    -------
    RunContext
        ``baseline`` (``{"family", "val_mse"}`` or None without baseline rows), ``unconverged``
        (None when no run records ``converged``) and the ``(flag, reason)`` issues.
    """
    issues: list[tuple[str, str]] = []
    scored = [row for row in matching_baselines(runs, baselines) if _finite(row.get(y))]
    baseline = None
    if scored:
        best = min(scored, key=lambda row: float(row[y]))
        baseline = {"family": best.get("model_family"), "val_mse": float(best[y])}
        losses = [float(run[y]) for run in runs if _finite(run.get(y))]
        if losses and min(losses) >= baseline["val_mse"]:
            issues.append(("above_baseline", (
                f"the best model ({min(losses):.4g}) does not beat the best baseline, "
                f"{baseline['family']} ({baseline['val_mse']:.4g}): {floor} is no floor of the data")))
    unconverged = None
    if any(run.get("converged") is not None for run in runs):
        carrying = _carrying_runs(runs, x)
        unconverged = sum(1 for run in carrying if not run.get("converged"))
        if unconverged:
            issues.append(("budget_limited", (
                f"{unconverged} of the {len(carrying)} runs at the largest sizes had not "
                f"converged: {floor} is a floor at this budget, not of the data")))
    return RunContext(baseline, unconverged, issues)


def _carrying_runs(runs: Sequence[Mapping[str, Any]], x: str) -> list[Mapping[str, Any]]:
    """Runs at the larger half of the distinct x values (at least the two largest): the
    points that pin the floor."""
    sizes = sorted({run[x] for run in runs if run.get(x) is not None})
    keep = set(sizes[-max(2, (len(sizes) + 1) // 2):])
    return [run for run in runs if run.get(x) in keep]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def mixed_budgets(rows: Iterable[Mapping[str, Any]], by: Sequence[str]) -> str | None:
    """Why a fit of ``rows`` grouped by ``by`` is refused, or None: every fit takes runs of one
    training budget (``budget_steps``), as losses reached on different budgets are not points
    of one curve.

    Rows without a recorded budget are not counted; grouping by ``budget_steps`` keeps budgets
    apart.

    Parameters
    ----------
    rows
        The runs to be fitted (dictionaries with the ``by`` columns and ``budget_steps``).
    by
        The columns that define the fit groups.

    Returns
    -------
    str or None
        A one-line refusal naming the first mixed group and the fix.
    """
    mixed = budget_mix(rows, by)
    if mixed is None:
        return None
    return (f"{mixed} and a fit takes one: fit them apart (scalelib fit --group-by "
            f"{' '.join([*by, 'budget_steps'])}), leave out small sizes trained on another "
            "budget (--min-x), or keep each budget in its own sweep directory (--out)")


def budget_mix(rows: Iterable[Mapping[str, Any]], by: Sequence[str]) -> str | None:
    """The first group of ``rows`` (grouped by ``by``) that holds runs of several training
    budgets, in words (``"regime=rich holds runs of 2 training budgets (10, 20 steps)"``),
    or None (see :func:`mixed_budgets`).

    Parameters
    ----------
    rows
        Runs (dictionaries with the ``by`` columns and ``budget_steps``).
    by
        The columns that define the groups.
    """
    if "budget_steps" in by:
        return None
    budgets: dict[tuple, set[int]] = {}
    for row in rows:
        if row.get("budget_steps") is not None:
            key = tuple(row.get(name) for name in by)
            budgets.setdefault(key, set()).add(int(row["budget_steps"]))
    mixed = sorted((key, sorted(found)) for key, found in budgets.items() if len(found) > 1)
    if not mixed:
        return None
    key, found = mixed[0]
    where = ", ".join(f"{name}={value}" for name, value in zip(by, key)) or "the table"
    others = f" (and {len(mixed) - 1} other group(s))" if len(mixed) > 1 else ""
    steps = ", ".join(f"{budget:,}" for budget in found)
    return f"{where}{others} holds runs of {len(found)} training budgets ({steps} steps)"


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


def judged(method: str, a: float, alpha: float, c: float, r2: float, r2_log: float,
           p_value: float, issues: list[tuple[str, str]], *, n_points: int, n_sizes: int,
           min_y: float, mean_log_y: float) -> dict[str, Any]:
    """The reported numbers, bits and status of fitted parameters: both fit implementations
    apply these rules after their optimiser.

    A fit judged flat (F-test p > ``FLAT_P_VALUE``, unless it rises) gets status ``flat``.
    Grid: the fitted numbers are kept (the reference study reports its flat regime that way)
    and the method's other issues follow. Huber: ``alpha`` is not identifiable as
    ``a -> 0``, so the fit is reported as the constant ``L = c`` (the geometric mean of y,
    ``a = alpha = r2 = r2_log = 0``). Then ``no_floor`` (c ~ 0) and ``unidentified`` (fewer
    than ``MIN_RESIDUAL_DOF`` distinct sizes beyond the three parameters) are added, and huber
    reports the R^2 of log y as its R^2.

    Parameters
    ----------
    method
        ``"grid"`` or ``"huber"``.
    a, alpha, c, r2, r2_log
        Fitted parameters and goodness of fit.
    p_value
        F-test p-value of the power law against a constant, in log y.
    issues
        ``(flag, reason)`` pairs the method found, ``increasing`` first when the curve rises.
    n_points, n_sizes
        Fitted points and distinct x values.
    min_y, mean_log_y
        Lowest loss and mean of log y.

    Returns
    -------
    dict
        ``a``, ``alpha``, ``c``, ``r2``, ``r2_log``, ``bits``, ``status``, ``message`` and
        ``flags`` of the fit record.
    """
    rising = bool(issues) and issues[0][0] == "increasing"
    if p_value > FLAT_P_VALUE and not rising:
        reason = flat_reason(p_value, n_points)
        if method == "huber":
            a, alpha, c = 0.0, 0.0, math.exp(mean_log_y)
            r2 = r2_log = 0.0
            reason += ("; reported as the constant L = c (geometric mean of y) with a = alpha "
                       "= 0, because alpha is not identifiable as a -> 0")
            issues = [("flat", reason)]
        else:
            issues = [("flat", reason + "; a, alpha, c and R^2 are reported as fitted"), *issues]
    bits = entropy_bits(c)
    if issues and issues[0][0] == "increasing":
        bits = math.nan  # a curve that rises has no floor to read as noise
    if not c > 0:
        issues.append(("no_floor", "c <= 0: no irreducible floor, so bits is undefined (NaN)"))
    elif c < NO_FLOOR_SHARE * min_y:
        reason = f"c = {c:.3g} is ~0: the points show no floor, so bits is not meaningful"
        issues.append(("no_floor", reason))
    shape_dof = n_sizes - 3  # seeds at one size do not pin the curve's shape
    if shape_dof < MIN_RESIDUAL_DOF:
        issues.append(("unidentified", (f"{shape_dof} residual degree(s) of freedom in the "
                       f"curve's shape ({n_sizes} distinct sizes - 3 parameters, "
                       f"fewer than {MIN_RESIDUAL_DOF}): a, alpha and c are not identified; "
                       "add sizes")))
    if method == "huber":
        r2 = r2_log
    flags = sort_flags(flag for flag, _ in issues)
    return {"a": float(a), "alpha": float(alpha), "c": float(c), "r2": float(r2),
            "r2_log": float(r2_log), "bits": float(bits), "status": most_serious(flags),
            "message": "; ".join(text for _, text in issues), "flags": flags}


def entropy_bits(c: float) -> float:
    """Bits per masked gene of an irreducible MSE ``c``: ``0.5 * log2(2 pi e c)`` (NaN when
    ``c <= 0`` or NaN); see :func:`scalelib.scaling.entropy_bits`."""
    return 0.5 * math.log2(2 * math.pi * math.e * c) if c > 0 else math.nan


@dataclass(frozen=True)
class FitRecord:
    """The fields of a fit of ``y = a x^-alpha + c`` and their JSON layout, shared by
    :class:`scalelib.scaling.PowerLawFit` and the explorer's ``LiteFit`` (which add the curve
    and its bootstrap band; every field is described in :mod:`scalelib.scaling`)."""

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

    def with_issues(self, issues: Sequence[tuple[str, str]]) -> FitRecord:
        """This fit with more ``(flag, reason)`` issues: flags merged, reasons appended to
        the message, ``status`` the most serious flag.

        Parameters
        ----------
        issues
            Pairs of a status name (:mod:`scalelib.statuses`) and a sentence, e.g. from
            :func:`run_context`.
        """
        if not issues:
            return self
        flags = sort_flags([*self.flags, *(flag for flag, _ in issues)])
        message = "; ".join(filter(None, [self.message, *(text for _, text in issues)]))
        return replace(self, flags=flags, status=most_serious(flags), message=message)

    @property
    def drawable(self) -> bool:
        """True when ``a``, ``alpha`` and ``c`` are finite (a curve can be drawn)."""
        return all(math.isfinite(v) for v in (self.a, self.alpha, self.c))

    @property
    def ok(self) -> bool:
        """True when the fit has no problem worth a warning."""
        return self.status == "ok"

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
    def from_dict(cls, data: dict[str, Any]) -> FitRecord:
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


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)
