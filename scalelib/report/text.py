"""The report's words around its numbers: formatting, inline quotes and generated paragraphs.

Every function here reads ``numbers.json`` (:func:`scalelib.report.numbers.compute_numbers`)
and returns :class:`Markdown`; no number is typed here. Quarto inserts a cell's Markdown
result as is (cells with ``output: asis``) and an inline expression's result in the sentence.
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
    "error": "not fitted",
}


class Markdown(str):
    """Text that Jupyter shows as ``text/markdown``, so Quarto inserts it without quotes."""

    def _repr_markdown_(self) -> str:
        return str(self)


# --------------------------------------------------------------------------------------------
# Formatting


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def escape(text: Any) -> str:
    """Free text (a fit message, a failure reason) with Markdown's special characters escaped.

    Parameters
    ----------
    text
        Any value; it is converted with ``str`` first.
    """
    return re.sub(r"([\\`*_\[\]<>^~#|$@])", r"\\\1", str(text))


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
    if not ci or not all(_finite(v) for v in ci):
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
    return f"{fmt(100 * fraction, digits)}%" if _finite(fraction) else NA


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
    ``results_dir``, ``created``, ``scalelib_version``, ``digest``, ``devices``,
    ``dtypes``), and the published numbers as ``pub_<entry>_<field>`` plus ``pub_citation``,
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
        "n_regimes": fmt(len(regimes)), "regimes": join_words(r["regime"] for r in regimes),
        "n_sizes": fmt(len(ladder)), "sizes": join_words(s["size"] for s in ladder),
        "params_min": fmt(low), "params_max": fmt(high),
        "params_decades": fmt(math.log10(high / low), 2) if params and low > 0 else NA,
        "seeds": join_words(training["seeds"]), "n_seeds": fmt(len(training["seeds"])),
        "methods": join_words(fitting["methods"]), "n_bootstrap": fmt(fitting["n_bootstrap"]), "bootstrap_seed": fmt(fitting["bootstrap_seed"]),
        "ci_level": percent(fitting["ci_level"]),
        "grid_points": fmt(fitting["grid_points"]), "grid_top": fmt(fitting["grid_top"]),
        "huber_delta": fmt(fitting["huber_delta"]), "flat_p": fmt(fitting["flat_p_value"]),
        "fits_source": numbers["fits_source"], "results_dir": f"`{numbers['results_dir']}`",
        "created": numbers["created"], "scalelib_version": numbers["scalelib_version"],
        "digest": f"`{numbers['digest'][:12]}`", "devices": join_words(training["device"]),
        "dtypes": join_words(training["dtype"]),
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


# --------------------------------------------------------------------------------------------
# Fits in words


def status_word(status: str) -> str:
    """A short reading of a fit status.

    Parameters
    ----------
    status
        A fit status; unknown ones are returned as they are.
    """
    return STATUS_WORDS.get(status, status)


def fit_sentence(fit: dict) -> str:
    """``α = ... [low, high], a = ..., c = ..., R² = ...`` (bootstrap intervals in brackets),
    with the status when not ok.

    Parameters
    ----------
    fit
        A fit dictionary (:meth:`scalelib.scaling.PowerLawFit.to_dict`); the R² of log L is
        added for methods other than huber, whose R² is already that.
    """
    ci = fit.get("ci") or {}
    parts = [f"α = {with_ci(fit['alpha'], ci.get('alpha'))}",
             f"a = {with_ci(fit['a'], ci.get('a'))}",
             f"c = {with_ci(fit['c'], ci.get('c'))}",
             f"R² = {fmt(fit['r2'])}"]
    if fit["method"] != "huber":
        parts.append(f"R² of log L = {fmt(fit['r2_log'])}")
    text = ", ".join(parts)
    if fit["status"] != "ok":
        text += f" (status {status_word(fit['status'])}: {escape(fit['message'])})"
    return text


def _regime_heading(regime: dict) -> str:
    return (f"**{regime['regime']}** (V = {fmt(regime['n_genes'])} genes, "
            f"D = {fmt(regime['n_train_cells'])} training cells, {fmt(regime['n_runs'])} runs "
            f"from {fmt(min(regime['params']))} to {fmt(max(regime['params']))} parameters)")


def summary_markdown(numbers: dict) -> Markdown:
    """One bullet per regime: data, runs and both fits of L = a P^-alpha + c.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    lines = []
    for regime in numbers["regimes"]:
        lines.append(f"- {_regime_heading(regime)}:")
        for method, fit in regime["fits"].items():
            lines.append(f"    - {method} fit: {fit_sentence(fit)}.")
    return Markdown("\n".join(lines) + "\n")


def fits_markdown(numbers: dict) -> Markdown:
    """Per regime: the fits and how the best run compares with the per-gene-mean baseline.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    paragraphs = []
    for regime in numbers["regimes"]:
        text = [f"{_regime_heading(regime)}."]
        for method, fit in regime["fits"].items():
            text.append(f"The {method} fit gives {fit_sentence(fit)}.")
        ratio = regime["best_over_baseline"]
        if _finite(ratio):
            verdict = ("below" if ratio < 1 else "not below")
            text.append(
                f"The best validation MSE, {fmt(regime['best_val_mse']['min'])}, is "
                f"{percent(ratio)} of the per-gene-mean baseline "
                f"({fmt(regime['baseline_val_mse'])}): {verdict} the baseline.")
        paragraphs.append(" ".join(text))
    return Markdown("\n\n".join(paragraphs) + "\n")


def entropy_markdown(numbers: dict) -> Markdown:
    """Bits per masked gene per regime and method, each with its interval.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    level = percent(numbers["fitting"]["ci_level"])
    lines = []
    for regime in numbers["regimes"]:
        parts = []
        for method, fit in regime["fits"].items():
            ci = (fit.get("ci") or {}).get("bits")
            if _finite(fit["bits"]) and fit["status"] != "no_floor":
                interval = fmt_ci(ci, 3)
                parts.append(f"{method}: {fmt(fit['bits'])} bits"
                             + (f" ({level} interval {interval})" if interval else "")
                             + f" from c = {fmt(fit['c'])}")
            else:
                parts.append(f"{method}: undefined, because the fit finds no floor "
                             f"(c = {fmt(fit['c'])})")
        lines.append(f"- **{regime['regime']}**: " + "; ".join(parts) + ".")
    return Markdown("\n".join(lines) + "\n")


def test_val_markdown(numbers: dict) -> Markdown:
    """How far test MSE lies from validation MSE, per regime.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    lines = []
    for regime in numbers["regimes"]:
        stats = regime["test_vs_val"]
        if not stats.get("n"):
            lines.append(f"- **{regime['regime']}**: no run has both scores.")
            continue
        text = (f"- **{regime['regime']}** ({fmt(stats['n'])} runs): the median of (test − "
                f"validation) / validation is {percent(stats['median_rel_diff'])} and the "
                f"largest absolute value {percent(stats['max_abs_rel_diff'])}")
        if _finite(stats.get("pearson_r")):
            text += f"; Pearson r = {fmt(stats['pearson_r'])}"
        lines.append(text + ".")
    return Markdown("\n".join(lines) + "\n")


test_val_markdown.__test__ = False  # prose about test MSE, not a test, when pytest imports it


# --------------------------------------------------------------------------------------------
# Methods in words


def _provenance_text(dataset: dict, source: str) -> str:
    """Where the cells came from: the source, Census version and obs filter first, then the
    other plain provenance entries (nested tables and hashes left to the manifest)."""
    shown = {"source", "census_version", "obs_value_filter", "obs_filter", "uri"}
    provenance = dataset.get("provenance") or {}
    if source == "simulator":
        described = "simulated counts from scalelib's generator"
    elif source in ("census", "soma"):
        store = ("the CELLxGENE Census" if source == "census"
                 else f"the SOMA store {_value(provenance.get('uri', '?'))}")
        described = f"cells from {store}"
    else:
        described = f"counts from source {source}"
    pairs = []
    if dataset.get("census_version"):
        pairs.append(f"Census version {_value(dataset['census_version'])}")
    if dataset.get("obs_filter"):
        pairs.append(f"obs filter {_value(dataset['obs_filter'])}")
    pairs += [f"{PROVENANCE_LABELS.get(k, k.replace('_', ' '))} {_value(v)}"
              for k, v in provenance.items()
              if k not in shown and not isinstance(v, dict) and "sha256" not in k]
    return described + (f" ({'; '.join(pairs)})" if pairs else "")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`" if any(c in value for c in "=<>[]*_") else value
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_value(v) for v in value[:5])
        return shown + (f", … ({fmt(len(value))} in all)" if len(value) > 5 else "")
    return fmt(value)


def _split_text(dataset: dict) -> str:
    split = dataset.get("split") or {}
    method = split.get("method")
    if method == "stratified":
        return f"split stratified by {split.get('stratify')}"
    if method == "holdout":
        return f"whole {split.get('holdout')} groups held out for validation and test"
    if method == "given":
        return f"split given by column {split.get('key')}"
    return "random split" if method else "split not recorded"


def data_markdown(numbers: dict) -> Markdown:
    """One paragraph per regime on where its cells came from and how they were processed.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    paragraphs = []
    for regime in numbers["regimes"]:
        dataset = regime["dataset"]
        cells = (f"{fmt(regime['n_train_cells'])} training, {fmt(regime['n_val_cells'])} "
                 f"validation and {fmt(regime['n_test_cells'])} test cells")
        if not dataset.get("found"):
            paragraphs.append(
                f"**{regime['regime']}**: source {regime['source']}; V = "
                f"{fmt(regime['n_genes'])} genes; {cells}. Its dataset manifest was not found "
                f"next to the results, so nothing more is known here (fingerprint "
                f"`{', '.join(regime['fingerprints'])}`).")
            continue
        text = [(f"**{regime['regime']}**: {_provenance_text(dataset, regime['source'])}; "
                 f"dataset seed {fmt(dataset.get('seed'))}.")]
        if dataset.get("hvg_flavor"):
            text.append(f"The vocabulary holds the V = {fmt(regime['n_genes'])} most highly "
                        f"variable genes ({dataset['hvg_flavor']}, scanpy's selection computed in "
                        f"streaming passes, on "
                        f"{dataset.get('hvg_input') or 'the counts'}).")
        else:
            text.append(f"The vocabulary holds V = {fmt(regime['n_genes'])} genes.")
        if _finite(dataset.get("target_sum")):
            text.append(f"Counts are normalised to {fmt(dataset['target_sum'])} per cell over "
                        "those genes and log1p-transformed.")
        text.append(f"The fits use {cells} ({_split_text(dataset)}); fingerprint "
                    f"`{regime['fingerprints'][0]}`.")
        paragraphs.append(" ".join(text))
    return Markdown("\n\n".join(paragraphs) + "\n")


def training_markdown(numbers: dict) -> Markdown:
    """Training settings shared by the runs, from the results rows.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    training = numbers["training"]
    wall = training["wall_time_s"]
    text = (f"Runs used batches of {join_words(fmt(b) for b in training['batch_size'])} cells, "
            f"a {join_words(training['schedule'])} learning-rate schedule with peak rate "
            f"{span(training['lr'])} (width-scaled per size where it varies), and masked "
            f"{join_words(percent(m) for m in training['mask_rate'])} of the genes of each cell. "
            f"Seeds: {join_words(training['seeds'])}. They trained on "
            f"{join_words(training['device'])} in {join_words(training['dtype'])} with torch "
            f"{join_words(training['torch_version'])} and "
            f"{join_words(training['code_version'])}, in {fmt(wall['total'] / 60, 3)} minutes "
            f"of training in all (longest run {fmt(wall['max'])} s).")
    return Markdown(text + "\n")


def failed_markdown(numbers: dict) -> Markdown:
    """A list of failed runs (the sentence "Every run finished." when none failed).

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    failed = numbers["runs"]["failed"]
    if not failed:
        return Markdown("Every run finished.\n")
    lines = [f"{fmt(len(failed))} run(s) failed and are left out of the fits:", ""]
    for run in failed:
        lines.append(f"- {run['regime']} {run['size']} seed {fmt(run['seed'])}, "
                     f"D = {fmt(run['n_train_cells'])}: {escape(run['status'])}")
    return Markdown("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# The reference study


def comparison_markdown(numbers: dict) -> Markdown:
    """Our grid fits beside the published ones, for the regimes the study reports.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    reference = numbers["published"]
    ours = {regime["regime"]: regime for regime in numbers["regimes"]}
    lines = []
    for entry in reference["entries"]:
        regime = ours.get(entry["regime"])
        published_text = ", ".join(
            f"{name} = {published_value(numbers, entry['key'], field)}"
            for field, name in (("alpha", "α"), ("r2", "R²"), ("c", "c"), ("bits", "bits"))
            if field in entry)
        runs = (f"{entry['runs']} ({published_value(numbers, entry['key'], 'n_runs')})"
                if "n_runs" in entry else entry["runs"])
        line = f"- {entry['regime']}, {runs}: published {published_text}"
        fit = (regime or {}).get("fits", {}).get(entry.get("method", "grid"))
        if fit is None:
            line += f"; these results have no {entry['regime']} regime."
        else:
            mine = ", ".join(
                f"{name} = {fmt(fit[field])}"
                for field, name in (("alpha", "α"), ("r2", "R²"), ("c", "c"), ("bits", "bits"))
                if field in entry)
            line += f"; ours ({fit['method']} fit, {fmt(fit['n_runs'])} runs): {mine}."
        lines.append(line)
    return Markdown("\n".join(lines) + "\n")


def differences_markdown(numbers: dict) -> Markdown:
    """What differs between these runs and the reference study, from manifests and rows.

    Parameters
    ----------
    numbers
        The ``numbers.json`` document (:func:`scalelib.report.numbers.compute_numbers`).
    """
    reference, training = numbers["reference"], numbers["training"]
    lines = []
    for regime in numbers["regimes"]:
        source = regime["source"]
        if source == "simulator":
            data = "simulated counts (scalelib's generator), not measured cells"
        else:
            data = _provenance_text(regime["dataset"], source)
        drawn = regime["n_train_cells"] + regime["n_val_cells"] + regime["n_test_cells"]
        line = (f"- **{regime['regime']}**: {data}; V = {fmt(regime['n_genes'])} genes and "
                f"{fmt(drawn)} cells")
        paper = reference["regimes"].get(regime["regime"])
        if paper:
            line += (f", where the study's {regime['regime']} regime has V = "
                     f"{fmt(paper['n_genes'])} genes and {fmt(paper['n_cells'])} cells "
                     "(as scalelib.config records it)")
        lines.append(line + ".")
    ladder, paper_ladder = numbers["ladder"], reference["ladder"]
    widths = [size["d_model"] for size in paper_ladder]
    lines.append(
        f"- **Models**: {fmt(len(ladder))} sizes ({join_words(s['size'] for s in ladder)}) with "
        f"d_model {fmt(min(s['d_model'] for s in ladder))} to "
        f"{fmt(max(s['d_model'] for s in ladder))} and depth (encoder blocks) up to "
        f"{fmt(max(s['n_layers'] for s in ladder))}; the study's ladder has "
        f"{fmt(len(paper_ladder))} sizes ({join_words(s['name'] for s in paper_ladder)}) with "
        f"d_model {fmt(min(widths))} to {fmt(max(widths))} and depth up to "
        f"{fmt(max(s['n_layers'] for s in paper_ladder))}.")
    budgets = "; ".join(f"{r['regime']}: {span(r['steps'])} optimiser steps, "
                        f"{span(r['cells_seen'])} cells seen per run" for r in numbers["regimes"])
    lines.append(f"- **Budget**: {budgets}; trained on {join_words(training['device'])} in "
                 f"{join_words(training['dtype'])}, {fmt(training['wall_time_s']['total'] / 60)}"
                 " minutes of training in all.")
    seeds = training["seeds"]
    lines.append(f"- **Seeds**: {fmt(len(seeds))} ({join_words(seeds)}); intervals here are "
                 f"bootstrap intervals over runs ({fmt(numbers['fitting']['n_bootstrap'])} "
                 "resamples), while the published numbers are quoted as point estimates.")
    return Markdown("\n".join(lines) + "\n")
