"""Power-law fits ``y = a x^-alpha + c`` in pure Python, for the in-browser results explorer.

The results explorer is exported with ``marimo export html-wasm`` and runs under Pyodide,
where (offline) only the standard library and pure-Python wheels are at hand, so this module
re-implements :mod:`scalelib.scaling`'s two methods without numpy or scipy:

``grid``
    The same algorithm (200 values of ``c`` from 0 to ``0.99 * min(y)``; ordinary least squares
    of ``log(y - c)`` on ``log x``; the ``c`` with the highest R^2 wins): same numbers.
``huber``
    The same objective (log-sum-exp form, Huber loss with delta ``1e-3`` on log residuals, the
    same bounds), minimised by Nelder-Mead from several starts instead of L-BFGS-B: the same
    optimum to optimiser tolerance.

Statuses, the flatness F-test, bits and the result layout (:class:`LiteFit`, the fields of
:class:`scalelib.scaling.PowerLawFit`, so entries of a fits JSON file load with
:meth:`LiteFit.from_dict`) follow :mod:`scalelib.scaling`. The bootstrap draws from Python's
``random.Random(seed)``, so its intervals agree with scalelib's in distribution, not digit for
digit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from scalelib import fitrules as rules
from scalelib.errors import ScalelibError
from scalelib.statuses import (
    describe,
    fields_of,
    verdict,
)

NAN = math.nan


@dataclass(frozen=True)
class LiteFit(rules.FitRecord):
    """A fit of ``y = a x^-alpha + c``: the record of :class:`scalelib.scaling.PowerLawFit`
    with a pure-Python curve and band."""

    def predict(self, x: float) -> float:
        """The fitted curve at ``x``."""
        return _power_law(x, self.a, self.alpha, self.c)

    def band(self, xs: Sequence[float], level: float | None = None) -> tuple[list[float], list[float]]:
        """Pointwise percentile band of the bootstrap curves at ``xs`` (NaN without samples)."""
        if not self.bootstrap_params:
            return [NAN] * len(xs), [NAN] * len(xs)
        tail = 50 * (1 - (level or self.ci_level))
        low, high = [], []
        for x in xs:
            values = [v for v in (_power_law(x, *p) for p in self.bootstrap_params)
                      if math.isfinite(v)]
            low.append(percentile(values, tail))
            high.append(percentile(values, 100 - tail))
        return low, high


# --------------------------------------------------------------------------------------------
# Entry points


def fit_power_law(x: Iterable[float], y: Iterable[float], method: str = "huber", *,
                  n_bootstrap: int = 0, seed: int = 0,
                  on_resample: Callable[[], object] | None = None) -> LiteFit:
    """Fit ``y = a x^-alpha + c`` with ``grid`` or ``huber``, optionally with a bootstrap.

    Parameters
    ----------
    x, y
        Positive, finite values, one point per run.
    method
        ``"huber"`` or ``"grid"`` (see the module docstring).
    n_bootstrap
        Resamples of the percentile bootstrap over runs (0: none).
    seed
        Seed of the bootstrap.
    on_resample
        Called after each resample (progress bars).

    Raises
    ------
    ScalelibError
        Fewer than 3 distinct ``x``, values missing or not positive, or an unknown method.
    """
    fitter = _fitter(method)
    xs, ys = validate(x, y)
    fit = fitter(xs, ys)
    if n_bootstrap > 0:
        fit = bootstrap(xs, ys, method, n_resamples=n_bootstrap, seed=seed, fit=fit,
                        on_resample=on_resample)
    return fit


def fit_rows(rows: Sequence[dict[str, Any]], *, x: str = "params", y: str = "best_val_mse",
             by: Sequence[str] = ("regime",), methods: Sequence[str] = ("huber",),
             n_bootstrap: int = 0, seed: int = 0, baselines: Sequence[dict[str, Any]] = (),
             on_resample: Callable[[], object] | None = None) -> list[LiteFit]:
    """Fit every group of a table given as row dictionaries (like ``scaling.fit_groups``).

    Rows with a ``status`` other than ``"ok"`` are left out. A group that cannot be fitted gives
    a fit with status ``error``, NaN parameters and the reason in ``message``. As in
    ``scaling.fit_groups``, each group is compared with the ``baselines`` scored on its data
    and its runs' ``converged`` flags (:func:`scalelib.fitrules.run_context`), so that
    ``above_baseline`` and ``budget_limited`` apply here too.
    A group mixing training budgets is refused (a ScalelibError,
    :func:`scalelib.fitrules.mixed_budgets`).
    """
    for method in methods:
        _fitter(method)
    kept = [row for row in rows if row.get("status", "ok") == "ok"]
    refusal = rules.mixed_budgets(kept, by)
    if refusal is not None:
        raise ScalelibError(refusal)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in kept:
        groups.setdefault(tuple(row.get(name) for name in by), []).append(row)
    fits = []
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        part, group = groups[key], dict(zip(by, key))
        context = rules.run_context(part, baselines, x, y)
        for method in methods:
            try:
                fit = fit_power_law([r.get(x) for r in part], [r.get(y) for r in part], method,
                                    n_bootstrap=n_bootstrap, seed=seed, on_resample=on_resample)
            except ScalelibError as error:
                n_x = len({r.get(x) for r in part})
                fit = LiteFit(method, NAN, NAN, NAN, NAN, NAN, NAN, len(part), n_x, "error",
                              str(error))
            fits.append(replace(fit, group=group, baseline=context.baseline,
                                unconverged=context.unconverged).with_issues(context.issues))
    return fits


def bootstrap(xs: Sequence[float], ys: Sequence[float], method: str = "huber", *,
              n_resamples: int = 200, seed: int = 0, fit: LiteFit | None = None,
              level: float = rules.CI_LEVEL,
              on_resample: Callable[[], object] | None = None) -> LiteFit:
    """Percentile bootstrap over runs: resample points with replacement and refit each.

    Resamples with fewer than 3 distinct ``x`` are skipped and counted in
    ``bootstrap_failures``; the result is ``fit`` with ``ci`` and ``bootstrap_params``.
    """
    fitter = _fitter(method)
    xs, ys = validate(xs, ys)
    full = fit if fit is not None else fitter(xs, ys)
    rng = random.Random(seed)
    kept: list[LiteFit] = []
    failures = 0
    for _ in range(n_resamples):
        rows = [rng.randrange(len(xs)) for _ in xs]
        sample_x, sample_y = [xs[i] for i in rows], [ys[i] for i in rows]
        if len(set(sample_x)) < 3:
            failures += 1
        elif method == "grid":
            kept.append(fit_grid(sample_x, sample_y))
        else:
            kept.append(fit_huber(sample_x, sample_y, starts=_warm_starts(full, sample_x,
                                                                          sample_y)))
        if on_resample is not None:
            on_resample()
    tail = 50 * (1 - level)
    ci = {}
    for name in rules.CI_NAMES:
        values = [v for v in (getattr(f, name) for f in kept) if math.isfinite(v)]
        ci[name] = ((percentile(values, tail), percentile(values, 100 - tail)) if values
                    else (NAN, NAN))
    message = full.message
    if not kept:
        message = "; ".join(filter(None, [message, "bootstrap: every resample was skipped"]))
    return replace(full, ci=ci, ci_level=level, n_bootstrap=n_resamples, bootstrap_seed=seed,
                   bootstrap_failures=failures, message=message,
                   bootstrap_params=tuple((f.a, f.alpha, f.c) for f in kept))


def summary_rows(fits: Sequence[LiteFit]) -> list[dict[str, Any]]:
    """One display row per fit: group, method, alpha, c and bits with 95% intervals, R^2,
    status, and the verdict and summary in words (:mod:`scalelib.statuses`)."""
    def with_interval(fit: LiteFit, name: str, digits: int) -> str:
        value = getattr(fit, name)
        text = f"{value:.{digits}g}" if math.isfinite(value) else "n/a"
        low, high = (fit.ci or {}).get(name, (NAN, NAN))
        if math.isfinite(low) and math.isfinite(high):
            text += f" [{low:.{digits}g}, {high:.{digits}g}]"
        return text

    return [{**{k: str(v) for k, v in fit.group.items()}, "method": fit.method,
             "runs": fit.n_runs, "alpha": with_interval(fit, "alpha", 3),
             "c": with_interval(fit, "c", 4), "R^2": round(fit.r2, 3),
             "R^2 (log)": round(fit.r2_log, 3), "bits": with_interval(fit, "bits", 3),
             "status": fit.status, "verdict": verdict(fields_of(fit)),
             "summary": describe(fields_of(fit))} for fit in fits]


BITS_NOTE = ("bits is the differential entropy 0.5 log2(2 pi e c) of Gaussian noise of "
             "variance c; like any entropy of a continuous variable it is negative when "
             "c < 1/(2 pi e) = 0.0585, so a negative value or interval is no error.")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (numpy's default); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return NAN
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def validate(x: Iterable[float], y: Iterable[float]) -> tuple[list[float], list[float]]:
    """Lists of positive finite floats with at least 3 distinct ``x``, or a ScalelibError."""
    try:
        xs = [float(v) for v in x]
        ys = [float(v) for v in y]
    except (TypeError, ValueError):
        raise ScalelibError("x and y must be numbers; drop missing values (failed runs)") from None
    if len(xs) != len(ys):
        raise ScalelibError(f"x and y differ in length ({len(xs)} vs {len(ys)})")
    if not all(math.isfinite(v) and v > 0 for v in xs + ys):
        raise ScalelibError("x and y must be positive and finite for a log-log fit; drop or "
                            "fix those rows")
    distinct = len(set(xs))
    if distinct < 3:
        raise ScalelibError(f"a power law with a floor needs at least 3 distinct x values, got "
                            f"{distinct}; add runs at more model sizes")
    return xs, ys


# --------------------------------------------------------------------------------------------
# The grid method


def _grid_profile(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """(c, a, alpha, R^2) of the regression of ``log(y - c)`` on ``log x`` for every c."""
    log_x = [math.log(v) for v in xs]
    mean_x = sum(log_x) / len(log_x)
    centred = [v - mean_x for v in log_x]
    sxx = sum(v * v for v in centred)
    top = rules.GRID_TOP * min(ys)
    profile = []
    for i in range(rules.GRID_POINTS):
        c = top * i / (rules.GRID_POINTS - 1)
        target = [math.log(v - c) for v in ys]
        mean_t = sum(target) / len(target)
        slope = sum(t * u for t, u in zip(target, centred)) / sxx
        total = sum((t - mean_t) ** 2 for t in target)
        residual = sum((t - mean_t - slope * u) ** 2 for t, u in zip(target, centred))
        r2 = 1.0 - residual / total if total > 0 else 0.0
        alpha = min(max(-slope, rules.ALPHA_BOUNDS[0]), rules.ALPHA_BOUNDS[1])
        if alpha != -slope:  # the exponent stays in its bounds: refit the intercept there
            intercept = mean_t + alpha * mean_x
            residual = sum((t - intercept + alpha * lx) ** 2 for t, lx in zip(target, log_x))
            r2 = 1.0 - residual / total if total > 0 else 0.0
            profile.append((c, math.exp(intercept), alpha, r2))
        else:
            profile.append((c, math.exp(mean_t - slope * mean_x), -slope, r2))
    return profile


def fit_grid(xs: Sequence[float], ys: Sequence[float]) -> LiteFit:
    """The reference study's grid over ``c`` (see the module docstring)."""
    profile = _grid_profile(xs, ys)
    best = max(range(len(profile)), key=lambda i: profile[i][3])
    c, a, alpha, r2 = profile[best]
    issues = []
    if best == len(profile) - 1:
        reason = (f"c is at the top of its grid ({rules.GRID_TOP} x min y): the floor is not "
                  "resolved")
        issues.append(("c_at_bound", reason))
    if best == 0:
        issues.append(("c_at_bound", ("c is at the bottom of its grid (0): the floor is not "
                       "resolved")))
    log_x, log_y = [math.log(v) for v in xs], [math.log(v) for v in ys]
    if alpha <= rules.ALPHA_BOUNDS[0] and _rises(log_x, log_y):
        issues.insert(0, ("increasing", rules.RISING_MESSAGE))
    return _assemble("grid", xs, ys, a, alpha, c, r2, issues)


# --------------------------------------------------------------------------------------------
# The huber method


def _huber_objective(theta: Sequence[float], log_x: Sequence[float],
                     log_y: Sequence[float]) -> float:
    log_a, alpha, log_c = theta
    total = 0.0
    for lx, ly in zip(log_x, log_y):
        term = log_a - alpha * lx
        high, low = (term, log_c) if term > log_c else (log_c, term)
        size = abs(ly - (high + math.log1p(math.exp(low - high))))
        total += 0.5 * size * size if size <= rules.HUBER_DELTA else rules.HUBER_DELTA * (
            size - 0.5 * rules.HUBER_DELTA)
    return total / rules.HUBER_DELTA


def _default_starts(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float, float]]:
    """Scale-free starts: c a fraction of min y, the power-law term matched at the median x."""
    mid_x = _median([math.log(v) for v in xs])
    mid_y = _median(ys)
    starts = []
    for fraction in (0.1, 0.5, 0.9):
        c = fraction * min(ys)
        gap = max(mid_y - c, 1e-3 * mid_y)
        for alpha in (0.1, 0.5, 1.5):
            starts.append((math.log(gap) + alpha * mid_x, alpha, math.log(c)))
    return starts


def _grid_start(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float, float]]:
    c, a, alpha, _ = max(_grid_profile(xs, ys), key=lambda row: row[3])
    if c > 0 and a > 0 and rules.ALPHA_BOUNDS[0] < alpha < rules.ALPHA_BOUNDS[1]:
        return [(math.log(a), alpha, math.log(c))]
    return []


def _warm_starts(full: LiteFit, xs: Sequence[float],
                 ys: Sequence[float]) -> list[tuple[float, float, float]]:
    starts = _grid_start(xs, ys)
    if full.a > 0 and full.c > 0 and math.isfinite(full.alpha):
        starts.insert(0, (math.log(full.a), min(max(full.alpha, 0.0), 5.0), math.log(full.c)))
    return starts or _default_starts(xs, ys)


def fit_huber(xs: Sequence[float], ys: Sequence[float],
              starts: Sequence[Sequence[float]] | None = None) -> LiteFit:
    """Log-sum-exp form, Huber loss on log residuals, Nelder-Mead from several starts."""
    if max(ys) == min(ys):
        return _assemble("huber", xs, ys, 0.0, 0.0, ys[0], 0.0, [])
    log_x, log_y = [math.log(v) for v in xs], [math.log(v) for v in ys]
    floor = math.log(min(ys)) - rules.LOG_FLOOR
    bounds = [(floor, math.inf), rules.ALPHA_BOUNDS, (floor, math.inf)]
    if starts is None:
        starts = _grid_start(xs, ys) + _default_starts(xs, ys)
    best: tuple[float, list[float], bool] | None = None
    for start in starts:
        point, value, converged = _nelder_mead(
            lambda theta: _huber_objective(theta, log_x, log_y), start, bounds)
        if math.isfinite(value) and (best is None or value < best[0]):
            best = (value, point, converged)
    if best is None:
        raise ScalelibError("the fit diverged from every starting point; check the data scale")
    _, (log_a, alpha, log_c), converged = best
    issues = []
    if not converged:
        issues.append(("not_converged", "Nelder-Mead did not converge"))
    if min(abs(alpha - bound) for bound in rules.ALPHA_BOUNDS) < 1e-6:
        issues.append(("alpha_at_bound", f"alpha = {alpha:g} is at a bound {rules.ALPHA_BOUNDS}"))
    if alpha < rules.ALPHA_BOUNDS[0] + 1e-6 and _rises(log_x, log_y):
        issues.insert(0, ("increasing", rules.RISING_MESSAGE))
    return _assemble("huber", xs, ys, math.exp(log_a), alpha, math.exp(log_c), NAN, issues)


def _nelder_mead(function: Callable[[Sequence[float]], float], start: Sequence[float],
                 bounds: Sequence[tuple[float, float]], *, max_iter: int = 2000,
                 tolerance: float = 1e-10) -> tuple[list[float], float, bool]:
    """Minimise ``function`` by Nelder-Mead with box bounds (points are clipped into the box)."""
    def clip(point: Sequence[float]) -> list[float]:
        return [min(max(v, low), high) for v, (low, high) in zip(point, bounds)]

    def value(point: list[float]) -> float:
        result = function(point)
        return result if math.isfinite(result) else math.inf

    dimension = len(start)
    simplex = [clip(start)]
    for i in range(dimension):
        vertex = list(simplex[0])
        vertex[i] += 0.25 if i != 1 else 0.1
        simplex.append(clip(vertex))
    values = [value(p) for p in simplex]
    for _ in range(max_iter):
        order = sorted(range(dimension + 1), key=values.__getitem__)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        spread = max(abs(v - values[0]) for v in values[1:])
        size = max(abs(p[j] - simplex[0][j]) for p in simplex[1:] for j in range(dimension))
        if spread <= tolerance * max(1.0, abs(values[0])) and size <= 1e-8:
            return simplex[0], values[0], True
        centroid = [sum(p[j] for p in simplex[:-1]) / dimension for j in range(dimension)]
        worst = simplex[-1]
        reflected = clip([c + (c - w) for c, w in zip(centroid, worst)])
        f_reflected = value(reflected)
        if f_reflected < values[0]:
            expanded = clip([c + 2 * (c - w) for c, w in zip(centroid, worst)])
            f_expanded = value(expanded)
            simplex[-1], values[-1] = ((expanded, f_expanded) if f_expanded < f_reflected
                                       else (reflected, f_reflected))
        elif f_reflected < values[-2]:
            simplex[-1], values[-1] = reflected, f_reflected
        else:
            outside = f_reflected < values[-1]
            target = reflected if outside else worst
            contracted = clip([c + 0.5 * (t - c) for c, t in zip(centroid, target)])
            f_contracted = value(contracted)
            if f_contracted < (f_reflected if outside else values[-1]):
                simplex[-1], values[-1] = contracted, f_contracted
            else:
                best = simplex[0]
                simplex = [best] + [clip([b + 0.5 * (v - b) for b, v in zip(best, p)])
                                    for p in simplex[1:]]
                values = [values[0]] + [value(p) for p in simplex[1:]]
    index = min(range(dimension + 1), key=values.__getitem__)
    return simplex[index], values[index], False


# --------------------------------------------------------------------------------------------
# Assembly: goodness of fit, flatness, bits, status (as scalelib.scaling.powerlaw._assemble)


def _assemble(method: str, xs: Sequence[float], ys: Sequence[float], a: float, alpha: float,
              c: float, r2: float, issues: list[tuple[str, str]]) -> LiteFit:
    log_y = [math.log(v) for v in ys]
    log_pred = [_safe_log(_power_law(x, a, alpha, c)) for x in xs]
    r2_log = _r2(log_y, log_pred)
    p_value = _flat_p_value(log_y, log_pred)
    fields = rules.judged(method, a, alpha, c, r2, r2_log, p_value, issues, n_points=len(xs),
                    n_sizes=len(set(xs)), min_y=min(ys), mean_log_y=sum(log_y) / len(log_y))
    return LiteFit(method=method, n_runs=len(xs), n_x=len(set(xs)), best_y=min(ys), **fields)


def _rises(log_x: Sequence[float], log_y: Sequence[float]) -> bool:
    """``log y`` rises with ``log x`` significantly (as :func:`scalelib.scaling.rises`)."""
    dof = len(log_x) - 2
    mean_x, mean_y = sum(log_x) / len(log_x), sum(log_y) / len(log_y)
    spread = sum((u - mean_x) ** 2 for u in log_x)
    if dof < 1 or spread == 0.0:
        return False
    slope = sum((u - mean_x) * (v - mean_y) for u, v in zip(log_x, log_y)) / spread
    residual = sum((v - mean_y - slope * (u - mean_x)) ** 2 for u, v in zip(log_x, log_y))
    if slope <= 0:
        return False
    if residual == 0.0:
        return True
    t_squared = slope**2 * spread * dof / residual
    return _betainc(dof / 2, 0.5, dof / (dof + t_squared)) < rules.FLAT_P_VALUE


def _flat_p_value(log_y: Sequence[float], log_pred: Sequence[float], n_params: int = 3) -> float:
    """p-value of the F-test of the fitted curve against a constant (NaN without dof)."""
    residual_dof = len(log_y) - n_params
    mean = sum(log_y) / len(log_y)
    total = sum((v - mean) ** 2 for v in log_y)
    if total == 0.0:
        return 1.0
    if residual_dof < 1 or not all(math.isfinite(v) for v in log_pred):
        return NAN
    residual = sum((v - p) ** 2 for v, p in zip(log_y, log_pred))
    if residual == 0.0:
        return 0.0
    statistic = max(((total - residual) / (n_params - 1)) / (residual / residual_dof), 0.0)
    d1, d2 = n_params - 1, residual_dof
    return _betainc(d2 / 2, d1 / 2, d2 / (d2 + d1 * statistic))


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) (continued fraction, Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * result / a


# --------------------------------------------------------------------------------------------
# Small numerics


def _power_law(x: float, a: float, alpha: float, c: float) -> float:
    try:
        return a * x ** -alpha + c
    except (OverflowError, ZeroDivisionError):
        return math.inf


def _safe_log(value: float) -> float:
    return math.log(value) if value > 0 and math.isfinite(value) else NAN


def _r2(observed: Sequence[float], predicted: Sequence[float]) -> float:
    if not all(math.isfinite(v) for v in predicted):
        return NAN
    mean = sum(observed) / len(observed)
    total = sum((v - mean) ** 2 for v in observed)
    if total == 0.0:
        return 0.0
    return 1.0 - sum((o - p) ** 2 for o, p in zip(observed, predicted)) / total


def _median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def _float(value: Any) -> float:
    return NAN if value is None else float(value)


def _fitter(method: str) -> Callable[[Sequence[float], Sequence[float]], LiteFit]:
    if method not in rules.METHODS:
        raise ScalelibError(f"unknown fit method {method!r}; choose one of "
                            f"{', '.join(rules.METHODS)}")
    return fit_grid if method == "grid" else fit_huber
