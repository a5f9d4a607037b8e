"""The scaling chart as a Vega-Lite specification, in pure Python (standard library only).

One definition of the chart of loss against model size (log-log points per run, fitted
curves, bootstrap bands, dashed baseline reference lines labelled by family, and each fit's
numbers with its verdict in words, :mod:`scalelib.statuses`) for every face:
:func:`scalelib.plots.scaling_chart` wraps it as an Altair chart, and the offline explorer,
which runs under Pyodide without Altair, bundles this module and hands the specification to
marimo as it is. Callers compute the rows (points, curves, bands, baselines); this module only
styles them. The loss axis spans the points and baselines with a margin, and bootstrap bands
are clipped to it, so a wide band cannot squash the data.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

from scalelib.atomic import json_ready
from scalelib.statuses import describe, fields_of, verdict

TITLES = {
    "params": "Parameters P",
    "best_val_mse": "Validation MSE (masked genes)",
    "test_mse": "Test MSE (masked genes)",
    "baseline_val_mse": "Per-gene-mean baseline MSE (validation)",
    "n_train_cells": "Training cells D",
    "cells_seen": "Training cells seen",
    "step": "Optimiser step",
    "train_flops": "Training FLOPs",
    "regime": "Regime",
    "size": "Model size",
    "macro_f1": "Probe macro F1 (test cells)",
}
BAND_OPACITY = 0.2
BASELINE_DASH = [6, 4]
LOSS_MARGIN = 1.25  # the loss axis reaches this factor beyond the lowest and highest value
EDGE_PADDING = 8  # pixels between the outermost points and the plot's edge (no half-cut points)
NOMINAL = ("size", "regime", "series", "group", "family", "D")
MEAN_BASELINE = "per-gene mean"  # family of the older per-run baseline_val_mse column
SUBTITLE_CHARACTERS = 90  # a subtitle line wraps beyond this many characters


def axis_title(column: str, log: bool = False) -> str:
    """Readable axis title of a column, with `` (log)`` for a log axis.

    Parameters
    ----------
    column
        Column name; known names get the title in ``TITLES``, others their name with spaces
        for underscores.
    log
        Mark the title as a log axis (inside a closing parenthesis when it ends with one).
    """
    title = TITLES.get(column, column.replace("_", " "))
    if not log:
        return title
    return f"{title[:-1]}, log)" if title.endswith(")") else f"{title} (log)"


def log_scale(domain: Sequence[float] | None = None, padding: int = 0) -> dict[str, Any]:
    """A log scale that neither starts at zero nor rounds its ends (optionally fixed, or
    widened by ``padding`` pixels at each end so that points there are drawn whole)."""
    scale: dict[str, Any] = {"type": "log", "zero": False, "nice": False}
    if domain is not None:
        scale["domain"] = list(domain)
    if padding:
        scale["padding"] = padding
    return scale


def count_axis() -> dict[str, Any]:
    """Axis of a log-scaled count (parameters, cells): SI labels (1k, 10k) that never touch."""
    return {"format": "~s", "labelOverlap": "greedy", "labelSeparation": 6}


def loss_domain(values: Iterable[Any], margin: float = LOSS_MARGIN) -> tuple[float, float] | None:
    """Log-axis range that shows every value with a margin (None when none is positive).

    Parameters
    ----------
    values
        Losses and baselines to show; None, NaN and non-positive values are ignored.
    margin
        Factor beyond the lowest and highest value.
    """
    usable = [float(v) for v in values if _positive(v)]
    if not usable:
        return None
    return min(usable) / margin, max(usable) * margin


def fit_summary(label: str, fit: Any) -> str:
    """``label: alpha = ... [low, high], c = ... (bits) (status): verdict`` for a subtitle.

    Parameters
    ----------
    label
        The fit's series.
    fit
        Any fit with ``alpha``, ``ci``, ``c``, ``bits`` and ``status`` (``PowerLawFit`` or
        the explorer's ``LiteFit``); the verdict also reads the fields of
        :data:`scalelib.statuses.FIELDS` it has (see :func:`scalelib.statuses.verdict`).
    """
    text = f"{label}: alpha = {fit.alpha:.3g}"
    interval = (fit.ci or {}).get("alpha")
    if interval and all(_finite(v) for v in interval):
        text += f" [{interval[0]:.3g}, {interval[1]:.3g}]"
    text += f", c = {fit.c:.3g}"
    if _finite(fit.bits) and fit.status != "no_floor":
        text += f" ({fit.bits:.2f} bits)"
    if fit.status != "ok":
        text += f" ({fit.status})"
    return f"{text}: {verdict(fields_of(fit))}"


def fit_notes(label: str, fit: Any) -> list[str]:
    """Subtitle lines of one fit: :func:`fit_summary`, then what its floor means in words
    (:func:`scalelib.statuses.describe`), wrapped at :data:`SUBTITLE_CHARACTERS`.

    Parameters
    ----------
    label
        The fit's series.
    fit
        A fit as for :func:`fit_summary`.
    """
    return [fit_summary(label, fit),
            *textwrap.wrap(describe(fields_of(fit)), SUBTITLE_CHARACTERS)]


def series_label(group: dict[str, Any], color: str | None) -> str:
    """The series a fit belongs to: its value of the colour column, else its whole group."""
    if color and color in group:
        return str(group[color])
    return group_label(group)


def group_label(group: dict[str, Any]) -> str:
    """``key=value, ...`` of a fit's group (``all`` for a fit of the whole table)."""
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "all"


def scaling_spec(points: Sequence[dict[str, Any]], curves: Sequence[dict[str, Any]] = (),
                 bands: Sequence[dict[str, Any]] = (), baselines: Sequence[dict[str, Any]] = (),
                 *, x: str = "params", y: str = "best_val_mse", color: str | None = "regime",
                 subtitle: Sequence[str] = (), title: str | None = None, width: int = 480,
                 height: int = 320) -> dict[str, Any]:
    """Log-log loss against model size: points, bootstrap bands, fitted curves, baselines.

    Parameters
    ----------
    points
        One row per run with ``x``, ``y``, ``series`` and tooltip fields (``size``, ``seed``,
        ``regime`` where present).
    curves
        Rows of fitted curves: ``x``, ``fit``, ``series``, ``group``, ``alpha``, ``c``.
    bands
        Rows of bootstrap bands: ``x``, ``low``, ``high``, ``series``, ``group``; clipped to
        the loss axis, rows with a missing end dropped.
    baselines
        Reference lines: ``series``, ``family``, ``baseline`` (a dashed rule each, labelled
        with its family at the right edge).
    x, y
        Columns on the axes.
    color
        Column the series come from (its title names the legend; None: ``series``).
    subtitle
        Lines under the title (per fit, see :func:`fit_notes`).
    title, width, height
        Chart title (None: ``<y> against <x>``) and size in pixels.

    Returns
    -------
    dict
        A layered Vega-Lite specification with inline data (no ``$schema``).
    """
    domain = loss_domain([p.get(y) for p in points] + [b.get("baseline") for b in baselines])
    bands = _clipped(bands, domain)
    y_title = axis_title(y, log=True)
    x_encoding = {"field": x, "type": "quantitative", "title": axis_title(x, log=True),
                  "scale": log_scale(padding=EDGE_PADDING), "axis": count_axis()}

    def y_encoding(field: str) -> dict[str, Any]:
        return {"field": field, "type": "quantitative", "title": y_title,
                "scale": log_scale(domain)}

    legend = {"field": "series", "type": "nominal",
              "title": axis_title(color) if color else "series"}
    tooltip = [c for c in ("size", "seed", "regime", x, y) if points and c in points[0]]
    layers = [_layer(points, {"type": "circle", "size": 60, "opacity": 0.8},
                     {"x": x_encoding, "y": y_encoding(y), "color": legend,
                      "tooltip": [_field(c) for c in tooltip]})]
    if bands:
        layers.append(_layer(bands, {"type": "area", "opacity": BAND_OPACITY},
                             {"x": x_encoding, "y": y_encoding("low"), "y2": {"field": "high"},
                              "color": legend, "detail": _field("group")}))
    if curves:
        layers.append(_layer(curves, {"type": "line", "clip": True},
                             {"x": x_encoding, "y": y_encoding("fit"), "color": legend,
                              "detail": _field("group"),
                              "tooltip": [_field(c) for c in ("group", "alpha", "c")]}))
    if baselines:
        layers += _baseline_layers(baselines, y_encoding("baseline"), legend, width)
    notes = list(subtitle)
    if baselines:
        notes.append("dashed: baselines scored on the same cells, labelled by family")
    if bands:
        notes.append("band: 95% bootstrap interval of the fit")
    x_name = axis_title(x)
    heading = title or f"{axis_title(y)} against {x_name[0].lower()}{x_name[1:]}"
    return {"title": {"text": heading, "subtitle": notes}, "width": width, "height": height,
            "layer": layers}


def data_size_spec(points: Sequence[dict[str, Any]], means: Sequence[dict[str, Any]],
                   predicted: Sequence[dict[str, Any]] = (), *, x: str = "n_train_cells",
                   y: str = "best_val_mse", order: Sequence[str] = (), title: str | None = None,
                   width: int = 480, height: int = 320) -> dict[str, Any]:
    """Loss against training-set size (log-log): points per run, a line of seed means per
    model size, and dashed joint-fit predictions.

    Parameters
    ----------
    points
        One row per run with ``x``, ``y``, ``size`` and tooltip fields.
    means
        Seed means: ``size``, ``x``, ``y``.
    predicted
        Joint-fit predictions: ``x``, ``y``, ``size``, ``group`` (one dashed line per group).
    x, y
        Columns on the axes (training-set size and loss).
    order
        Model sizes in legend order (see :func:`size_order`).
    title, width, height
        Chart title (None: a default) and size in pixels.
    """
    x_encoding = {"field": x, "type": "quantitative", "title": axis_title(x, log=True),
                  "scale": log_scale(padding=EDGE_PADDING), "axis": count_axis()}
    y_encoding = {"field": y, "type": "quantitative", "title": axis_title(y, log=True),
                  "scale": log_scale(padding=EDGE_PADDING)}
    color = {"field": "size", "type": "nominal", "title": axis_title("size"), "sort": list(order)}
    tooltip = [c for c in ("size", "seed", "regime", x, y) if points and c in points[0]]
    layers = [
        _layer(points, {"type": "circle", "size": 50, "opacity": 0.7},
               {"x": x_encoding, "y": y_encoding, "color": color,
                "tooltip": [_field(c) for c in tooltip]}),
        _layer(means, {"type": "line"}, {"x": x_encoding, "y": y_encoding, "color": color}),
    ]
    subtitle = []
    if predicted:
        layers.append(_layer(predicted, {"type": "line", "strokeDash": BASELINE_DASH},
                             {"x": x_encoding, "y": y_encoding, "color": color,
                              "detail": _field("group")}))
        subtitle.append("dashed: joint fit L(N, D) = E + A/N^alpha + B/D^beta")
    return {"title": {"text": title or f"{axis_title(y)} against training-set size",
                      "subtitle": subtitle}, "width": width, "height": height, "layer": layers}


def frontier_spec(curves: Sequence[dict[str, Any]], stops: Sequence[dict[str, Any]],
                  frontier: Sequence[dict[str, Any]], points: Sequence[dict[str, Any]] = (), *,
                  x: str = "n_train_cells", y: str = "best_val_mse", order: Sequence[str] = (),
                  tolerance: float = 0.1, title: str | None = None, width: int = 480,
                  height: int = 320) -> dict[str, Any]:
    """Loss against data size per model size from a joint fit, where more parameters stop
    paying, and the compute-optimal frontier (log-log). The loss axis spans the runs and the
    frontier with a margin; fitted lines and diamonds beyond it are clipped, so a fit
    extrapolated to small D cannot squash the data.

    Parameters
    ----------
    curves
        Fitted loss over a grid of ``x``: ``x``, ``y``, ``size`` (one line per size).
    stops
        Per size, the data size below which doubling the model gains less than ``tolerance``
        times what doubling the data gains: ``x``, ``y``, ``size``, ``ratio``.
    frontier
        Compute-optimal allocations: ``x``, ``y``, ``flops``, ``params``, ``ratio``.
    points
        Runs: ``x``, ``y``, ``size`` (optional).
    x, y
        Columns on the axes (data size and loss).
    order
        Model sizes in legend order (see :func:`size_order`).
    tolerance
        The stop-paying tolerance, as the subtitle states it.
    title, width, height
        Chart title (None: a default) and size in pixels.
    """
    x_encoding = {"field": x, "type": "quantitative", "title": axis_title(x, log=True),
                  "scale": log_scale(padding=EDGE_PADDING), "axis": count_axis()}
    domain = loss_domain([row.get(y) for row in [*points, *frontier]])
    y_encoding = {"field": y, "type": "quantitative", "title": axis_title(y, log=True),
                  "scale": log_scale(domain, padding=0 if domain else EDGE_PADDING)}
    color = {"field": "size", "type": "nominal", "title": axis_title("size"), "sort": list(order)}
    layers = [_layer(curves, {"type": "line", "opacity": 0.8, "clip": True},
                     {"x": x_encoding, "y": y_encoding, "color": color})]
    if points:
        layers.append(_layer(points, {"type": "circle", "size": 40, "opacity": 0.6},
                             {"x": x_encoding, "y": y_encoding, "color": color,
                              "tooltip": [_field(c) for c in ("size", x, y)]}))
    if stops:
        layers.append(_layer(stops, {"type": "point", "shape": "diamond", "size": 90,
                                     "filled": True, "clip": True},
                             {"x": x_encoding, "y": y_encoding, "color": color,
                              "tooltip": [_field(c) for c in ("size", x, "ratio")]}))
    if frontier:
        layers.append(_layer(frontier, {"type": "line", "color": "black",
                                        "point": {"color": "black"}},
                             {"x": x_encoding, "y": y_encoding,
                              "tooltip": [_field(c) for c in ("flops", "params", x, "ratio")]}))
    notes = ["lines: joint fit L(N, D) per model size",
             f"diamonds: below this D, doubling N gains < {tolerance:g} x doubling D",
             "black: compute-optimal (N, D) for FLOP budgets C = FLOPs per cell(N) x D"]
    return {"title": {"text": title or f"{axis_title(y)}: data, model size and compute",
                      "subtitle": notes}, "width": width, "height": height, "layer": layers}


def probe_spec(runs: Sequence[dict[str, Any]], means: Sequence[dict[str, Any]],
               pca: Sequence[dict[str, Any]] = (), references: Sequence[dict[str, Any]] = (),
               saturation: Sequence[dict[str, Any]] | None = None, *,
               x: str = "n_train_cells", series: str = "size", order: Sequence[str] = (),
               classifier: str = "logreg", title: str | None = None, width: int = 480,
               height: int = 320) -> dict[str, Any]:
    """Probe macro F1 against training-set size D (one line per model size) or against
    parameters P (one line per D), with the PCA and expression probes as dashed references and
    (against D) each size's saturation point.

    Parameters
    ----------
    runs
        One row per probed run: ``size``, ``seed``, ``D`` (``"D=<cells>"``), ``x``,
        ``macro_f1``.
    means
        Seed means: ``series``, ``x``, ``macro_f1``.
    pca
        The PCA probe per D (``n_train_cells``, ``macro_f1``): a dashed gray line (against D).
    references
        Dashed gray rules labelled at the right edge: ``family``, ``macro_f1``.
    saturation
        Saturation points (``size``, ``saturation_d``, ``saturation_f1``, ``saturation_low``,
        ``saturation_high``, ``best_d``): a diamond each and a bar over its interval; None
        when not drawn.
    x, series
        The x column (``n_train_cells`` or ``params``) and the column naming lines (``size``
        or ``D``).
    order
        Series in legend order.
    classifier, title, width, height
        The probe's classifier (in the default title), chart title and size in pixels.
    """
    def x_encoding(field: str) -> dict[str, Any]:
        return {"field": field, "type": "quantitative", "title": axis_title(x, log=True),
                "scale": log_scale(padding=EDGE_PADDING), "axis": count_axis()}

    y_encoding = {"field": "macro_f1", "type": "quantitative", "title": axis_title("macro_f1"),
                  "scale": {"zero": False}}
    color = {"field": series, "type": "nominal", "title": axis_title(series), "sort": list(order)}
    gray = {"color": "gray", "strokeDash": BASELINE_DASH}
    layers = [
        _layer(runs, {"type": "circle", "size": 50, "opacity": 0.7},
               {"x": x_encoding(x), "y": y_encoding, "color": color,
                "tooltip": [_field(c) for c in ("size", "seed", "D", x, "macro_f1")]}),
        _layer(means, {"type": "line"}, {"x": x_encoding(x), "y": y_encoding, "color": color}),
    ]
    if pca:
        layers.append(_layer(pca, {"type": "line", **gray, "point": {"color": "gray"}},
                             {"x": x_encoding(x), "y": y_encoding,
                              "tooltip": [_field("n_train_cells"), _field("macro_f1")]}))
    if references:
        layers += [_layer(references, {"type": "rule", **gray},
                          {"y": y_encoding, "tooltip": [_field("family"), _field("macro_f1")]}),
                   _layer(references, {"type": "text", "align": "right", "baseline": "bottom",
                                       "dy": -2, "fontSize": 10, "color": "gray"},
                          {"x": {"value": width}, "y": y_encoding, "text": _field("family")})]
    if saturation:
        tooltip = [_field(c) for c in ("size", "saturation_d", "saturation_low",
                                       "saturation_high", "best_d")]
        y_saturation = {"field": "saturation_f1", "type": "quantitative"}
        layers += [_layer(saturation, {"type": "point", "shape": "diamond", "size": 140,
                                       "filled": True},
                          {"x": x_encoding("saturation_d"), "y": y_saturation, "color": color,
                           "tooltip": tooltip}),
                   _layer(saturation, {"type": "rule", "strokeWidth": 2, "opacity": 0.6},
                          {"x": x_encoding("saturation_low"), "x2": {"field": "saturation_high"},
                           "y": y_saturation, "color": color})]
    subtitle = [("dashed: the same probe on PCA of the expression (fitted on D cells) and on "
                 "the expression itself")]
    if saturation is not None:
        subtitle.append("diamonds: saturation point per size (95% of its best), bars: 95% "
                        "interval over test cells")
    heading = title or f"{axis_title('macro_f1')} against {axis_title(x).lower()} ({classifier})"
    return {"title": {"text": heading, "subtitle": subtitle}, "width": width, "height": height,
            "layer": layers}


def size_order(sizes_and_params: Iterable[tuple[Any, Any]]) -> list[str]:
    """Size names ordered by their smallest parameter count (by name where it is missing).

    Parameters
    ----------
    sizes_and_params
        ``(size, params)`` pairs, one per run (``params`` may be None).
    """
    smallest: dict[str, float] = {}
    for size, params in sizes_and_params:
        value = float(params) if _finite(params) else math.inf
        smallest[str(size)] = min(smallest.get(str(size), math.inf), value)
    return sorted(smallest, key=lambda name: (smallest[name], name))


def _baseline_layers(baselines: Sequence[dict[str, Any]], y_encoding: dict[str, Any],
                     legend: dict[str, Any], width: int) -> list[dict[str, Any]]:
    """A dashed rule per baseline and its family's name at the right edge, above the rule."""
    tooltip = [_field("series"), {**_field("family"), "title": "baseline"},
               {**_field("baseline"), "title": "baseline MSE"}]
    rules = _layer(baselines, {"type": "rule", "strokeDash": BASELINE_DASH},
                   {"y": y_encoding, "color": legend, "tooltip": tooltip})
    labels = _layer(baselines, {"type": "text", "align": "right", "baseline": "bottom",
                                "dy": -2, "fontSize": 10},
                    {"x": {"value": width}, "y": y_encoding, "color": legend,
                     "text": _field("family")})
    return [rules, labels]


def _layer(rows: Sequence[dict[str, Any]], mark: dict[str, Any],
           encoding: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"values": json_ready(list(rows))}, "mark": mark, "encoding": encoding}


def _field(name: str) -> dict[str, str]:
    return {"field": name, "type": "nominal" if name in NOMINAL else "quantitative"}


def _clipped(bands: Sequence[dict[str, Any]],
             domain: tuple[float, float] | None) -> list[dict[str, Any]]:
    """Band rows with both ends positive, clipped to ``domain`` when there is one."""
    kept = [dict(row) for row in bands if _positive(row.get("low")) and _positive(row.get("high"))]
    if domain is not None:
        low, high = domain
        for row in kept:
            row["low"], row["high"] = (min(max(row[k], low), high) for k in ("low", "high"))
    return kept


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0
