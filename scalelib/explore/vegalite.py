"""The explorer's charts: :mod:`scalelib.chartspec` specifications filled from plain rows.

The in-browser results explorer cannot import altair offline (its dependencies include
compiled packages that are not on PyPI for WebAssembly), so it computes the rows of the charts
here in pure Python and hands the specifications of :mod:`scalelib.chartspec` (the ones
:mod:`scalelib.plots` draws) to marimo through :class:`VegaLite`, which marimo renders with its
bundled Vega.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from scalelib import chartspec
from scalelib.explore.purefit import LiteFit

MIME_TYPE = "application/vnd.vegalite.v6+json"
SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"


class VegaLite:
    """A Vega-Lite specification that marimo and Jupyter display as a chart.

    Parameters
    ----------
    spec
        The specification (NaN and infinite numbers are written as null).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = {"$schema": SCHEMA, **spec}

    def to_json(self) -> str:
        """The specification as strict JSON."""
        return json.dumps(chartspec.json_ready(self.spec), allow_nan=False)

    def _mime_(self) -> tuple[str, str]:
        return MIME_TYPE, self.to_json()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {MIME_TYPE: json.loads(self.to_json())}


def scaling_spec(rows: Sequence[dict[str, Any]], fits: Sequence[LiteFit] = (), *,
                 baselines: Sequence[dict[str, Any]] = (), x: str = "params",
                 y: str = "best_val_mse", color: str | None = "regime",
                 baseline: str | None = "baseline_val_mse", title: str | None = None,
                 grid_points: int = 60, width: int = 480, height: int = 320) -> VegaLite:
    """Log-log loss against model size with fitted curves, bootstrap bands, baselines and each
    fit's verdict in words (:func:`scalelib.chartspec.scaling_spec`, as
    :func:`scalelib.plots.scaling_chart` draws it).

    Parameters
    ----------
    rows
        Results rows (dictionaries in the :mod:`scalelib.results` schema); only rows with
        status ``ok`` and positive ``x`` and ``y`` are drawn.
    fits
        Fits whose group's ``color`` value names their series; drawable ones get a curve, and
        a band when they carry bootstrap samples.
    baselines
        Baseline rows (``model_family`` mean, pca, ridge or knn): per series, the mean ``y``
        of each family scored on the series' data (same dataset fingerprint and training-set
        size) is a labelled dashed rule.
    x, y
        Columns on the axes.
    color
        Column that names series (None or a null value: one series ``all``).
    baseline
        Column of the older per-run per-gene-mean baseline, used only without ``baselines``:
        averaged per series and drawn as a dashed rule (None: no rule).
    title, grid_points, width, height
        Chart title, points per curve and size in pixels.
    """
    points = [_point(row, x, y, color) for row in rows if _usable(row, x, y)]
    curves, bands, subtitle = [], [], []
    for fit in fits:
        if not fit.drawable:
            continue
        label = chartspec.series_label(fit.group, color)
        group = chartspec.group_label(fit.group)
        own = [p[x] for p in points if p["series"] == label] or [p[x] for p in points]
        if not own:
            continue
        grid = _geomspace(min(own), max(own), grid_points)
        curves += [{x: v, "fit": fit.predict(v), "series": label, "group": group,
                    "alpha": fit.alpha, "c": fit.c} for v in grid]
        if fit.bootstrap_params:
            low, high = fit.band(grid)
            bands += [{x: v, "low": lo, "high": hi, "series": label, "group": group}
                      for v, lo, hi in zip(grid, low, high)]
        subtitle += chartspec.fit_notes(label, fit)
    lines = (_family_lines(rows, baselines, x, y, color) if baselines
             else _baselines(rows, x, y, color, baseline))
    spec = chartspec.scaling_spec(points, curves, bands, lines,
                                  x=x, y=y, color=color, subtitle=subtitle, title=title,
                                  width=width, height=height)
    return VegaLite(spec)


def data_size_spec(rows: Sequence[dict[str, Any]], *, x: str = "n_train_cells",
                   y: str = "best_val_mse", title: str | None = None, width: int = 480,
                   height: int = 320) -> VegaLite:
    """Loss against training-set size (log-log): points per run, a line of means per size
    (:func:`scalelib.chartspec.data_size_spec`).

    Parameters
    ----------
    rows
        Results rows; only rows with status ``ok`` and positive ``x`` and ``y`` are drawn.
    x, y
        Columns on the axes (training-set size and loss).
    title, width, height
        Chart title (None: a default) and size in pixels.
    """
    points = [{"size": str(row.get("size")), "seed": row.get("seed"), x: float(row[x]),
               y: float(row[y])} for row in rows if _usable(row, x, y)]
    means: dict[tuple[str, float], list[float]] = {}
    for point in points:
        means.setdefault((point["size"], point[x]), []).append(point[y])
    lines = [{"size": size, x: d, y: sum(v) / len(v)} for (size, d), v in sorted(means.items())]
    order = chartspec.size_order((row.get("size"), row.get("params")) for row in rows
                                 if _usable(row, x, y))
    return VegaLite(chartspec.data_size_spec(points, lines, x=x, y=y, order=order, title=title,
                                             width=width, height=height))


def _usable(row: dict[str, Any], x: str, y: str) -> bool:
    if row.get("status", "ok") != "ok":
        return False
    values = (row.get(x), row.get(y))
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def _series(row: dict[str, Any], color: str | None) -> str:
    return str(row.get(color)) if color and row.get(color) is not None else "all"


def _point(row: dict[str, Any], x: str, y: str, color: str | None) -> dict[str, Any]:
    series = _series(row, color)
    point = {"size": row.get("size"), "seed": row.get("seed")}
    if "regime" in row:
        point["regime"] = row["regime"]
    return {**point, x: float(row[x]), y: float(row[y]), "series": series}


def _baselines(rows: Sequence[dict[str, Any]], x: str, y: str, color: str | None,
               baseline: str | None) -> list[dict[str, Any]]:
    if not baseline:
        return []
    values: dict[str, list[float]] = {}
    for row in rows:
        value = row.get(baseline)
        if _usable(row, x, y) and isinstance(value, (int, float)) and value > 0:
            values.setdefault(_point(row, x, y, color)["series"], []).append(float(value))
    return [{"series": series, "family": chartspec.MEAN_BASELINE, "baseline": sum(v) / len(v)}
            for series, v in values.items()]


def _family_lines(rows: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]], x: str,
                  y: str, color: str | None) -> list[dict[str, Any]]:
    """Mean ``y`` per series and family of the baselines scored on each series' data."""
    data = {}
    for row in rows:
        if _usable(row, x, y):
            data.setdefault(_series(row, color), set()).add(_data_key(row))
    values: dict[tuple[str, str], list[float]] = {}
    for row in baselines:
        series = _series(row, color)
        if _data_key(row) in data.get(series, ()) and _usable(row, y, y):
            values.setdefault((series, str(row.get("model_family"))), []).append(float(row[y]))
    return [{"series": series, "family": family, "baseline": sum(v) / len(v)}
            for (series, family), v in values.items()]


def _data_key(row: dict[str, Any]) -> tuple[Any, Any]:
    """The data a row was scored on (:func:`scalelib.scaling.matching_baselines`)."""
    return row.get("dataset_fingerprint"), row.get("n_train_cells")


def _geomspace(low: float, high: float, count: int) -> list[float]:
    if high <= low or count < 2:
        return [low]
    step = math.log(high / low) / (count - 1)
    return [low * math.exp(step * i) for i in range(count)]
