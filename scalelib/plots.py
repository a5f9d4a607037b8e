"""Altair chart builders: a table (and fits) in, a chart out.

Shared by the CLI demo, the marimo notebooks and the Quarto report. Builders take polars frames
in the schema of :mod:`scalelib.results` (one row per run) or the per-run ``curve.parquet``
format, plus fits from :mod:`scalelib.scaling`; they never train and never import torch.
:func:`save_chart` writes PNG and SVG offline through vl-convert.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import altair as alt
import numpy as np
import polars as pl

from scalelib.errors import ScalelibError
from scalelib.scaling import FitsFile, JointFit, PowerLawFit, ok_rows

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
}
BAND_OPACITY = 0.2
BASELINE_DASH = [6, 4]


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


def _log_scale(domain: Sequence[float] | None = None) -> alt.Scale:
    if domain is None:
        return alt.Scale(type="log", zero=False, nice=False)
    return alt.Scale(type="log", zero=False, nice=False, domain=list(domain))


def _loss_domain(*columns: pl.Series, margin: float = 1.25) -> tuple[float, float] | None:
    """Log-axis range that shows every point and baseline with a margin, so a wide
    bootstrap band (its ends are clipped to this range) cannot squash the data."""
    values = np.concatenate([c.drop_nulls().cast(pl.Float64).to_numpy() for c in columns])
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return None
    return float(values.min() / margin), float(values.max() * margin)


def _count_axis() -> alt.Axis:
    """Axis of a log-scaled count (parameters, cells): SI labels (1k, 10k) that never touch."""
    return alt.Axis(format="~s", labelOverlap="greedy", labelSeparation=6)


def _require(table: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise ScalelibError(
            f"{what} needs column(s) {', '.join(missing)}; the table has {', '.join(table.columns)}"
        )


def _series(table: pl.DataFrame, color: str | None) -> pl.DataFrame:
    """Add a text ``series`` column: the colour column's value, or ``all`` without one."""
    if color and color in table.columns:
        return table.with_columns(pl.col(color).cast(pl.Utf8).fill_null("?").alias("series"))
    return table.with_columns(pl.lit("all").alias("series"))


def _series_label(group: dict, color: str | None) -> str:
    """The series a fit belongs to: its value of the colour column, else its whole group."""
    if color and color in group:
        return str(group[color])
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "all"


def _as_fits(fits: Sequence[PowerLawFit] | FitsFile | None,
             method: str | None) -> list[PowerLawFit]:
    """Drawable fits of one method (huber when present and none is named)."""
    if fits is None:
        return []
    listed = list(fits.fits if isinstance(fits, FitsFile) else fits)
    if method is None:
        methods = {fit.method for fit in listed}
        method = "huber" if "huber" in methods else (listed[0].method if listed else None)
    return [f for f in listed if f.method == method and np.isfinite([f.a, f.alpha, f.c]).all()]


def _size_order(table: pl.DataFrame) -> list[str]:
    """Size names ordered by parameter count (by name when there is no params column)."""
    if "params" in table.columns:
        ordered = table.group_by("size").agg(pl.col("params").min()).sort("params")
        return [str(name) for name in ordered["size"].to_list()]
    return sorted(str(name) for name in table["size"].unique().to_list())


# --------------------------------------------------------------------------------------------
# Scaling curve


def _curve_frames(drawn: list[tuple[str, PowerLawFit]], points: pl.DataFrame, x: str,
                  grid_points: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Fitted curves and, where bootstrap samples exist, their pointwise band."""
    curves, bands = [], []
    for label, fit in drawn:
        own = points.filter(pl.col("series") == label)
        span = own if own.height else points
        if not span.height:
            continue
        grid = np.geomspace(span[x].min(), span[x].max(), grid_points)
        group = ", ".join(f"{k}={v}" for k, v in fit.group.items()) or "all"
        curves.append(pl.DataFrame({x: grid, "fit": fit.predict(grid), "series": label,
                                    "group": group, "alpha": fit.alpha, "c": fit.c}))
        if fit.bootstrap_params:
            low, high = fit.band(grid)
            bands.append(pl.DataFrame({x: grid, "low": low, "high": high, "series": label,
                                       "group": group}))
    return (pl.concat(curves) if curves else pl.DataFrame(),
            pl.concat(bands) if bands else pl.DataFrame())


def _subtitle(drawn: list[tuple[str, PowerLawFit]]) -> list[str]:
    lines = []
    for label, fit in drawn:
        text = f"{label}: alpha = {fit.alpha:.3g}"
        if fit.ci and np.isfinite(fit.ci["alpha"]).all():
            low, high = fit.ci["alpha"]
            text += f" [{low:.3g}, {high:.3g}]"
        text += f", c = {fit.c:.3g}"
        if np.isfinite(fit.bits) and fit.status != "no_floor":
            text += f" ({fit.bits:.2f} bits)"
        if fit.status != "ok":
            text += f" ({fit.status})"
        lines.append(text)
    return lines


def scaling_chart(results: pl.DataFrame, fits: Sequence[PowerLawFit] | FitsFile | None = None,
                  *, x: str = "params", y: str = "best_val_mse", color: str | None = "regime",
                  method: str | None = None, baseline: str | None = "baseline_val_mse",
                  title: str | None = None, grid_points: int = 100, width: int = 480,
                  height: int = 320) -> alt.LayerChart:
    """Log-log loss against model size, with fitted curves, bootstrap bands and the baseline.

    Parameters
    ----------
    results
        Results table (only ``status == "ok"`` rows are drawn) or any table with ``x``, ``y``.
    fits
        Fits from :func:`scalelib.scaling.fit_groups` or :func:`scalelib.scaling.read_fits`;
        a fit's series is its value of ``color`` in its group. A fit with bootstrap samples
        gets a shaded band (pointwise 2.5/97.5% of the bootstrap curves on a grid of ``x``).
    x, y
        Columns on the axes.
    color
        Column that colours points and names series (None or absent: one series).
    method
        Fit method to draw (default: huber when present).
    baseline
        Column of the per-gene-mean baseline, averaged per series and drawn as a dashed rule
        (skipped when absent or all null).
    title, grid_points, width, height
        Chart title, points per fitted curve, and size in pixels.

    Returns
    -------
    altair.LayerChart
        Layers: points, then (when present) band, curves and baseline rules.
    """
    _require(results, [x, y], "scaling_chart")
    points = _series(ok_rows(results), color).filter(
        pl.col(x).is_not_null() & pl.col(y).is_not_null())
    drawn = [(_series_label(fit.group, color), fit) for fit in _as_fits(fits, method)]
    curves, bands = _curve_frames(drawn, points, x, grid_points)
    legend = alt.Color("series:N", title=axis_title(color) if color else "series")
    x_axis = alt.X(f"{x}:Q", title=axis_title(x, log=True), scale=_log_scale(),
                   axis=_count_axis())
    y_title = axis_title(y, log=True)
    tooltip = [c for c in ("size", "seed", "regime", x, y) if c in points.columns]
    rules = _baseline_frame(points, baseline)
    domain = _loss_domain(points[y], rules["baseline"] if rules.height else pl.Series([]))
    y_scale = _log_scale(domain)
    points = points.select(list(dict.fromkeys([*tooltip, x, y, "series"])))
    layers = [
        alt.Chart(points)
        .mark_circle(size=60, opacity=0.8)
        .encode(x=x_axis, y=alt.Y(f"{y}:Q", title=y_title, scale=y_scale),
                color=legend, tooltip=tooltip)
    ]
    if bands.height:
        if domain is not None:
            bands = bands.with_columns(pl.col("low", "high").clip(*domain))
        layers.append(alt.Chart(bands).mark_area(opacity=BAND_OPACITY).encode(
            x=x_axis, y=alt.Y("low:Q", title=y_title, scale=y_scale), y2="high:Q",
            color=legend, detail="group:N"))
    if curves.height:
        layers.append(alt.Chart(curves).mark_line(clip=True).encode(
            x=x_axis, y=alt.Y("fit:Q", title=y_title, scale=y_scale), color=legend,
            detail="group:N", tooltip=["group:N", "alpha:Q", "c:Q"]))
    if rules.height:
        layers.append(alt.Chart(rules).mark_rule(strokeDash=BASELINE_DASH).encode(
            y=alt.Y("baseline:Q", title=y_title, scale=y_scale), color=legend,
            tooltip=["series:N", alt.Tooltip("baseline:Q", title="per-gene-mean baseline")]))
    subtitle = _subtitle(drawn)
    if rules.height:
        subtitle.append("dashed: per-gene-mean baseline")
    if bands.height:
        subtitle.append("band: 95% bootstrap interval of the fit")
    x_name = axis_title(x)
    heading = alt.Title(title or f"{axis_title(y)} against {x_name[0].lower()}{x_name[1:]}",
                        subtitle=subtitle)
    return alt.layer(*layers).properties(title=heading, width=width, height=height)


def _baseline_frame(points: pl.DataFrame, baseline: str | None) -> pl.DataFrame:
    if not baseline or baseline not in points.columns:
        return pl.DataFrame()
    rules = (points.filter(pl.col(baseline).is_not_null())
             .group_by("series", maintain_order=True)
             .agg(pl.col(baseline).cast(pl.Float64).mean().alias("baseline")))
    return rules.filter(pl.col("baseline") > 0)


# --------------------------------------------------------------------------------------------
# Training curves, test against validation, data size


def curves_chart(curves: pl.DataFrame, *, x: str = "step", log_x: bool = False,
                 title: str | None = None, width: int = 480, height: int = 320) -> alt.LayerChart:
    """Validation (points and solid lines) and training loss (dashed) per size.

    Parameters
    ----------
    curves
        Per-run curves (the ``curve.parquet`` format): run_id, size, params, step, cells_seen,
        train_loss, val_mse (null where not evaluated), lr, elapsed_s; runs may be stacked.
    x
        ``"step"`` or ``"cells_seen"``.
    log_x
        Log-scale the x axis.
    title, width, height
        Chart title (None: a default) and size in pixels.

    Returns
    -------
    altair.LayerChart
        Lines of both curves per run, then points on the validation curve.
    """
    _require(curves, ["run_id", "size", x, "train_loss", "val_mse"], "curves_chart")
    keep = ["run_id", "size", x]
    long = pl.concat([
        curves.filter(pl.col(column).is_not_null())
        .select(*keep, pl.col(column).cast(pl.Float64).alias("mse"), pl.lit(label).alias("split"))
        for column, label in (("train_loss", "training loss"), ("val_mse", "validation MSE"))
    ]).with_columns(pl.col("size").cast(pl.Utf8))
    order = _size_order(curves.with_columns(pl.col("size").cast(pl.Utf8)))
    x_axis = alt.X(f"{x}:Q", title=axis_title(x, log=log_x),
                   scale=_log_scale() if log_x else alt.Scale(zero=False), axis=_count_axis())
    y_axis = alt.Y("mse:Q", title="MSE (masked genes, log)", scale=_log_scale())
    color = alt.Color("size:N", title=axis_title("size"), sort=order)
    base = alt.Chart(long).encode(x=x_axis, y=y_axis, color=color, detail="run_id:N")
    lines = base.mark_line(opacity=0.8).encode(
        strokeDash=alt.StrokeDash("split:N", title="curve",
                                  sort=["validation MSE", "training loss"]))
    points = base.transform_filter(alt.datum.split == "validation MSE").mark_point(size=25)
    return alt.layer(lines, points).properties(
        title=title or "Training and validation curves per model size", width=width,
        height=height)


def test_vs_val_chart(results: pl.DataFrame, *, color: str | None = "regime",
                      title: str | None = None, width: int = 360,
                      height: int = 360) -> alt.LayerChart:
    """Test MSE against best validation MSE per run, with the line y = x.

    Parameters
    ----------
    results
        Results table with ``best_val_mse`` and ``test_mse`` (only ``status == "ok"`` rows are
        drawn when it has a status column).
    color
        Column that colours points (None or absent: one series).
    title, width, height
        Chart title (None: a default) and size in pixels.

    Returns
    -------
    altair.LayerChart
        The dashed diagonal, then the points, on one linear scale shared by both axes.
    """
    _require(results, ["best_val_mse", "test_mse"], "test_vs_val_chart")
    points = _series(ok_rows(results), color).filter(
        pl.col("best_val_mse").is_not_null() & pl.col("test_mse").is_not_null())
    values = points.select(pl.col("best_val_mse"), pl.col("test_mse")).to_numpy()
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    diagonal = pl.DataFrame({"best_val_mse": [low, high], "test_mse": [low, high]})
    pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
    square = alt.Scale(domain=[low - pad, high + pad], zero=False, nice=False)  # y = x at 45°
    x_axis = alt.X("best_val_mse:Q", title=axis_title("best_val_mse"), scale=square)
    y_axis = alt.Y("test_mse:Q", title=axis_title("test_mse"), scale=square)
    tooltip = [c for c in ("size", "seed", "regime", "best_val_mse", "test_mse")
               if c in points.columns]
    points = points.select(list(dict.fromkeys([*tooltip, "series"])))
    line = alt.Chart(diagonal).mark_line(color="gray", strokeDash=BASELINE_DASH).encode(
        x=x_axis, y=y_axis)
    dots = alt.Chart(points).mark_circle(size=60, opacity=0.8).encode(
        x=x_axis, y=y_axis, tooltip=tooltip,
        color=alt.Color("series:N", title=axis_title(color) if color else "series"))
    return alt.layer(line, dots).properties(
        title=alt.Title(title or "Test against validation MSE", subtitle=["dashed: y = x"]),
        width=width, height=height)


test_vs_val_chart.__test__ = False  # a chart builder, not a test, when pytest imports it


def data_size_chart(results: pl.DataFrame, fits: JointFit | Sequence[JointFit] | None = None,
                    *, x: str = "n_train_cells", y: str = "best_val_mse",
                    title: str | None = None, width: int = 480,
                    height: int = 320) -> alt.LayerChart:
    """Loss against training-set size (log-log), one line per model size.

    Points are runs; solid lines join the seed means per size. ``fits`` (joint fits of
    ``L(N, D)`` from :func:`scalelib.scaling.fit_joint_table`, fitted with ``d = x``) add their
    predictions at each size's parameter count as dashed lines.

    Parameters
    ----------
    results
        Results table with ``x``, ``y`` and ``size`` (and ``params`` for the joint-fit lines);
        only ``status == "ok"`` rows are drawn when it has a status column.
    fits
        One joint fit or several (one per group); a fit's group selects its rows. None: no
        dashed lines.
    x, y
        Columns on the axes (training-set size and loss).
    title, width, height
        Chart title (None: a default) and size in pixels.

    Returns
    -------
    altair.LayerChart
        Layers: points, seed-mean lines and (when fits are given) joint-fit lines.
    """
    _require(results, [x, y, "size"], "data_size_chart")
    points = ok_rows(results).filter(pl.col(x).is_not_null() & pl.col(y).is_not_null())
    points = points.with_columns(pl.col("size").cast(pl.Utf8))
    order = _size_order(points)
    means = points.group_by("size", x).agg(pl.col(y).mean()).sort("size", x)
    x_axis = alt.X(f"{x}:Q", title=axis_title(x, log=True), scale=_log_scale(),
                   axis=_count_axis())
    y_axis = alt.Y(f"{y}:Q", title=axis_title(y, log=True), scale=_log_scale())
    color = alt.Color("size:N", title=axis_title("size"), sort=order)
    tooltip = [c for c in ("size", "seed", "regime", x, y) if c in points.columns]
    predicted = _joint_frame(points, fits, x, y)
    points = points.select(list(dict.fromkeys([*tooltip, "size"])))
    layers = [
        alt.Chart(points).mark_circle(size=50, opacity=0.7).encode(
            x=x_axis, y=y_axis, color=color, tooltip=tooltip),
        alt.Chart(means).mark_line().encode(x=x_axis, y=y_axis, color=color),
    ]
    subtitle = []
    if predicted.height:
        layers.append(alt.Chart(predicted).mark_line(strokeDash=BASELINE_DASH).encode(
            x=x_axis, y=y_axis, color=color, detail="group:N"))
        subtitle.append("dashed: joint fit L(N, D) = E + A/N^alpha + B/D^beta")
    return alt.layer(*layers).properties(
        title=alt.Title(title or f"{axis_title(y)} against training-set size", subtitle=subtitle),
        width=width, height=height)


def _joint_frame(points: pl.DataFrame, fits: JointFit | Sequence[JointFit] | None, x: str,
                 y: str, grid_points: int = 50) -> pl.DataFrame:
    """Predictions of joint fits at each size's parameter count over the range of ``x``."""
    if fits is None or "params" not in points.columns or not points.height:
        return pl.DataFrame()
    frames = []
    for fit in [fits] if isinstance(fits, JointFit) else list(fits):
        rows = points
        for column, value in fit.group.items():
            if column in rows.columns:
                rows = rows.filter(pl.col(column) == value)
        if not rows.height:
            continue
        grid = np.geomspace(rows[x].min(), rows[x].max(), grid_points)
        label = ", ".join(f"{k}={v}" for k, v in fit.group.items()) or "all"
        for size, params in rows.group_by("size").agg(pl.col("params").first()).iter_rows():
            frames.append(pl.DataFrame({x: grid, y: fit.predict(float(params), grid),
                                        "size": size, "group": f"{label} {size}"}))
    return pl.concat(frames) if frames else pl.DataFrame()


# --------------------------------------------------------------------------------------------
# Saving


def _file_mode() -> int:
    """The mode a new file gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_chart(chart: alt.TopLevelMixin, stem: str | Path, *,
               formats: Sequence[str] = ("png", "svg"), scale: float = 2.0) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` (offline, through vl-convert); return the paths.

    Each file is written to a temporary name and renamed, so a reader never sees half a file.

    Parameters
    ----------
    chart
        Any top-level Altair chart.
    stem
        Output path without extension; its folder is created when missing.
    formats
        Extensions to write, each a format vl-convert knows (e.g. ``png``, ``svg``, ``pdf``).
    scale
        Pixel scale factor of PNG output (ignored for other formats).

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of ``formats``.

    Raises
    ------
    ScalelibError
        vl-convert is not installed.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{fmt}",
                                                 dir=path.parent)
        os.close(descriptor)
        try:
            options = {"scale_factor": scale} if fmt == "png" else {}
            chart.save(temporary, format=fmt, **options)
            os.chmod(temporary, _file_mode())  # mkstemp makes 0600; give it the usual mode
            os.replace(temporary, path)
        except ImportError as error:
            raise ScalelibError(
                f"saving {fmt} needs vl-convert ({error}); pip install vl-convert-python"
            ) from None
        finally:
            Path(temporary).unlink(missing_ok=True)
        written.append(path)
    return written
