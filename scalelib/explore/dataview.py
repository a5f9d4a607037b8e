"""What the data notebook computes about one dataset: tables in, polars frames out.

The notebook (``notebooks/data.py``) shows the highly-variable-gene selection, expression
distributions and sparsity, cell-type composition per split and a 2-D embedding; the charts are
built by :mod:`scalelib.explore.datacharts`. Large datasets are subsampled (seeded) before any
per-cell summary or embedding.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from scalelib.data.store import SPLITS, ExpressionDataset
from scalelib.errors import ScalelibError

EMBEDDINGS = ("pca", "umap")
MAX_LABELS = 60


def overview(dataset: ExpressionDataset) -> dict[str, object]:
    """Headline facts: regime, source, genes, cells per split, seed, fingerprint, path.

    Parameters
    ----------
    dataset
        A loaded dataset.
    """
    return {
        "regime": dataset.regime,
        "source": dataset.source,
        "genes (V)": dataset.n_genes,
        **{f"{split} cells": dataset.n_cells(split) for split in SPLITS},
        "seed": dataset.manifest.get("seed"),
        "fingerprint": dataset.fingerprint,
        "path": dataset.manifest.get("path", "in memory"),
    }


def split_table(dataset: ExpressionDataset) -> pl.DataFrame:
    """Cells per split with their fraction of all cells (rounded to 4 places).

    Parameters
    ----------
    dataset
        A loaded dataset.

    Returns
    -------
    polars.DataFrame
        Columns split, cells and fraction, one row per split in train, val, test order.
    """
    total = dataset.obs.height
    return pl.DataFrame({
        "split": list(SPLITS),
        "cells": [dataset.n_cells(split) for split in SPLITS],
        "fraction": [round(dataset.n_cells(split) / total, 4) for split in SPLITS],
    })


def hvg_table(dataset: ExpressionDataset) -> pl.DataFrame:
    """HVG statistics (seurat_v3 on raw training counts) of every candidate gene.

    Columns gene_name, means, variances, variances_norm, selected (in the vocabulary) and
    rank (HVG rank of selected genes, null otherwise). Falls back to the vocabulary's own
    statistics (var.parquet) when the manifest has no candidate table.

    Parameters
    ----------
    dataset
        A loaded dataset.

    Returns
    -------
    polars.DataFrame
        One row per gene, most variable (``variances_norm``) first.

    Raises
    ------
    ScalelibError
        The dataset records no HVG statistics at all.
    """
    from scalelib.data.preprocess import candidate_genes

    try:
        table = candidate_genes(dataset)
    except ScalelibError:
        needed = {"means", "variances", "variances_norm"}
        if not needed <= set(dataset.var.columns):
            raise ScalelibError("this dataset records no HVG statistics (neither candidate "
                                "genes in its manifest nor means/variances in var.parquet); "
                                "rebuild it with build_dataset") from None
        table = dataset.var.select("gene_name", *sorted(needed)).with_columns(
            selected=pl.lit(True))
    ranks = pl.DataFrame({"gene_name": dataset.genes, "rank": range(dataset.n_genes)})
    return table.join(ranks, on="gene_name", how="left").sort("variances_norm",
                                                               descending=True)


def sample_rows(dataset: ExpressionDataset, max_cells: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of at most ``max_cells`` cells drawn without replacement (seeded).

    Parameters
    ----------
    dataset
        A loaded dataset.
    max_cells
        Largest sample; every row when the dataset has no more cells.
    seed
        Seed of the draw.
    """
    n = dataset.obs.height
    if n <= max_cells:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))


def gene_summary(dataset: ExpressionDataset, max_cells: int = 5000, seed: int = 0) -> pl.DataFrame:
    """Per gene over (a sample of) cells: mean and variance of log1p expression, fraction zero.

    Parameters
    ----------
    dataset
        A loaded dataset.
    max_cells
        At most this many cells are used (a seeded sample when the dataset has more).
    seed
        Seed of the sample.

    Returns
    -------
    polars.DataFrame
        Columns gene_name, mean, variance (population, ``ddof=0``) and fraction_zero, one row
        per vocabulary gene.
    """
    values = np.asarray(dataset.X[sample_rows(dataset, max_cells, seed)], dtype=np.float32)
    return pl.DataFrame({
        "gene_name": dataset.genes,
        "mean": values.mean(axis=0).astype(float),
        "variance": values.var(axis=0).astype(float),
        "fraction_zero": (values == 0).mean(axis=0).astype(float),
    })


def cell_summary(dataset: ExpressionDataset, max_cells: int = 5000, seed: int = 0) -> pl.DataFrame:
    """Per cell (a sample): genes detected, fraction zero, summed log1p expression, split.

    Parameters
    ----------
    dataset
        A loaded dataset.
    max_cells
        At most this many cells are used (a seeded sample when the dataset has more).
    seed
        Seed of the sample.

    Returns
    -------
    polars.DataFrame
        Columns split, genes_detected, fraction_zero and total_log1p, one row per sampled cell.
    """
    rows = sample_rows(dataset, max_cells, seed)
    values = np.asarray(dataset.X[rows], dtype=np.float32)
    return pl.DataFrame({
        "split": dataset.obs["split"].to_numpy()[rows],
        "genes_detected": (values > 0).sum(axis=1).astype(int),
        "fraction_zero": (values == 0).mean(axis=1).astype(float),
        "total_log1p": values.sum(axis=1).astype(float),
    })


def value_histogram(dataset: ExpressionDataset, bins: int = 40, max_cells: int = 5000,
                    seed: int = 0) -> pl.DataFrame:
    """Histogram of the non-zero log1p values (a sample of cells) and the share of zeros.

    Returns columns start, end, count and share (of all values, zeros included); the zeros
    are one extra row with ``start == end == 0``.

    Parameters
    ----------
    dataset
        A loaded dataset.
    bins
        Equal-width bins over the range of the non-zero values.
    max_cells
        At most this many cells are used (a seeded sample when the dataset has more).
    seed
        Seed of the sample.
    """
    values = np.asarray(dataset.X[sample_rows(dataset, max_cells, seed)], dtype=np.float32)
    flat = values.ravel()
    nonzero = flat[flat > 0]
    counts, edges = (np.histogram(nonzero, bins=bins) if nonzero.size
                     else (np.zeros(0, int), np.zeros(1)))
    zeros = int(flat.size - nonzero.size)
    return pl.DataFrame({
        "start": [0.0, *edges[:-1].astype(float)],
        "end": [0.0, *edges[1:].astype(float)],
        "count": [zeros, *counts.astype(int)],
    }).with_columns(share=pl.col("count") / max(flat.size, 1))


def label_columns(dataset: ExpressionDataset) -> list[str]:
    """Text columns of obs with 2 to ``MAX_LABELS`` distinct values (cell type first).

    ``cell_id``, ``split`` and the training orders (``train_rank...``) are never listed; the
    others follow by name.

    Parameters
    ----------
    dataset
        A loaded dataset.
    """
    reserved = {"cell_id", "split"}
    columns = [name for name, dtype in dataset.obs.schema.items()
               if name not in reserved and not name.startswith("train_rank") and dtype == pl.Utf8
               and 2 <= dataset.obs[name].n_unique() <= MAX_LABELS]
    return sorted(columns, key=lambda name: (name != "cell_type", name))


def composition(dataset: ExpressionDataset, column: str = "cell_type") -> pl.DataFrame:
    """Cells per label and split, with each label's share of its split.

    Parameters
    ----------
    dataset
        A loaded dataset.
    column
        obs column of the labels (missing values count as ``"unknown"``).

    Returns
    -------
    polars.DataFrame
        Columns split, label, cells and share, by split, then most cells first.

    Raises
    ------
    ScalelibError
        obs has no column ``column``.
    """
    if column not in dataset.obs.columns:
        raise ScalelibError(f"obs has no column {column!r}; choose one of "
                            f"{', '.join(label_columns(dataset)) or 'none'}")
    counts = (dataset.obs.group_by("split", column).len("cells")
              .with_columns(pl.col(column).cast(pl.Utf8).fill_null("unknown").alias("label")))
    return (counts.with_columns(share=pl.col("cells") / pl.col("cells").sum().over("split"))
            .select("split", "label", "cells", "share").sort("split", "cells",
                                                             descending=[False, True]))


def embedding(dataset: ExpressionDataset, method: str = "pca", *, max_cells: int = 2000,
              n_pcs: int = 20, n_neighbors: int = 15, seed: int = 0,
              color: str | None = "cell_type") -> pl.DataFrame:
    """A 2-D embedding of (a sample of) cells with scanpy: PCA, or PCA then a kNN graph and UMAP.

    Parameters
    ----------
    dataset
        The dataset (its normalised log1p values are embedded as they are).
    method
        ``"pca"`` (first two principal components; fast) or ``"umap"`` (``sc.pp.pca``,
        ``sc.pp.neighbors``, ``sc.tl.umap``; the first call compiles numba code, ~30 s).
    max_cells
        At most this many cells are embedded (a seeded sample when the dataset has more).
    n_pcs
        Principal components computed (capped at ``cells - 1`` and ``genes - 1``, at least 2);
        the UMAP graph is built on all of them.
    n_neighbors
        Neighbours of the kNN graph for UMAP (capped at ``cells - 1``).
    seed
        Seed of the sample and random state of PCA, the graph and UMAP.
    color
        Obs column copied as ``label`` (missing values as ``"unknown"``; ``"all"`` for every
        cell when None or absent).

    Returns
    -------
    polars.DataFrame
        Columns x, y, split and label.
    """
    import anndata as ad
    import scanpy as sc

    if method not in EMBEDDINGS:
        raise ScalelibError(f"unknown embedding {method!r}; choose one of {', '.join(EMBEDDINGS)}")
    rows = sample_rows(dataset, max_cells, seed)
    adata = ad.AnnData(X=np.asarray(dataset.X[rows], dtype=np.float32))
    n_comps = max(2, min(n_pcs, adata.n_obs - 1, adata.n_vars - 1))
    sc.pp.pca(adata, n_comps=n_comps, random_state=seed)
    if method == "umap":
        sc.pp.neighbors(adata, n_neighbors=min(n_neighbors, adata.n_obs - 1), n_pcs=n_comps,
                        random_state=seed)
        sc.tl.umap(adata, random_state=seed)
        coordinates = adata.obsm["X_umap"]
    else:
        coordinates = adata.obsm["X_pca"][:, :2]
    labels = (dataset.obs[color].cast(pl.Utf8).fill_null("unknown").to_numpy()[rows]
              if color and color in dataset.obs.columns else np.full(len(rows), "all"))
    return pl.DataFrame({
        "x": coordinates[:, 0].astype(float), "y": coordinates[:, 1].astype(float),
        "split": dataset.obs["split"].to_numpy()[rows], "label": labels,
    })
