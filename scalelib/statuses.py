"""What a fitted floor means: one status vocabulary, its severity order, and the verdict in words.

Pure Python (no numpy) and outside :mod:`scalelib.scaling` (whose package imports numpy and
scipy), so that the offline explorer bundles it unchanged. Both fit
methods and every face (CLI, figures, notebooks, explorer, report) use these rules.

A fit carries ``flags`` (every problem found) and ``status`` (the most serious of them, by
:data:`STATUS_ORDER`; ``ok`` when none):

``error``
    The group could not be fitted at all (too few sizes, bad values).
``increasing``
    The loss rises with size: there is no decline, so ``c`` is no floor.
``above_baseline``
    The best transformer does not beat the best non-transformer baseline (per-gene mean,
    PCA, ridge, kNN) scored on the same cells and masks: ``c`` is no floor of the data, the
    model family loses to a simple predictor.
``budget_limited``
    Some of the runs that carry the fit (the larger half of the sizes, at least two) had not
    converged when their budget ended: ``c`` is a floor at this budget, not of the data.
``unidentified``
    Fewer than :data:`MIN_RESIDUAL_DOF` residual degrees of freedom (n points - 3 parameters),
    or a bootstrap interval of ``alpha`` or ``c`` covers more than :data:`UNIDENTIFIED_SHARE`
    of its allowed range (``alpha`` in ``ALPHA_BOUNDS``, ``c`` in ``[0, min y]``).
``flat``
    A constant fits ``log y`` not significantly worse than the power law (F-test).
``no_floor``
    ``c`` is ~0: the points show no floor, bits are meaningless.
``c_at_bound``
    ``c`` sits at an end of its allowed range (the grid's top or bottom).
``alpha_at_bound``
    ``alpha`` sits at an end of ``ALPHA_BOUNDS``.
``not_converged``
    The optimiser (L-BFGS-B) did not converge.

The verdict (:func:`verdict`) puts a fit in one of the three answers a scaling study owes:
``data ran out``, ``compute ran out``, ``loses to a baseline`` (or ``undetermined``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

STATUS_ORDER = (
    "error",
    "increasing",
    "above_baseline",
    "budget_limited",
    "unidentified",
    "flat",
    "no_floor",
    "c_at_bound",
    "alpha_at_bound",
    "not_converged",
    "ok",
)
MIN_RESIDUAL_DOF = 2
UNIDENTIFIED_SHARE = 0.5

FIELDS = ("status", "flags", "c", "ci", "best_y", "baseline", "unconverged", "message")

DATA_RAN_OUT = "data ran out"
COMPUTE_RAN_OUT = "compute ran out"
LOSES_TO_BASELINE = "loses to a baseline"
UNDETERMINED = "undetermined"


def most_serious(flags: Iterable[str]) -> str:
    """The most serious status among ``flags`` (``ok`` when there is none).

    Parameters
    ----------
    flags
        Status names from :data:`STATUS_ORDER`; unknown names rank just before ``ok``.
    """
    rank = {name: index for index, name in enumerate(STATUS_ORDER)}
    ordered = sorted(set(flags), key=lambda name: rank.get(name, len(STATUS_ORDER) - 1))
    return ordered[0] if ordered else "ok"


def sort_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """Distinct ``flags`` from the most to the least serious."""
    rank = {name: index for index, name in enumerate(STATUS_ORDER)}
    return tuple(sorted(set(flags), key=lambda name: rank.get(name, len(STATUS_ORDER) - 1)))


def interval_share(low: float, high: float, allowed_low: float, allowed_high: float) -> float:
    """Share of the allowed range ``[allowed_low, allowed_high]`` that ``[low, high]`` covers.

    Parameters
    ----------
    low, high
        A bootstrap interval.
    allowed_low, allowed_high
        The range the parameter may take.

    Returns
    -------
    float
        Between 0 and 1; NaN when an end is missing or the range is empty.
    """
    values = (low, high, allowed_low, allowed_high)
    if any(v is None or not math.isfinite(v) for v in values) or allowed_high <= allowed_low:
        return math.nan
    covered = min(high, allowed_high) - max(low, allowed_low)
    return max(0.0, covered) / (allowed_high - allowed_low)


def fields_of(fit: Any) -> dict[str, Any]:
    """The :data:`FIELDS` of a fit object that :func:`verdict` and :func:`describe` read
    (None where the object lacks one), e.g. of a ``PowerLawFit`` or the explorer's fit."""
    return {name: getattr(fit, name, None) for name in FIELDS}


def verdict(fit: Mapping[str, Any]) -> str:
    """Which of the three answers a fit gives: data, compute or model family ran out.

    Parameters
    ----------
    fit
        A fit as a dictionary (``PowerLawFit.to_dict()`` or the fits JSON): uses ``status``,
        ``flags``, ``baseline`` and ``unconverged``.

    Returns
    -------
    str
        :data:`LOSES_TO_BASELINE` when a baseline is as good as the best model,
        :data:`COMPUTE_RAN_OUT` when the runs carrying the fit had not converged,
        :data:`DATA_RAN_OUT` when the fit is identified (``ok`` or ``flat`` and bounded), the
        runs converged and beat every baseline, and :data:`UNDETERMINED` otherwise (including
        a table without convergence or baseline information).
    """
    flags = set(fit.get("flags") or ()) | {fit.get("status", "ok")}
    if "above_baseline" in flags:
        return LOSES_TO_BASELINE
    if "budget_limited" in flags:
        return COMPUTE_RAN_OUT
    checked = fit.get("baseline") is not None and fit.get("unconverged") is not None
    blocking = {"error", "increasing", "unidentified", "no_floor", "not_converged"}
    if checked and not flags & blocking:
        return DATA_RAN_OUT
    return UNDETERMINED


def describe(fit: Mapping[str, Any]) -> str:
    """One or two sentences saying what the fitted floor ``c`` is, with the numbers behind it.

    Parameters
    ----------
    fit
        A fit as a dictionary (see :func:`verdict`); also uses ``c``, ``ci``, ``best_y``,
        ``message``.

    Returns
    -------
    str
        E.g. ``"c = 1.88 is a floor at this budget, not of the data: ridge reaches 1.62"``.
    """
    flags = set(fit.get("flags") or ()) | {fit.get("status", "ok")}
    c = _number(fit.get("c"))
    baseline = fit.get("baseline") or None
    base = f"{baseline['family']} reaches {_fmt(baseline['val_mse'])}" if baseline else ""
    best = _fmt(fit.get("best_y"))
    if "error" in flags:
        return f"no fit: {fit.get('message', '')}".strip()
    if "increasing" in flags:
        return "the loss rises with size: there is no floor to read"
    if "above_baseline" in flags:
        budget = " at this budget" if "budget_limited" in flags else ""
        return (f"c = {c} is no floor of the data: the best model ({best}){budget} does not "
                f"beat the best baseline ({base})")
    parts = []
    if "budget_limited" in flags:
        count = fit.get("unconverged")
        runs = f"{count} of the runs carrying the fit" if count else "the runs carrying the fit"
        tail = f" ({base}; the best model reaches {best})" if base else ""
        parts.append(f"c = {c} is a floor at this budget, not of the data: {runs} had not "
                     f"converged{tail}")
    if "unidentified" in flags:
        parts.append(f"c = {c}{_ci_text(fit, 'c')} is not identified by these points "
                     "(too few residual degrees of freedom or an interval spanning most of "
                     "the allowed range); add sizes or seeds")
    if "flat" in flags and "unidentified" not in flags:
        parts.append("no scaling: a constant fits the losses as well as the power law")
    if parts:
        return "; ".join(parts)
    if "no_floor" in flags:
        return "c is ~0: the points show no floor"
    if baseline is None or fit.get("unconverged") is None:
        unchecked = [name for name, key in (("baselines", "baseline"),
                                            ("convergence", "unconverged"))
                     if fit.get(key) is None]
        return (f"c = {c}{_ci_text(fit, 'c')}; not checked against "
                f"{' or '.join(unchecked)} (the table has no such information)")
    return (f"c = {c}{_ci_text(fit, 'c')} is a floor of the data for this model family: the "
            f"runs converged and the best model ({best}) beats the best baseline ({base})")


def _ci_text(fit: Mapping[str, Any], name: str) -> str:
    interval = (fit.get("ci") or {}).get(name)
    if not interval or any(_number(v) == "nan" for v in interval):
        return ""
    return f" [{_fmt(interval[0])}, {_fmt(interval[1])}]"


def _number(value: Any) -> str:
    if value is None:
        return "nan"
    return _fmt(value)


def _fmt(value: Any) -> str:
    """Three significant figures, ``nan`` for a missing value."""
    if value is None:
        return "nan"
    number = float(value)
    if not math.isfinite(number):
        return "nan"
    return f"{number:.3g}"
