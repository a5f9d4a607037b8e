"""Altair chart builders: a table (and fits) in, a chart out.

Shared by the CLI demo, the marimo notebooks and the Quarto report. Builders take polars frames
in the schema of :mod:`scalelib.results` (one row per run) or the per-run ``curve.parquet``
format, plus fits from :mod:`scalelib.scaling`; they never train and never import torch.
The scaling, data-size, allocation and probe charts are the specifications of
:mod:`scalelib.chartspec` (the last two filled by :mod:`scalelib.chartrows`), which the offline
explorer draws too. :func:`save_chart` writes PNG and SVG offline through vl-convert.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import altair as alt
import numpy as np
import polars as pl

from scalelib.chartrows import (
    allocation_rows,
    probe_chart_rows,
    probe_rows,
    require,
    table_size_order,
)
from scalelib.chartspec import (
    BASELINE_DASH,
    EDGE_PADDING,
    MEAN_BASELINE,
    axis_title,
    count_axis,
    data_size_spec,
    fit_notes,
    frontier_spec,
    group_label,
    log_scale,
    probe_spec,
    scaling_spec,
    series_label,
)
from scalelib.errors import ScalelibError
from scalelib.scaling import (
    FitsFile,
    JointFit,
    PowerLawFit,
    baseline_rows,
    matching_baselines,
    ok_rows,
    transformer_rows,
)


def _series(table: pl.DataFrame, color: str | None) -> pl.DataFrame:
    """Add a text ``series`` column: the colour column's value, or ``all`` without one."""
    if color and color in table.columns:
        return table.with_columns(pl.col(color).cast(pl.Utf8).fill_null("?").alias("series"))
    return table.with_columns(pl.lit("all").alias("series"))


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
        group = group_label(fit.group)
        curves.append(pl.DataFrame({x: grid, "fit": fit.predict(grid), "series": label,
                                    "group": group, "alpha": fit.alpha, "c": fit.c}))
        if fit.bootstrap_params:
            low, high = fit.band(grid)
            bands.append(pl.DataFrame({x: grid, "low": low, "high": high, "series": label,
                                       "group": group}))
    return (pl.concat(curves) if curves else pl.DataFrame(),
            pl.concat(bands) if bands else pl.DataFrame())


def scaling_chart(results: pl.DataFrame, fits: Sequence[PowerLawFit] | FitsFile | None = None,
                  *, x: str = "params", y: str = "best_val_mse", color: str | None = "regime",
                  method: str | None = None, baselines: pl.DataFrame | None = None,
                  baseline: str | None = "baseline_val_mse", title: str | None = None,
                  grid_points: int = 100, width: int = 480, height: int = 320) -> alt.LayerChart:
    """Log-log loss against model size, with fitted curves, bootstrap bands, baselines and
    each fit's verdict in words.

    Parameters
    ----------
    results
        Results table (only ``status == "ok"`` rows are drawn) or any table with ``x``, ``y``;
        its baseline rows (``model_family`` other than transformer) are reference lines.
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
    baselines
        Baseline rows (default: the table's own, :func:`scalelib.scaling.baseline_rows`):
        per series, the mean ``y`` of each family scored on the series' data (same dataset
        fingerprint and training-set size) is a dashed rule labelled with the family.
    baseline
        Column of the older per-run per-gene-mean baseline, used only when the table has no
        baseline rows: averaged per series and drawn as a dashed rule (skipped when absent or
        all null).
    title, grid_points, width, height
        Chart title, points per fitted curve, and size in pixels.

    Returns
    -------
    altair.LayerChart
        Layers: points, then (when present) band, curves, baseline rules and their labels;
        the subtitle gives each fit's numbers and verdict (:func:`scalelib.chartspec.fit_notes`).
    """
    require(results, [x, y], "scaling_chart")
    points = _series(transformer_rows(ok_rows(results)), color).filter(
        pl.col(x).is_not_null() & pl.col(y).is_not_null())
    drawn = [(series_label(fit.group, color), fit) for fit in _as_fits(fits, method)]
    curves, bands = _curve_frames(drawn, points, x, grid_points)
    families = baseline_rows(results) if baselines is None else baselines
    rules = _baseline_frame(families, points, y, color, baseline)
    tooltip = [c for c in ("size", "seed", "regime", x, y) if c in points.columns]
    points = points.select(list(dict.fromkeys([*tooltip, x, y, "series"])))
    spec = scaling_spec(points.to_dicts(), curves.to_dicts(), bands.to_dicts(), rules.to_dicts(),
                        x=x, y=y, color=color, title=title, width=width, height=height,
                        subtitle=[line for label, fit in drawn for line in fit_notes(label, fit)])
    return layered_chart(spec)


def layered_chart(spec: dict) -> alt.LayerChart:
    """An Altair chart of a layered Vega-Lite specification (see :mod:`scalelib.chartspec`).

    Parameters
    ----------
    spec
        A specification with ``layer``, ``title``, ``width`` and ``height``.
    """
    layers = [alt.Chart.from_dict(layer) for layer in spec["layer"]]
    title = alt.Title(spec["title"]["text"], subtitle=spec["title"]["subtitle"])
    return alt.layer(*layers).properties(title=title, width=spec["width"],
                                         height=spec["height"])


def _baseline_frame(families: pl.DataFrame, points: pl.DataFrame, y: str, color: str | None,
                    fallback: str | None) -> pl.DataFrame:
    """Reference lines per series (``series``, ``family``, ``baseline``): the mean ``y`` of
    each baseline family scored on the series' data, else the ``fallback`` column's mean."""
    if families.height and y in families.columns:
        return _family_lines(_series(families, color), points, y)
    if not fallback or fallback not in points.columns:
        return pl.DataFrame()
    rules = (points.filter(pl.col(fallback).is_not_null())
             .group_by("series", maintain_order=True)
             .agg(pl.lit(MEAN_BASELINE).alias("family"),
                  pl.col(fallback).cast(pl.Float64).mean().alias("baseline")))
    return rules.filter(pl.col("baseline") > 0)


def _family_lines(families: pl.DataFrame, points: pl.DataFrame, y: str) -> pl.DataFrame:
    """Mean ``y`` per series and family of the baseline rows matching each series' runs."""
    frames = []
    for (series,), runs in points.group_by("series", maintain_order=True):
        own = matching_baselines(runs, families.filter(pl.col("series") == series))
        frames.append(own.filter(pl.col(y) > 0).group_by("model_family", maintain_order=True)
                      .agg(pl.col(y).cast(pl.Float64).mean().alias("baseline"))
                      .select(pl.lit(series).alias("series"),
                              pl.col("model_family").alias("family"), "baseline"))
    return pl.concat(frames) if frames else pl.DataFrame()


# --------------------------------------------------------------------------------------------
# Training curves, test against validation, data size


def curves_chart(curves: pl.DataFrame, *, x: str = "step", log_x: bool = False,
                 smooth: int | None = None, title: str | None = None, width: int = 480,
                 height: int = 320) -> alt.LayerChart:
    """Validation (points and solid lines) and training loss (dashed) per size.

    The training loss is a moving average over ``smooth`` steps per run (one batch's loss is
    noisy); both axes leave room for the outermost points. A ``converge`` run's cool-downs
    (column ``cooldown``) are drawn apart from its stable run, which the put-aside ones
    branch off: its line passes over them and each ends in its own validation point.

    Parameters
    ----------
    curves
        Per-run curves (the ``curve.parquet`` format): run_id, size, params, step, cells_seen,
        train_loss, val_mse (null where not evaluated), lr, elapsed_s; runs may be stacked.
    x
        ``"step"`` or ``"cells_seen"``.
    log_x
        Log-scale the x axis.
    smooth
        Steps in the training loss's moving average (None: a fiftieth of the longest run,
        at least one).
    title, width, height
        Chart title (None: a default) and size in pixels.

    Returns
    -------
    altair.LayerChart
        Lines of both curves per run, then points on the validation curve.
    """
    require(curves, ["run_id", "size", x, "train_loss", "val_mse"], "curves_chart")
    keep = ["run_id", "size", x, "segment"]
    window = smooth or max(1, int(curves["step"].max() or 0) // 50)
    if "cooldown" not in curves.columns:  # curves saved before cool-downs were marked
        curves = curves.with_columns(cooldown=pl.lit(0))
    segment = pl.concat_str(pl.col("run_id"), pl.col("cooldown").fill_null(0).cast(pl.Utf8),
                            separator="/")
    curves = curves.sort("run_id", "step").with_columns(segment=segment).with_columns(
        pl.col("train_loss").rolling_mean(window, min_samples=1).over("segment"))
    long = pl.concat([
        curves.filter(pl.col(column).is_not_null())
        .select(*keep, pl.col(column).cast(pl.Float64).alias("mse"), pl.lit(label).alias("split"))
        for column, label in (("train_loss", "training loss"), ("val_mse", "validation MSE"))
    ]).with_columns(pl.col("size").cast(pl.Utf8))
    order = table_size_order(curves.with_columns(pl.col("size").cast(pl.Utf8)))
    x_scale = (log_scale(padding=EDGE_PADDING) if log_x
               else alt.Scale(zero=False, padding=EDGE_PADDING))
    x_axis = alt.X(f"{x}:Q", title=axis_title(x, log=log_x), scale=x_scale, axis=count_axis())
    y_axis = alt.Y("mse:Q", title="MSE (masked genes, log)",
                   scale=log_scale(padding=EDGE_PADDING))
    color = alt.Color("size:N", title=axis_title("size"), sort=order)
    base = alt.Chart(long).encode(x=x_axis, y=y_axis, color=color, detail="segment:N")
    lines = base.mark_line(opacity=0.8).encode(
        strokeDash=alt.StrokeDash("split:N", title="curve",
                                  sort=["validation MSE", "training loss"]))
    points = base.transform_filter(alt.datum.split == "validation MSE").mark_point(size=25)
    subtitle = f"training loss: moving average of {window} steps" if window > 1 else []
    return alt.layer(lines, points).properties(
        title=alt.Title(title or "Training and validation curves per model size",
                        subtitle=subtitle), width=width, height=height)


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
    require(results, ["best_val_mse", "test_mse"], "test_vs_val_chart")
    points = _series(transformer_rows(ok_rows(results)), color).filter(
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
    require(results, [x, y, "size"], "data_size_chart")
    points = transformer_rows(ok_rows(results)).filter(
        pl.col(x).is_not_null() & pl.col(y).is_not_null())
    points = points.with_columns(pl.col("size").cast(pl.Utf8))
    order = table_size_order(points)
    means = points.group_by("size", x).agg(pl.col(y).mean()).sort("size", x)
    tooltip = [c for c in ("size", "seed", "regime", x, y) if c in points.columns]
    predicted = _joint_frame(points, fits, x, y)
    points = points.select(list(dict.fromkeys([*tooltip, "size"])))
    return layered_chart(data_size_spec(points.to_dicts(), means.to_dicts(), predicted.to_dicts(),
                                        x=x, y=y, order=order, title=title, width=width,
                                        height=height))


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
        label = group_label(fit.group)
        for size, params in rows.group_by("size").agg(pl.col("params").first()).iter_rows():
            frames.append(pl.DataFrame({x: grid, y: fit.predict(float(params), grid),
                                        "size": size, "group": f"{label} {size}"}))
    return pl.concat(frames) if frames else pl.DataFrame()


def allocation_chart(results: pl.DataFrame, fit: JointFit, *, tolerance: float = 0.1,
                     budgets: Sequence[float] | None = None, x: str = "n_train_cells",
                     y: str = "best_val_mse", title: str | None = None, width: int = 480,
                     height: int = 320) -> alt.LayerChart:
    """What a joint fit says about data, model size and compute (log-log, loss against D):
    per model size the fitted line and a diamond where more parameters stop paying, the
    compute-optimal frontier and the runs (rows from :func:`scalelib.chartrows.allocation_rows`).

    Parameters
    ----------
    results, fit, tolerance, budgets, x, y
        As for :func:`scalelib.chartrows.allocation_rows`.
    title, width, height
        Chart title (None: a default) and size in pixels.
    """
    rows = allocation_rows(results, fit, tolerance=tolerance, budgets=budgets, x=x, y=y)
    heading = title or f"{group_label(fit.group) or 'all runs'}: loss, data and compute"
    return layered_chart(frontier_spec(**rows, title=heading, width=width, height=height))


# --------------------------------------------------------------------------------------------
# Downstream probes


def probe_chart(probes: pl.DataFrame, saturation: pl.DataFrame | None = None, *,
                x: str = "n_train_cells", classifier: str = "logreg",
                title: str | None = None, width: int = 480, height: int = 320) -> alt.LayerChart:
    """Probe macro F1 against training-set size D (one line per model size) or against
    parameters P (one line per D), with the PCA and expression probes as dashed references.

    Parameters
    ----------
    probes
        Probes table (:mod:`scalelib.probes`) of one label.
    saturation
        Saturation points (:func:`scalelib.scaling.saturation.saturation_points`); with
        ``x="n_train_cells"`` each size's point is a diamond with its interval as a bar.
    x
        ``n_train_cells`` (D) or ``params`` (P), on a log axis.
    classifier
        ``logreg`` or ``knn``.
    title, width, height
        Chart title (None: a default) and size in pixels.

    Returns
    -------
    altair.LayerChart
        Layers: runs, seed means, baseline references and (against D) saturation points.
    """
    rows = probe_rows(probes, saturation, x=x, classifier=classifier)
    return layered_chart(probe_spec(**rows, title=title, width=width, height=height))


def probe_charts(probes: pl.DataFrame, saturation: pl.DataFrame | None = None,
                 **options) -> dict[str, alt.LayerChart]:
    """Every probe chart of a probes table by name (:func:`scalelib.chartrows.probe_chart_rows`:
    per regime, and subsampling strategy when the runs used several, and classifier, against D
    when the runs span several D and against P).

    Parameters
    ----------
    probes, saturation
        As for :func:`scalelib.chartrows.probe_chart_rows`.
    **options
        ``width`` and ``height`` of each chart.
    """
    return {name: layered_chart(probe_spec(**rows, **options))
            for name, rows in probe_chart_rows(probes, saturation).items()}


# --------------------------------------------------------------------------------------------
# Saving


def pergene_chart(table: pl.DataFrame, *, title: str | None = None, width: int = 320,
                  height: int = 280) -> alt.HConcatChart:
    """How the validation error of the best model of each size spreads across genes.

    Parameters
    ----------
    table
        A per-gene table (:func:`scalelib.pergene.pergene_table`) of one dataset and data
        size: one row per run and gene with ``size``, ``params``, ``objective``, ``gene``,
        ``mse``, ``n_masked``, ``error_share`` and ``error_rank``.
    title, width, height
        Title (None: a default) and the size of each panel in pixels.

    Returns
    -------
    altair.HConcatChart
        Left: per-gene validation MSE per size (box plots, log scale, one box per objective).
        Right: the share of the run's summed squared error carried by its k worst genes,
        against k (a straight diagonal would be an even spread).
    """
    columns = ["size", "params", "objective", "gene", "mse", "n_masked", "error_share",
               "error_rank"]
    require(table, columns, "pergene_chart")
    genes = table.filter((pl.col("n_masked") > 0) & (pl.col("mse") > 0)).select(columns)
    sizes = table_size_order(genes)
    genes = genes.sort("size", "objective", "error_rank")
    cumulative = genes.with_columns(
        cumulative_share=pl.col("error_share").cum_sum().over("size", "objective"))
    size_axis = alt.X("size:N", sort=sizes, title="model size")
    boxes = alt.Chart(genes).mark_boxplot(size=14).encode(
        x=size_axis, xOffset=alt.XOffset("objective:N"),
        y=alt.Y("mse:Q", scale=alt.Scale(type="log"), title="validation MSE of a gene"),
        color=alt.Color("objective:N", title="objective"),
    ).properties(width=width, height=height, title="Per-gene error, best model of each size")
    shares = alt.Chart(cumulative).mark_line().encode(
        x=alt.X("error_rank:Q", title="genes, largest error first"),
        y=alt.Y("cumulative_share:Q", title="share of the summed squared error",
                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("size:N", sort=sizes, title="size"),
        strokeDash=alt.StrokeDash("objective:N", title="objective"),
        tooltip=["size", "objective", "error_rank", "gene", "cumulative_share"],
    ).properties(width=width, height=height, title="Where the floor sits")
    return alt.hconcat(boxes, shares).resolve_scale(color="independent").properties(
        title=title or "Validation error across genes")


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
