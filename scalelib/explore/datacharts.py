"""Altair charts of one dataset, from the frames of :mod:`scalelib.explore.dataview`.

Builders in the style of :mod:`scalelib.plots` (a frame in, a chart out), for the data
notebook. They could move into :mod:`scalelib.plots` if the report wants them too.
"""

from __future__ import annotations

import altair as alt
import polars as pl

SPLIT_ORDER = ["train", "val", "test"]


def mean_variance_chart(hvg: pl.DataFrame, *, width: int = 420, height: int = 320) -> alt.Chart:
    """Variance against mean of raw counts per candidate gene (log-log), selected genes coloured.

    Genes with a zero mean or variance are left out (no place on a log axis).

    Parameters
    ----------
    hvg
        :func:`~scalelib.explore.dataview.hvg_table`'s frame (gene_name, means, variances,
        variances_norm, selected, rank).
    width, height
        Chart size in pixels.
    """
    data = hvg.filter((pl.col("means") > 0) & (pl.col("variances") > 0)).with_columns(
        pl.when(pl.col("selected")).then(pl.lit("selected (vocabulary)"))
        .otherwise(pl.lit("not selected")).alias("gene_set"))  # no space: a Vega signal name
    log = alt.Scale(type="log", zero=False, nice=False)
    return alt.Chart(data).mark_circle(size=14, opacity=0.6).encode(
        x=alt.X("means:Q", title="Mean raw count (training cells, log)", scale=log,
                axis=alt.Axis(format="~g")),
        y=alt.Y("variances:Q", title="Variance of raw counts (log)", scale=log,
                axis=alt.Axis(format="~g")),
        color=alt.Color("gene_set:N", title="Highly variable genes",
                        sort=["selected (vocabulary)", "not selected"]),
        tooltip=["gene_name", "means", "variances", "variances_norm", "rank"],
    ).properties(title=alt.Title("Mean-variance of candidate genes (seurat_v3)",
                                 subtitle=f"{int(data['selected'].sum())} of {data.height} "
                                          "detected genes selected"),
                 width=width, height=height)


def value_histogram_chart(histogram: pl.DataFrame, *, width: int = 420,
                          height: int = 280) -> alt.Chart:
    """Distribution of non-zero log1p values; the share of zeros in the subtitle.

    Parameters
    ----------
    histogram
        :func:`~scalelib.explore.dataview.value_histogram`'s frame (start, end, count, share;
        the zeros as the row with ``end == 0``).
    width, height
        Chart size in pixels.
    """
    zeros = histogram.filter(pl.col("end") == 0)
    share = float(zeros["share"][0]) if zeros.height else 0.0
    bars = histogram.filter(pl.col("end") > 0)
    return alt.Chart(bars).mark_bar().encode(
        x=alt.X("start:Q", bin="binned", title="log1p(normalised expression), non-zero values"),
        x2="end:Q",
        y=alt.Y("count:Q", title="Values"),
        tooltip=["start", "end", "count"],
    ).properties(title=alt.Title("Expression values", subtitle=f"{share:.1%} of values are 0"),
                 width=width, height=height)


def sparsity_chart(genes: pl.DataFrame, *, width: int = 420, height: int = 280) -> alt.Chart:
    """Fraction of zeros against mean log1p expression, one point per vocabulary gene.

    Parameters
    ----------
    genes
        :func:`~scalelib.explore.dataview.gene_summary`'s frame (gene_name, mean, variance,
        fraction_zero).
    width, height
        Chart size in pixels.
    """
    return alt.Chart(genes).mark_circle(size=20, opacity=0.7).encode(
        x=alt.X("mean:Q", title="Mean log1p expression"),
        y=alt.Y("fraction_zero:Q", title="Fraction of cells with zero",
                scale=alt.Scale(domain=[0, 1])),
        tooltip=["gene_name", "mean", "variance", "fraction_zero"],
    ).properties(title="Sparsity per gene", width=width, height=height)


def cells_chart(cells: pl.DataFrame, *, width: int = 420, height: int = 280) -> alt.Chart:
    """Histogram of genes detected per cell, by split.

    Parameters
    ----------
    cells
        :func:`~scalelib.explore.dataview.cell_summary`'s frame (split, genes_detected, ...).
    width, height
        Chart size in pixels.
    """
    return alt.Chart(cells).mark_bar(opacity=0.7).encode(
        x=alt.X("genes_detected:Q", bin=alt.Bin(maxbins=40), title="Genes detected per cell"),
        y=alt.Y("count():Q", title="Cells", stack=None),
        color=alt.Color("split:N", sort=SPLIT_ORDER, title="Split"),
    ).properties(title="Genes detected per cell", width=width, height=height)


def composition_chart(table: pl.DataFrame, *, label: str = "cell type", width: int = 420,
                      height: int = 220) -> alt.Chart:
    """Stacked shares of each label within each split.

    Parameters
    ----------
    table
        :func:`~scalelib.explore.dataview.composition`'s frame (split, label, cells, share).
    label
        What the labels are, for the titles (e.g. ``"cell type"``).
    width, height
        Chart size in pixels.
    """
    return alt.Chart(table).mark_bar().encode(
        y=alt.Y("split:N", sort=SPLIT_ORDER, title="Split"),
        x=alt.X("share:Q", stack="normalize", title=f"Share of cells by {label}",
                axis=alt.Axis(format="%")),
        color=alt.Color("label:N", title=label.capitalize()),
        tooltip=["split", "label", "cells", alt.Tooltip("share:Q", format=".1%")],
    ).properties(title=f"Composition by {label}", width=width, height=height)


def split_chart(splits: pl.DataFrame, *, width: int = 300, height: int = 160) -> alt.Chart:
    """Cells per split.

    Parameters
    ----------
    splits
        :func:`~scalelib.explore.dataview.split_table`'s frame (split, cells, fraction).
    width, height
        Chart size in pixels.
    """
    return alt.Chart(splits).mark_bar().encode(
        x=alt.X("cells:Q", title="Cells"),
        y=alt.Y("split:N", sort=SPLIT_ORDER, title="Split"),
        tooltip=["split", "cells", "fraction"],
    ).properties(title="Split sizes", width=width, height=height)


def embedding_chart(points: pl.DataFrame, *, method: str = "pca", label: str = "cell type",
                    width: int = 420, height: int = 380) -> alt.Chart:
    """Cells in 2-D (PCA or UMAP), coloured by label.

    Parameters
    ----------
    points
        :func:`~scalelib.explore.dataview.embedding`'s frame (x, y, split, label).
    method
        ``"pca"`` or ``"umap"``, for the axis titles and chart title.
    label
        What the labels are, for the titles (e.g. ``"cell type"``).
    width, height
        Chart size in pixels.
    """
    names = {"pca": ("PC 1", "PC 2"), "umap": ("UMAP 1", "UMAP 2")}.get(method, ("x", "y"))
    return alt.Chart(points).mark_circle(size=12, opacity=0.7).encode(
        x=alt.X("x:Q", title=names[0], axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("y:Q", title=names[1], axis=alt.Axis(labels=False, ticks=False)),
        color=alt.Color("label:N", title=label.capitalize()),
        tooltip=["label", "split"],
    ).properties(title=f"{method.upper()} of {points.height} cells, coloured by {label}",
                 width=width, height=height)
