"""Vega-Lite specifications built from plain rows, without altair (standard library only).

The in-browser results explorer cannot import altair offline (its dependencies include
compiled packages that are not on PyPI for WebAssembly), so it builds chart specifications as
dictionaries here and hands them to marimo through :class:`VegaLite`, which marimo renders with
its bundled Vega. The charts follow :func:`scalelib.plots.scaling_chart` (log-log points per
run, fitted curves, bootstrap bands, dashed per-gene-mean baselines) and
:func:`scalelib.plots.data_size_chart`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from scalelib.explore.purefit import LiteFit

MIME_TYPE = "application/vnd.vegalite.v6+json"
SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"
TITLES = {
    "params": "Parameters P",
    "best_val_mse": "Validation MSE (masked genes)",
    "test_mse": "Test MSE (masked genes)",
    "n_train_cells": "Training cells D",
    "train_flops": "Training FLOPs",
    "regime": "Regime",
    "size": "Model size",
}
BAND_OPACITY = 0.2
BASELINE_DASH = [6, 4]


class VegaLite:
    """A Vega-Lite specification that marimo and Jupyter display as a chart.

    Parameters
    ----------
    spec
        The specification (NaN and infinite numbers are written as null).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def to_json(self) -> str:
        """The specification as strict JSON."""
        return json.dumps(_clean(self.spec), allow_nan=False)

    def _mime_(self) -> tuple[str, str]:
        return MIME_TYPE, self.to_json()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {MIME_TYPE: json.loads(self.to_json())}


def axis_title(column: str, log: bool = False) -> str:
    """Readable axis title of a column, with ``(log)`` for a log axis.

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


def _log_axis(field: str, column: str, count: bool) -> dict[str, Any]:
    encoding: dict[str, Any] = {"field": field, "type": "quantitative",
                                "title": axis_title(column, log=True),
                                "scale": {"type": "log", "zero": False, "nice": False}}
    if count:
        encoding["axis"] = {"format": "~s", "labelOverlap": "greedy", "labelSeparation": 6}
    return encoding


def scaling_spec(rows: Sequence[dict[str, Any]], fits: Sequence[LiteFit] = (), *,
                 x: str = "params", y: str = "best_val_mse", color: str | None = "regime",
                 baseline: str | None = "baseline_val_mse", title: str | None = None,
                 grid_points: int = 60, width: int = 480, height: int = 320) -> VegaLite:
    """Log-log loss against model size with fitted curves, bootstrap bands and baselines.

    Parameters
    ----------
    rows
        Results rows (dictionaries in the :mod:`scalelib.results` schema); only rows with
        status ``ok`` and positive ``x`` and ``y`` are drawn.
    fits
        Fits whose group's ``color`` value names their series; drawable ones get a curve, and
        a band when they carry bootstrap samples.
    x, y
        Columns on the axes.
    color
        Column that names series (None or a null value: one series ``all``).
    baseline
        Column of the per-gene-mean baseline, averaged per series and drawn as a dashed rule
        (None: no rule).
    title, grid_points, width, height
        Chart title, points per curve and size in pixels.

    Returns
    -------
    VegaLite
        Layers: points, then (when present) bands, curves and baseline rules.
    """
    points = [_point(row, x, y, color) for row in rows if _usable(row, x, y)]
    curves, bands, subtitle = [], [], []
    for fit in fits:
        if not fit.drawable:
            continue
        label = _series_label(fit.group, color)
        own = [p[x] for p in points if p["series"] == label] or [p[x] for p in points]
        if not own:
            continue
        grid = _geomspace(min(own), max(own), grid_points)
        curves += [{x: v, "fit": fit.predict(v), "series": label, "alpha": fit.alpha,
                    "c": fit.c} for v in grid]
        if fit.bootstrap_params:
            low, high = fit.band(grid)
            bands += [{x: v, "low": lo, "high": hi, "series": label}
                      for v, lo, hi in zip(grid, low, high) if lo > 0 and hi > 0]
        subtitle.append(_fit_line(label, fit))
    baselines = _baselines(rows, x, y, color, baseline)
    color_encoding = {"field": "series", "type": "nominal",
                      "title": axis_title(color) if color else "series"}
    x_encoding = _log_axis(x, x, count=True)
    y_title = axis_title(y, log=True)
    layers: list[dict[str, Any]] = [{
        "data": {"values": points},
        "mark": {"type": "circle", "size": 60, "opacity": 0.8},
        "encoding": {"x": x_encoding, "y": _log_axis(y, y, count=False), "color": color_encoding,
                     "tooltip": [{"field": k, "type": "nominal" if k in ("size", "regime")
                                  else "quantitative"} for k in ("size", "seed", x, y)]},
    }]
    if bands:
        layers.append({"data": {"values": bands}, "mark": {"type": "area", "opacity": BAND_OPACITY},
                       "encoding": {"x": x_encoding, "y": {**_log_axis("low", y, False),
                                                           "title": y_title},
                                    "y2": {"field": "high"}, "color": color_encoding}})
    if curves:
        layers.append({"data": {"values": curves}, "mark": {"type": "line"},
                       "encoding": {"x": x_encoding, "y": {**_log_axis("fit", y, False),
                                                           "title": y_title},
                                    "color": color_encoding,
                                    "tooltip": [{"field": "series", "type": "nominal"},
                                                {"field": "alpha", "type": "quantitative"},
                                                {"field": "c", "type": "quantitative"}]}})
    if baselines:
        layers.append({"data": {"values": baselines},
                       "mark": {"type": "rule", "strokeDash": BASELINE_DASH},
                       "encoding": {"y": {**_log_axis("baseline", y, False), "title": y_title},
                                    "color": color_encoding}})
        subtitle.append("dashed: per-gene-mean baseline")
    if bands:
        subtitle.append("band: 95% bootstrap interval of the fit")
    heading = title or f"{axis_title(y)} against {axis_title(x).lower()}"
    return VegaLite({"$schema": SCHEMA, "title": {"text": heading, "subtitle": subtitle},
                     "width": width, "height": height, "layer": layers})


def data_size_spec(rows: Sequence[dict[str, Any]], *, x: str = "n_train_cells",
                   y: str = "best_val_mse", title: str | None = None, width: int = 480,
                   height: int = 320) -> VegaLite:
    """Loss against training-set size (log-log): points per run, a line of means per size.

    Parameters
    ----------
    rows
        Results rows; only rows with status ``ok`` and positive ``x`` and ``y`` are drawn.
    x, y
        Columns on the axes (training-set size and loss).
    title, width, height
        Chart title (None: a default) and size in pixels.
    """
    points = [{"size": str(row.get("size")), "params": row.get("params"), "seed": row.get("seed"),
               x: float(row[x]), y: float(row[y])} for row in rows if _usable(row, x, y)]
    means: dict[tuple[str, float], list[float]] = {}
    for point in points:
        means.setdefault((point["size"], point[x]), []).append(point[y])
    lines = [{"size": size, x: d, y: sum(v) / len(v)} for (size, d), v in sorted(means.items())]
    order = [s for s, _ in sorted({(p["size"], p["params"] or 0) for p in points},
                                  key=lambda item: item[1])]
    color = {"field": "size", "type": "nominal", "title": axis_title("size"),
             "sort": list(dict.fromkeys(order))}
    x_encoding = _log_axis(x, x, count=True)
    y_encoding = _log_axis(y, y, count=False)
    return VegaLite({
        "$schema": SCHEMA, "title": title or f"{axis_title(y)} against training-set size",
        "width": width, "height": height,
        "layer": [
            {"data": {"values": points}, "mark": {"type": "circle", "size": 50, "opacity": 0.7},
             "encoding": {"x": x_encoding, "y": y_encoding, "color": color,
                          "tooltip": [{"field": "size", "type": "nominal"},
                                      {"field": x, "type": "quantitative"},
                                      {"field": y, "type": "quantitative"}]}},
            {"data": {"values": lines}, "mark": {"type": "line"},
             "encoding": {"x": x_encoding, "y": y_encoding, "color": color}},
        ],
    })


def _usable(row: dict[str, Any], x: str, y: str) -> bool:
    if row.get("status", "ok") != "ok":
        return False
    values = (row.get(x), row.get(y))
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def _point(row: dict[str, Any], x: str, y: str, color: str | None) -> dict[str, Any]:
    series = str(row.get(color)) if color and row.get(color) is not None else "all"
    return {"size": row.get("size"), "seed": row.get("seed"), x: float(row[x]),
            y: float(row[y]), "series": series}


def _series_label(group: dict[str, Any], color: str | None) -> str:
    if color and color in group:
        return str(group[color])
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "all"


def _fit_line(label: str, fit: LiteFit) -> str:
    text = f"{label}: alpha = {fit.alpha:.3g}"
    if fit.ci and all(math.isfinite(v) for v in fit.ci.get("alpha", (math.nan,))):
        low, high = fit.ci["alpha"]
        text += f" [{low:.3g}, {high:.3g}]"
    text += f", c = {fit.c:.3g}"
    if math.isfinite(fit.bits) and fit.status != "no_floor":
        text += f" ({fit.bits:.2f} bits)"
    if fit.status != "ok":
        text += f" ({fit.status})"
    return text


def _baselines(rows: Sequence[dict[str, Any]], x: str, y: str, color: str | None,
               baseline: str | None) -> list[dict[str, Any]]:
    if not baseline:
        return []
    values: dict[str, list[float]] = {}
    for row in rows:
        value = row.get(baseline)
        if _usable(row, x, y) and isinstance(value, (int, float)) and value > 0:
            values.setdefault(_point(row, x, y, color)["series"], []).append(float(value))
    return [{"series": series, "baseline": sum(v) / len(v)} for series, v in values.items()]


def _geomspace(low: float, high: float, count: int) -> list[float]:
    if high <= low or count < 2:
        return [low]
    step = math.log(high / low) / (count - 1)
    return [low * math.exp(step * i) for i in range(count)]


def _clean(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (recursively)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
