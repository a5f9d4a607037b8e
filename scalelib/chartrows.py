"""The rows of the allocation and probe charts, computed from polars tables.

:mod:`scalelib.chartspec` styles rows into Vega-Lite specifications; these functions compute
the rows (with numpy, polars and scipy) and return them as the keyword arguments of
:func:`scalelib.chartspec.frontier_spec` and :func:`scalelib.chartspec.probe_spec`.
:mod:`scalelib.plots` draws them with Altair, and ``scalelib export`` stores them in the
offline explorer's data file (:mod:`scalelib.explore.bundle`), which draws them without numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from scalelib.chartspec import size_order
from scalelib.errors import ScalelibError
from scalelib.fitrules import TRANSFORMER
from scalelib.scaling import JointFit, ok_rows, transformer_rows

PLOT_SPAN = 10.0  # the allocation chart's data axis reaches this factor beyond the runs


def require(table: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise naming the missing columns of ``table`` that ``what`` needs."""
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise ScalelibError(
            f"{what} needs column(s) {', '.join(missing)}; the table has {', '.join(table.columns)}"
        )


def table_size_order(table: pl.DataFrame) -> list[str]:
    """Size names ordered by parameter count (by name when there is no params column)."""
    params = table["params"] if "params" in table.columns else [None] * table.height
    return size_order(zip(table["size"].to_list(), list(params)))


def allocation_rows(results: pl.DataFrame, fit: JointFit, *, tolerance: float = 0.1,
                    budgets: Sequence[float] | None = None, x: str = "n_train_cells",
                    y: str = "best_val_mse") -> dict[str, Any]:
    """What a joint fit says about data, model size and compute, as rows.

    One fitted line per model size of the fit's runs, the point on each where more
    parameters stop paying (:func:`scalelib.scaling.allocation.stop_paying_data`), the
    compute-optimal frontier for FLOP budgets (FLOPs per cell from the runs'
    ``flops_per_cell``, :func:`scalelib.scaling.allocation.optimal_allocation`) and the runs.
    The data axis spans :data:`PLOT_SPAN` times beyond the runs' range on each side; points
    outside it are left out.

    Parameters
    ----------
    results
        Results table with ``size``, ``params``, ``flops_per_cell``, ``x`` and ``y``; the
        fit's group selects its rows.
    fit
        A joint fit of ``y`` on ``params`` and ``x`` with finite parameters.
    tolerance
        Gain of doubling N relative to doubling D at the stop-paying points.
    budgets
        FLOP budgets of the frontier (None: 12 spanning the runs' ``flops_per_cell x x``).
    x, y
        Data-size and loss columns.

    Returns
    -------
    dict
        ``curves``, ``stops``, ``frontier``, ``points``, ``x``, ``y``, ``order`` and
        ``tolerance``: the arguments of :func:`scalelib.chartspec.frontier_spec`.
    """
    from scalelib.scaling.allocation import FlopsPerItem, optimal_allocation, stop_paying_data

    require(results, [x, y, "size", "params", "flops_per_cell"], "the allocation chart")
    rows = transformer_rows(ok_rows(results))
    for column, value in fit.group.items():
        rows = rows.filter(pl.col(column) == value)
    sizes = rows.group_by("size").agg(pl.col("params").first(), pl.col("flops_per_cell").first())
    cost = FlopsPerItem.from_points(sizes["params"].cast(float), sizes["flops_per_cell"])
    n_range = (float(sizes["params"].min()), float(sizes["params"].max()))
    d_range = (float(rows[x].min()), float(rows[x].max()))
    if budgets is None:
        budgets = np.geomspace(cost(n_range[0]) * d_range[0], cost(n_range[1]) * d_range[1], 12)
    window = (d_range[0] / PLOT_SPAN, d_range[1] * PLOT_SPAN)

    def shown(d: float) -> bool:
        return bool(np.isfinite(d)) and window[0] <= d <= window[1]

    with np.errstate(over="ignore", divide="ignore"):
        frontier = [optimal_allocation(fit, float(c), cost, n_range=n_range) for c in budgets]
        stops = stop_paying_data(fit, sizes["params"].cast(float).to_numpy(), tolerance)
    grid = np.geomspace(*window, 60)
    named = list(sizes.select("size", "params").iter_rows())
    return {
        "curves": [{x: float(d), y: float(fit.predict(n, d)), "size": size}
                   for size, n in named for d in grid],
        "stops": [{x: float(d), y: float(fit.predict(n, d)), "size": size, "ratio": float(d / n)}
                  for (size, n), d in zip(named, stops) if shown(d)],
        "frontier": [{x: a.d, y: a.loss, "flops": a.flops, "params": a.n, "ratio": a.ratio}
                     for a in frontier if shown(a.d)],
        "points": rows.select(pl.col("size").cast(pl.Utf8), x, y).to_dicts(),
        "x": x, "y": y, "order": table_size_order(rows), "tolerance": tolerance,
    }


def probe_rows(probes: pl.DataFrame, saturation: pl.DataFrame | None = None, *,
               x: str = "n_train_cells", classifier: str = "logreg") -> dict[str, Any]:
    """The rows of a probe chart: macro F1 against D per model size or against P per D, the
    PCA and expression probes as references, the saturation points (against D).

    Parameters
    ----------
    probes
        Probes table (:mod:`scalelib.probes`) of one label.
    saturation
        Saturation points (:func:`scalelib.scaling.saturation.saturation_points`), drawn
        against D only.
    x
        ``n_train_cells`` (D) or ``params`` (P).
    classifier
        ``logreg`` or ``knn``.

    Returns
    -------
    dict
        ``runs``, ``means``, ``pca``, ``references``, ``saturation``, ``x``, ``series``,
        ``order`` and ``classifier``: the arguments of :func:`scalelib.chartspec.probe_spec`.
    """
    require(probes, ["model_family", "classifier", "macro_f1", "n_train_cells", "size"],
            "the probe chart")
    rows = probes.filter(pl.col("classifier") == classifier)
    runs = rows.filter(pl.col("model_family") == TRANSFORMER).with_columns(
        pl.format("D={}", pl.col("n_train_cells")).alias("D"))
    series = "size" if x == "n_train_cells" else "D"
    order = (table_size_order(runs) if series == "size" else
             [f"D={d}" for d in sorted(runs["n_train_cells"].unique().to_list())])
    means = runs.group_by(series, x).agg(pl.col("macro_f1").mean()).sort(series, x)
    pca = rows.filter(pl.col("model_family") == "pca").group_by("n_train_cells").agg(
        pl.col("macro_f1").mean()).sort("n_train_cells")
    references = rows.filter(pl.col("model_family") == "expression").select(
        pl.lit("expression").alias("family"), "macro_f1")
    if pca.height:
        name = pl.lit("PCA") if x == "n_train_cells" else pl.format("PCA (D={})",
                                                                   "n_train_cells")
        references = pl.concat([references, pca.tail(1).select(name.alias("family"),
                                                               "macro_f1")])
    points = None
    if saturation is not None and x == "n_train_cells":
        points = saturation.filter((pl.col("classifier") == classifier)
                                   & (pl.col("model_family") == TRANSFORMER)).select(
            "size", "saturation_d", "saturation_f1", "saturation_low", "saturation_high",
            "best_d").to_dicts()
    return {
        "runs": runs.select("size", "seed", "D", x, "macro_f1").to_dicts(),
        "means": means.to_dicts(),
        "pca": pca.to_dicts() if x == "n_train_cells" else [],
        "references": references.to_dicts(), "saturation": points,
        "x": x, "series": series, "order": order, "classifier": classifier,
    }


def probe_chart_rows(probes: pl.DataFrame, saturation: pl.DataFrame | None = None
                     ) -> dict[str, dict[str, Any]]:
    """The rows of every probe chart of a probes table (:func:`probe_rows` with a ``title``),
    by name: per panel (:func:`probe_panels`) and classifier, against D (when the runs span
    several D) and against P. Names read ``"<panel> <classifier> against D|P"``.

    Parameters
    ----------
    probes
        Probes table of one label.
    saturation
        Saturation points (drawn on the charts against D).
    """
    charts = {}
    for panel, own, points in probe_panels(probes, saturation):
        for classifier in own["classifier"].unique(maintain_order=True).to_list():
            if own["n_train_cells"].drop_nulls().n_unique() > 1:
                charts[f"{panel} {classifier} against D"] = {
                    **probe_rows(own, points, classifier=classifier),
                    "title": f"{panel}: probe F1 against training cells ({classifier})"}
            charts[f"{panel} {classifier} against P"] = {
                **probe_rows(own, x="params", classifier=classifier),
                "title": f"{panel}: probe F1 against parameters ({classifier})"}
    return charts


def probe_panels(probes: pl.DataFrame, saturation: pl.DataFrame | None = None
                 ) -> list[tuple[str, pl.DataFrame, pl.DataFrame | None]]:
    """The probes (and saturation points) of each regime and subsampling strategy.

    The expression baseline, which no strategy draws, goes with every strategy of its regime.
    A panel is named by its regime alone when its regime's runs used one strategy.

    Parameters
    ----------
    probes
        Probes table of one label.
    saturation
        Saturation points, split the same way (None stays None).

    Returns
    -------
    list of (str, polars.DataFrame, polars.DataFrame or None)
        Panel name, its probes and its saturation points.
    """
    panels = []
    for regime in probes["regime"].unique(maintain_order=True).to_list():
        own = probes.filter(pl.col("regime") == regime)
        strategies = own["subsample"].drop_nulls().unique(maintain_order=True).to_list() or [None]
        for strategy in strategies:
            rows = own if strategy is None else own.filter(
                (pl.col("subsample") == strategy) | pl.col("subsample").is_null())
            points = None if saturation is None else saturation.filter(
                (pl.col("regime") == regime)
                & (pl.col("subsample") == strategy if strategy else pl.lit(True)))
            name = regime if len(strategies) == 1 else f"{regime}, {strategy}"
            panels.append((name, rows, points))
    return panels
