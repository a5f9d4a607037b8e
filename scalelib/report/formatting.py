"""Numbers as the report prints them: formatting, inline quotes and the values of manifests.

The report's words live in ``report/index.qmd``; this module only turns the numbers of
``numbers.json`` (:func:`scalelib.report.numbers.compute_numbers`) into text that its inline
expressions and cells put into sentences. Inline expressions return :class:`Markdown`, which
Quarto inserts without quotes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

NA = "n/a"
PROVENANCE_LABELS = {
    "census_version": "Census version",
    "obs_value_filter": "obs filter",
    "organism": "organism",
    "measurement_name": "measurement",
    "path": "path",
    "counts_from": "counts from",
}
STATUS_WORDS = {
    "ok": "converged",
    "flat": "flat",
    "no_floor": "no floor",
    "not_converged": "not converged",
    "alpha_at_bound": "exponent at a bound",
    "c_at_bound": "floor at a bound",
    "increasing": "increasing",
    "budget_limited": "limited by the budget",
    "above_baseline": "above a baseline",
    "unidentified": "not identified",
    "error": "not fitted",
}


class Markdown(str):
    """Text that Jupyter shows as ``text/markdown``, so Quarto inserts it without quotes."""

    def _repr_markdown_(self) -> str:
        return str(self)


# --------------------------------------------------------------------------------------------
# Formatting


def finite(value: Any) -> bool:
    """True for a finite int or float (not a bool, None or NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def escape(text: Any) -> str:
    """Free text (a fit message, a failure reason) with Markdown's special characters escaped.

    Parameters
    ----------
    text
        Any value; it is converted with ``str`` first.
    """
    return re.sub(r"([\\`*_\[\]<>^~#|$@])", r"\\\1", str(text))


def code(text: Any) -> str:
    """An inline code span that shows ``text`` literally, whatever backticks or tags it holds.

    Parameters
    ----------
    text
        Any value; it is converted with ``str`` first (newlines become spaces).
    """
    text = str(text).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def escaped_words(items: Iterable[Any]) -> str:
    """:func:`join_words` of free text from the data (names, labels), each item escaped."""
    return join_words(escape(item) for item in items)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for prose: integers with thousands separators, floats to ``digits``
    significant digits, very small or large floats as ``m×10^e^``; None/NaN as ``n/a``.

    Floats with ``1e3 <= |value| < 1e6`` are rounded to integers with separators; other
    values (text, booleans) are converted with ``str``.

    Parameters
    ----------
    value
        The number (or any value).
    digits
        Significant digits of floats outside ``[1e3, 1e6)``.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NA
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits}g}")  # choose the form by the number as printed
    if 1e-3 <= abs(rounded) < 1e3:
        return f"{rounded:.{digits}g}"
    if 1e3 <= abs(rounded) < 1e6:
        return f"{value:,.0f}"
    mantissa, exponent = f"{value:.{max(digits - 1, 0)}e}".split("e")  # digits significant
    return f"{float(mantissa):g}×10^{int(exponent)}^".replace("-", "−")


def fmt_ci(ci: Sequence[Any] | None, digits: int = 3) -> str:
    """``[low, high]`` of an interval, or an empty string without one.

    Parameters
    ----------
    ci
        ``(low, high)``; None, empty or a non-finite bound gives ``""``.
    digits
        Significant digits of the numbers (see :func:`fmt`).
    """
    if not ci or not all(finite(v) for v in ci):
        return ""
    return f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def with_ci(value: Any, ci: Sequence[Any] | None, digits: int = 3) -> str:
    """``value [low, high]`` (the interval left out when absent).

    Parameters
    ----------
    value
        The point estimate.
    ci
        ``(low, high)``, or None (see :func:`fmt_ci`).
    digits
        Significant digits of the numbers (see :func:`fmt`).
    """
    interval = fmt_ci(ci, digits)
    return f"{fmt(value, digits)} {interval}" if interval else fmt(value, digits)


def percent(fraction: Any, digits: int = 3) -> str:
    """A fraction as a percentage (``0.95`` -> ``95%``).

    Parameters
    ----------
    fraction
        The fraction; anything but a finite number gives ``n/a``.
    digits
        Significant digits of the numbers (see :func:`fmt`).
    """
    return f"{fmt(100 * fraction, digits)}%" if finite(fraction) else NA


def join_words(items: Iterable[Any]) -> str:
    """``a``, ``a and b``, ``a, b and c``.

    Parameters
    ----------
    items
        Values joined as text; none gives ``"none"``.
    """
    words = [str(item) for item in items]
    if len(words) <= 1:
        return "".join(words) or "none"
    return ", ".join(words[:-1]) + " and " + words[-1]


def span(values: dict[str, Any], digits: int = 3) -> str:
    """``x`` when min equals max, else ``x to y``.

    Parameters
    ----------
    values
        A dictionary with ``min`` and ``max`` (as in ``numbers.json``).
    digits
        Significant digits of the numbers (see :func:`fmt`).
    """
    low, high = values.get("min"), values.get("max")
    if low == high:
        return fmt(low, digits)
    return f"{fmt(low, digits)} to {fmt(high, digits)}"


def published_value(numbers: dict, key: str, field: str) -> str:
    """A published number as the study prints it.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (its ``published`` entry is read).
    key
        ``key`` of the published entry.
    field
        Field of the entry (``alpha``, ``r2``, ``c``, ``bits``, ``n_runs``); fields listed in
        ``decimals`` get that many decimals, others :func:`fmt`.
    """
    reference = numbers["published"]
    entry = next(e for e in reference["entries"] if e["key"] == key)
    value = entry[field]
    if field in reference["decimals"]:
        return f"{value:.{reference['decimals'][field]}f}"
    return fmt(value)


# --------------------------------------------------------------------------------------------
# Inline quotes


def quotes(numbers: dict) -> dict[str, Markdown]:
    """Formatted numbers for the report's inline expressions (`` `{python} q["n_runs"]` ``).

    Keys: run counts (``n_runs``, ``n_ok``, ``n_failed``, ``n_scaling_runs``,
    ``n_data_size_runs``), regimes and ladder (``n_regimes``, ``regimes``, ``n_sizes``,
    ``sizes``, ``params_min``, ``params_max``, ``params_decades``), seeds and fitting settings
    (``seeds``, ``n_seeds``, ``methods``, ``n_bootstrap``, ``bootstrap_seed``, ``ci_level``,
    ``grid_points``, ``grid_top``, ``huber_delta``, ``flat_p``), provenance (``fits_source``,
    ``results_dir``, ``created``, ``scalelib_version``, ``digest``), training settings
    (``devices``, ``dtypes``, ``batch_sizes``, ``schedules``, ``peak_lr``, ``mask_rates``,
    ``torch_versions``, ``code_versions``, ``train_minutes``, ``longest_run_s``), and the published numbers as ``pub_<entry>_<field>`` plus ``pub_citation``,
    ``pub_arxiv``, ``pub_url`` and ``pub_bits_check``.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    runs, fitting, training = numbers["runs"], numbers["fitting"], numbers["training"]
    regimes, ladder = numbers["regimes"], numbers["ladder"]
    params = [p for regime in regimes for p in regime["params"]]
    low, high = (min(params), max(params)) if params else (None, None)
    q: dict[str, Any] = {
        "n_runs": fmt(runs["total"]), "n_ok": fmt(runs["ok"]),
        "n_failed": fmt(len(runs["failed"])), "n_scaling_runs": fmt(runs["scaling"]),
        "n_data_size_runs": fmt(runs["data_size"]),
        "n_regimes": fmt(len(regimes)), "regimes": escaped_words(r["regime"] for r in regimes),
        "n_sizes": fmt(len(ladder)), "sizes": escaped_words(s["size"] for s in ladder),
        "params_min": fmt(low), "params_max": fmt(high),
        "params_decades": fmt(math.log10(high / low), 2) if params and low > 0 else NA,
        "seeds": join_words(training["seeds"]), "n_seeds": fmt(len(training["seeds"])),
        "methods": join_words(fitting["methods"]), "n_bootstrap": fmt(fitting["n_bootstrap"]), "bootstrap_seed": fmt(fitting["bootstrap_seed"]),
        "ci_level": percent(fitting["ci_level"]),
        "grid_points": fmt(fitting["grid_points"]), "grid_top": fmt(fitting["grid_top"]),
        "huber_delta": fmt(fitting["huber_delta"]), "flat_p": fmt(fitting["flat_p_value"]),
        "fits_source": escape(numbers["fits_source"]), "results_dir": code(numbers["results_dir"]),
        "created": escape(numbers["created"]), "scalelib_version": escape(numbers["scalelib_version"]),
        "digest": code(numbers["digest"][:12]), "devices": escaped_words(training["device"]),
        "dtypes": escaped_words(training["dtype"]),
        "batch_sizes": join_words(fmt(b) for b in training["batch_size"]),
        "schedules": escaped_words(training["schedule"]), "peak_lr": span(training["lr"]),
        "mask_rates": join_words(percent(m) for m in training["mask_rate"]),
        "torch_versions": escaped_words(training["torch_version"]),
        "code_versions": escaped_words(training["code_version"]),
        "train_minutes": fmt(training["wall_time_s"]["total"] / 60),
        "longest_run_s": fmt(training["wall_time_s"]["max"]),
    }
    reference = numbers["published"]
    for entry in reference["entries"]:
        for field in ("alpha", "r2", "c", "bits", "n_runs"):
            if field in entry:
                q[f"pub_{entry['key']}_{field}"] = published_value(numbers, entry["key"], field)
    q.update(pub_citation=reference["citation"], pub_arxiv=reference["arxiv"],
             pub_url=reference["url"],
             pub_bits_check=f"{reference['bits_check']:.{reference['decimals']['bits']}f}")
    return {key: Markdown(str(value)) for key, value in q.items()}


def status_word(status: str) -> str:
    """A short reading of a fit status.

    Parameters
    ----------
    status
        A fit status; unknown ones are returned as they are.
    """
    return STATUS_WORDS.get(status, status)


def provenance_details(dataset: dict) -> str:
    """``(Census version ...; obs filter ...; organism ...)`` from a dataset's manifest summary:
    Census version and obs filter first, then the other plain provenance entries (nested
    tables and hashes left to the manifest); empty when there is none.

    Parameters
    ----------
    dataset
        A regime's ``dataset`` entry of ``numbers.json``.
    """
    shown = {"source", "census_version", "obs_value_filter", "obs_filter", "uri"}
    provenance = dataset.get("provenance") or {}
    pairs = []
    if dataset.get("census_version"):
        pairs.append(f"Census version {quoted_value(dataset['census_version'])}")
    if dataset.get("obs_filter"):
        pairs.append(f"obs filter {quoted_value(dataset['obs_filter'])}")
    pairs += [f"{PROVENANCE_LABELS.get(k, k.replace('_', ' '))} {quoted_value(v)}"
              for k, v in provenance.items()
              if k not in shown and not isinstance(v, dict) and "sha256" not in k]
    return f" ({'; '.join(pairs)})" if pairs else ""


def quoted_value(value: Any) -> str:
    """A manifest value for prose: code style for filters and paths with special characters,
    the first five items of a list, numbers through :func:`fmt`.

    Parameters
    ----------
    value
        A string, list or number from a manifest.
    """
    if isinstance(value, str):
        return code(value) if any(c in value for c in "=<>[]*_`\\#|$@^~") else value
    if isinstance(value, (list, tuple)):
        shown = ", ".join(quoted_value(v) for v in value[:5])
        return shown + (f", … ({fmt(len(value))} in all)" if len(value) > 5 else "")
    return fmt(value)
