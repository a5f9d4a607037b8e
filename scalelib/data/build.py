"""The shared dataset builder: raw counts of drawn cells -> splits, genes, values, tables.

Every source (an ``.h5ad`` file, a 10x directory, the simulator, a SOMA store, the Census)
ends here with the cells it drew, their metadata and their raw counts as :class:`CountRows`
(in memory, or spilled to disk by a streaming source). :func:`assemble_dataset` then

1. splits the cells into train/val/test (see :mod:`scalelib.data.splits`);
2. selects ``n_genes`` highly variable genes with seurat_v3 on the raw counts of the training
   cells only (two streaming passes, :mod:`scalelib.data.hvg`; the genes scanpy would choose),
   kept in HVG-rank order (most variable first, so the first ``k`` genes are exactly the
   top-``k`` selection on the same cells; the transformer has no positional encoding, so the
   order does not change what it learns);
3. normalises each cell to a total of 1e4 over the selected genes and takes ``log1p``, dense
   float32 (a third pass; the arithmetic of scanpy's ``normalize_total`` and ``log1p``, done
   per block because those need the whole matrix in memory; a test compares the two). A
   cell with no counts over the selected genes has no size factor:
   it is dropped from its split (the manifest counts such cells);
4. orders the training cells at random (``train_rank``): the first ``D`` form the nested
   training subset of size ``D``, so every data size shares one gene list, val and test set;
   each further subsample strategy asked for (``rebalanced``, ``geosketch``, see
   :mod:`scalelib.data.subsample`) adds its own order ``train_rank_<strategy>``.

Independent child seeds of ``seed`` drive the draw (done by the source), the split, the
random training order and each other strategy's order. Memory: one block of counts at a time plus the final dense matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import polars as pl

from scalelib.data.counts import CountRows
from scalelib.data.hvg import HVG_COLUMNS, SPAN, selected_genes, seurat_v3
from scalelib.data.splits import (
    SPLITS,
    assign_splits,
    check_fractions,
    child_rngs,
    nested_train_sizes,
    train_rank,
)
from scalelib.data.store import ExpressionDataset
from scalelib.data.subsample import (
    check_strategies,
    checkpoints,
    geosketch_order,
    rank_column,
    rebalanced_order,
    subsample_record,
)
from scalelib.provenance import code_version, package_versions

TARGET_SUM = 1e4
GENE_ID_COLUMNS = ("gene_ids", "gene_id", "feature_id")
RESERVED_OBS = ("cell_id", "split", "train_rank")  # and train_rank_<anything>
NORMALISE_ROWS = 4096  # rows per block of the normalisation pass


def assemble_dataset(
    obs: pd.DataFrame,
    var: pd.DataFrame,
    counts: CountRows,
    n_genes: int,
    *,
    sizes: list[int],
    seed: int,
    stratify: str | None,
    holdout: str | None,
    split_fractions: tuple[float, float, float],
    regime: str,
    provenance: dict,
    manifest_extra: dict | None = None,
    extra_packages: Sequence[str] = (),
    subsample: Sequence[str] = ("random",),
    balance_by: str | None = None,
) -> ExpressionDataset:
    """Build a dataset from the raw counts of the drawn cells (steps in the module docstring).

    Parameters
    ----------
    obs
        Metadata of the drawn cells, in the row order of ``counts``, indexed by cell ID.
    var
        Genes in the column order of ``counts``, indexed by unique gene name, with gene IDs
        in ``gene_ids``, ``gene_id`` or ``feature_id`` (the names when none exists).
    counts
        Raw counts of the drawn cells over all genes.
    n_genes
        Number of highly variable genes kept (the vocabulary size V).
    sizes
        Sorted draw sizes; the largest is the number of cells in ``obs``.
    seed
        Seed of the dataset (its child streams 1 and 2 split and order the cells).
    stratify, holdout
        Split design (see :func:`scalelib.data.splits.assign_splits`).
    split_fractions
        Target train, val and test fractions.
    regime
        Regime label recorded in the manifest.
    provenance
        Source description for the manifest (``source`` names the kind of source).
    manifest_extra
        Further top-level manifest entries (the Census version and obs filter).
    extra_packages
        Further distributions whose versions the manifest records (``tiledbsoma``).
    subsample
        Strategies whose training orders the dataset holds (:mod:`scalelib.data.subsample`);
        the random order is always written, as ``train_rank``.
    balance_by
        Obs column whose groups the ``rebalanced`` order evens out.

    Returns
    -------
    ExpressionDataset
        The dataset in memory (not yet written): values of the kept cells over the selected
        genes in HVG-rank order, obs with split and train_rank, var, manifest and HVG table.
    """
    fractions = check_fractions(split_fractions)
    strategies = check_strategies(subsample, obs, balance_by)
    _, split_rng, rank_rng = child_rngs(seed, 3)
    split, split_info = assign_splits(obs, fractions, split_rng, stratify, holdout)
    hvg = seurat_v3(lambda: counts.blocks(split == "train"), var.index, n_genes)
    genes = selected_genes(hvg)
    values, raw, kept = normalise_selected(counts, var.index.get_indexer(genes))
    dropped = {name: int(((split == name) & ~kept).sum()) for name in SPLITS}
    split = split[kept]
    var_selected = var.drop(columns=list(HVG_COLUMNS), errors="ignore").loc[genes]
    train_sizes = nested_train_sizes(sizes, int((split == "train").sum()))
    sketch_sizes = checkpoints(train_sizes, int((split == "train").sum()))
    orders = {"random": train_rank(split, rank_rng), **strategy_orders(
        strategies, values, split, obs[kept], balance_by, sketch_sizes, seed)}
    manifest = {
        "source": provenance.get("source", "anndata"),
        **(manifest_extra or {}),
        "provenance": provenance,
        "regime": regime,
        "seed": seed,
        "n_genes": n_genes,
        "cells_drawn": sizes,
        "train_sizes": train_sizes,
        "subsample": subsample_record(strategies, balance_by, sketch_sizes),
        "split": split_info,
        "preprocessing": preprocessing_record(
            n_genes, int(split_info["n_cells"]["train"]), gene_id_column(var), dropped),
        "versions": versions(*extra_packages,
                             *(["geosketch"] if "geosketch" in strategies else [])),
    }
    return ExpressionDataset(
        X=values,
        obs=obs_table(obs[kept], split, orders),
        var=var_table(var_selected.join(hvg.loc[genes, list(HVG_COLUMNS)])),
        manifest=manifest,
        hvg=hvg_table(hvg, var),
        counts=raw,
    )


def strategy_orders(strategies: Sequence[str], values: np.ndarray, split: np.ndarray,
                    obs: pd.DataFrame, balance_by: str | None, sketch_sizes: Sequence[int],
                    seed: int) -> dict[str, np.ndarray]:
    """Training order per strategy other than random, -1 outside train.

    Parameters
    ----------
    strategies
        Checked strategy names (see :func:`scalelib.data.subsample.check_strategies`).
    values
        Normalised expression of the kept cells.
    split
        Split label per kept cell.
    obs
        Metadata of the kept cells (for ``balance_by``).
    balance_by
        Column the ``rebalanced`` order evens out.
    sketch_sizes
        Checkpoints of the ``geosketch`` order.
    seed
        Dataset seed; child streams 3 (rebalanced) and 4 (geosketch) draw the orders.
    """
    train = np.flatnonzero(split == "train")
    rebalanced_rng, geosketch_rng = child_rngs(seed, 5)[3:]
    orders = {}
    for strategy in strategies:
        if strategy == "rebalanced":
            labels = obs[balance_by].astype(str).to_numpy()[train]
            ranks = rebalanced_order(labels, rebalanced_rng)
        elif strategy == "geosketch":
            ranks = geosketch_order(values[train], sketch_sizes, geosketch_rng)
        else:
            continue
        orders[strategy] = np.full(len(split), -1, dtype=np.int64)
        orders[strategy][train] = ranks
    return orders


def normalise_selected(counts: CountRows,
                       genes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log1p(1e4 * x / total)`` over the selected genes, for cells with counts there.

    Parameters
    ----------
    counts
        Raw counts of all cells over all genes.
    genes
        Column positions of the selected genes, in vocabulary order.

    Returns
    -------
    values, raw, kept
        Dense float32 values of the kept cells, their raw int32 counts over the selected genes
        (row sums: the library sizes of the normalisation) and the boolean mask of kept cells.
    """
    values = np.empty((counts.n_cells, len(genes)), dtype=np.float32)  # pages touched on use
    raw = np.empty((counts.n_cells, len(genes)), dtype=np.int32)
    kept = np.zeros(counts.n_cells, dtype=bool)
    row = filled = 0
    for block in counts.blocks(max_rows=NORMALISE_ROWS):
        selected = block[:, genes].toarray().astype(np.float64)
        totals = selected.sum(axis=1)
        has_counts = totals > 0
        n = int(has_counts.sum())
        values[filled:filled + n] = np.log1p(
            selected[has_counts] * (TARGET_SUM / totals[has_counts, None]))
        raw[filled:filled + n] = selected[has_counts]
        kept[row:row + block.shape[0]] = has_counts
        row += block.shape[0]
        filled += n
    return values[:filled], raw[:filled], kept


def versions(*extra: str) -> dict[str, str]:
    """Versions of the code and packages that shape a dataset's values.

    Parameters
    ----------
    *extra
        Further distribution names to record beside numpy, scipy, scikit-misc, anndata and
        scanpy.
    """
    return {"scalelib": code_version(),
            **package_versions("numpy", "scipy", "scikit-misc", "anndata", "scanpy", *extra)}


def plain(provenance: dict) -> dict:
    """A copy with numpy scalars (as read back from .h5ad) turned into Python values.

    Parameters
    ----------
    provenance
        A flat dictionary; nested values are copied as they are.
    """
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in provenance.items()}


def preprocessing_record(n_genes: int, n_hvg_cells: int, id_column: str,
                         dropped: dict[str, int]) -> dict:
    """How the values were made, for the manifest.

    Parameters
    ----------
    n_genes
        Genes selected (V).
    n_hvg_cells
        Training cells the HVG statistics were computed on.
    id_column
        The var column of gene IDs (:func:`gene_id_column`).
    dropped
        Cells dropped per split for having no counts over the selected genes.
    """
    return {
        "steps": [
            "validate raw counts", "draw cells", "split", "highly_variable_genes",
            "subset to selected genes", "normalize_total", "log1p", "train_rank",
        ],
        "highly_variable_genes": {
            "function": "scalelib.data.hvg.seurat_v3",
            "equivalent": "scanpy.pp.highly_variable_genes(flavor='seurat_v3')",
            "flavor": "seurat_v3", "n_top_genes": n_genes, "span": SPAN,
            "input": "raw counts of the training cells", "n_cells": n_hvg_cells,
        },
        "gene_order": "hvg_rank",
        "gene_id_column": id_column,
        "normalize_total": {"target_sum": TARGET_SUM, "over": "selected genes"},
        "log1p": "natural logarithm of 1 + x",
        "dtype": "float32",
        "dropped_zero_count_cells": dropped,
    }


def gene_id_column(var: pd.DataFrame) -> str:
    """The var column holding gene IDs (``"var_names"`` when there is none).

    Parameters
    ----------
    var
        Gene table; the first of ``GENE_ID_COLUMNS`` it has is returned.
    """
    return next((c for c in GENE_ID_COLUMNS if c in var.columns), "var_names")


def _gene_ids(var: pd.DataFrame) -> np.ndarray:
    column = gene_id_column(var)
    return np.asarray(var.index if column == "var_names" else var[column], dtype=str)


def hvg_table(hvg: pd.DataFrame, var: pd.DataFrame) -> pl.DataFrame:
    """seurat_v3 statistics of every gene detected in the training cells (``hvg.parquet``).

    Parameters
    ----------
    hvg
        :func:`scalelib.data.hvg.seurat_v3` output over all genes.
    var
        All genes, in the same order as ``hvg`` (for the gene IDs).

    Returns
    -------
    polars.DataFrame
        gene_name, gene_id, means, variances, variances_norm and selected, for genes with
        ``n_cells_detected > 0``.
    """
    detected = (hvg["n_cells_detected"] > 0).to_numpy()
    return pl.DataFrame({
        "gene_name": np.asarray(hvg.index[detected], dtype=str),
        "gene_id": _gene_ids(var)[detected],
        "means": hvg["means"].to_numpy()[detected],
        "variances": hvg["variances"].to_numpy()[detected],
        "variances_norm": hvg["variances_norm"].to_numpy()[detected],
        "selected": hvg["highly_variable"].to_numpy()[detected],
    })


def var_table(var: pd.DataFrame) -> pl.DataFrame:
    """``gene_id``, ``gene_name`` and the HVG statistics that ``var`` has.

    Parameters
    ----------
    var
        Selected genes, indexed by name, optionally with the columns of ``HVG_COLUMNS``
        (``highly_variable_rank`` is written as Int64, the others as Float64).
    """
    table = pl.DataFrame({
        "gene_id": _gene_ids(var),
        "gene_name": np.asarray(var.index, dtype=str),
    })
    for column in HVG_COLUMNS:
        if column in var.columns:
            dtype = pl.Int64 if column == "highly_variable_rank" else pl.Float64
            table = table.with_columns(pl.Series(column, var[column].to_numpy()).cast(dtype))
    return table


def obs_table(obs: pd.DataFrame, split: np.ndarray,
              rank: np.ndarray | dict[str, np.ndarray]) -> pl.DataFrame:
    """``cell_id``, ``split``, ``train_rank`` (and further orders), then the source metadata.

    Float columns stay floats; every other column (labels, integer IDs, flags) becomes a
    string column with nulls for missing values. Source columns named like the reserved ones
    (or starting with ``train_rank``) are kept as ``source_<name>``.

    Parameters
    ----------
    obs
        Metadata of the kept cells, indexed by cell ID.
    split
        Split label per cell.
    rank
        Training rank per cell (:func:`scalelib.data.splits.train_rank`), or one per
        subsample strategy (``{"random": ..., "geosketch": ...}``).
    """
    ranks = rank if isinstance(rank, dict) else {"random": rank}
    columns = [
        pl.Series("cell_id", np.asarray(obs.index, dtype=str)),
        pl.Series("split", split.astype(str)),
        *(pl.Series(rank_column(name), values) for name, values in ranks.items()),
    ]
    for name, values in obs.items():
        reserved = name in RESERVED_OBS or str(name).startswith("train_rank")
        name = f"source_{name}" if reserved else str(name)
        if pd.api.types.is_float_dtype(values.dtype):
            columns.append(pl.Series(name, values.to_numpy(dtype=np.float64)))
        else:
            columns.append(pl.from_pandas(values.astype("string")).rename(name))
    return pl.DataFrame(columns)
