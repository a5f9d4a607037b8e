"""In-memory entry points: raw counts in an AnnData (or simulated) -> :class:`ExpressionDataset`.

:func:`build_dataset` validates the counts (finite non-negative integers, unique gene names
and cell IDs), draws ``max(n_cells)`` cells at random (all cells when ``n_cells`` is None),
kept in source order, and hands them to :func:`scalelib.data.build.assemble_dataset`, which
splits, selects genes (seurat_v3 on the training cells), normalises and orders them; the
Census and SOMA stores go through the same builder (:mod:`scalelib.data.census`).
:func:`simulate_dataset` does the same on simulated counts; :func:`dataset_from_anndata` wraps
expression that is already normalised and split. :func:`candidate_genes` returns the
per-gene HVG statistics of a dataset for mean-variance plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import polars as pl
from scipy import sparse

from scalelib.config import Regime, get_regime
from scalelib.data.build import (
    assemble_dataset,
    gene_id_column,
    obs_table,
    plain,
    var_table,
    versions,
)
from scalelib.data.counts import CsrRows
from scalelib.data.simulate import simulate_counts
from scalelib.data.sources import check_counts, check_names
from scalelib.data.splits import (
    SPLITS,
    cell_sizes,
    child_rngs,
    draw_positions,
    split_summary,
    train_rank,
)
from scalelib.data.store import HVG_TABLE_COLUMNS, ExpressionDataset, is_dataset_dir, load_dataset
from scalelib.data.subsample import check_strategies
from scalelib.errors import ScalelibError
from scalelib.locks import file_lock


def build_dataset(
    counts: ad.AnnData,
    n_genes: int,
    *,
    n_cells: int | Sequence[int] | None = None,
    seed: int = 0,
    stratify: str | None = "cell_type",
    holdout: str | None = None,
    split_fractions: Sequence[float] = (0.9, 0.05, 0.05),
    regime: str = "custom",
    provenance: dict | None = None,
    subsample: Sequence[str] = ("random",),
    balance_by: str | None = None,
) -> ExpressionDataset:
    """Build a training dataset from raw UMI counts held in memory.

    Parameters
    ----------
    counts
        Raw counts in ``X`` (cells x genes), e.g. from :func:`read_counts`; obs columns are
        kept as cell metadata, gene IDs are taken from var ``gene_ids``, ``gene_id`` or
        ``feature_id`` (the gene names when none exists).
    n_genes
        Number of highly variable genes kept (the vocabulary size V).
    n_cells
        Cells to draw. A list draws its largest value once; the manifest then records, for
        each value ``n``, the nested training size ``round(n * n_train / max(n_cells))``
        (``round(0.9 n)`` with the default split). None draws every cell.
    seed
        Seed of the draw, the split and the training order.
    stratify
        Obs column whose label proportions every split keeps; when the column is absent the
        split is unstratified (the manifest says so).
    holdout
        Obs column (donor, dataset_id, ...) whose groups are held out whole: val and test
        cells come from groups never seen in training. Takes precedence over ``stratify``.
    split_fractions
        Target train, val and test fractions.
    regime
        Regime label recorded in the manifest.
    provenance
        Source description for the manifest; defaults to ``counts.uns["scalelib"]``.
    subsample
        Strategies whose nested training orders the dataset holds: ``random`` (always
        written), ``rebalanced``, ``geosketch`` (see :mod:`scalelib.data.subsample`).
    balance_by
        Obs column whose groups ``rebalanced`` evens out (default: ``stratify``).
    """
    balance_by = balance_by or stratify
    check_strategies(subsample, counts.obs, balance_by)
    check_counts(counts.X, "counts X")
    check_names(counts, "counts")
    sizes = cell_sizes(n_cells, counts.n_obs)
    drawn = draw_positions(counts.n_obs, sizes[-1], child_rngs(seed, 3)[0])
    matrix = sparse.csr_matrix(counts.X)
    rows = CsrRows.from_matrix(matrix if len(drawn) == counts.n_obs else matrix[drawn])
    return assemble_dataset(
        counts.obs.iloc[drawn].copy(), counts.var, rows, n_genes, sizes=sizes, seed=seed,
        stratify=stratify, holdout=holdout, split_fractions=tuple(split_fractions),
        regime=regime,
        provenance=plain(provenance or counts.uns.get("scalelib") or {"source": "anndata"}),
        subsample=subsample, balance_by=balance_by if "rebalanced" in subsample else None,
    )


def simulate_dataset(
    regime: Regime,
    *,
    seed: int = 0,
    n_total_genes: int = 2000,
    n_cells: int | Sequence[int] | None = None,
    n_cell_types: int = 8,
    n_programs: int = 64,
    n_donors: int = 8,
    stratify: str | None = "cell_type",
    holdout: str | None = None,
    subsample: Sequence[str] = ("random",),
    balance_by: str | None = None,
) -> ExpressionDataset:
    """Simulate raw counts for a regime and preprocess them exactly as real data.

    Parameters
    ----------
    regime
        Vocabulary size (``n_genes``) and cells drawn (``n_cells``).
    seed
        Seed of the simulation and of the dataset build.
    n_total_genes
        Genes simulated before highly-variable-gene selection.
    n_cells
        Cells to simulate, or a list of nested data sizes; defaults to ``regime.n_cells``.
    n_cell_types, n_programs, n_donors
        Structure of the simulation (see :func:`simulate_counts`).
    stratify, holdout
        Split design (see :func:`build_dataset`), e.g. ``holdout="donor"``.
    subsample, balance_by
        Strategies of the nested training orders (see :func:`build_dataset`).
    """
    sizes = cell_sizes(regime.n_cells if n_cells is None else n_cells, None)
    counts = simulate_counts(
        sizes[-1], n_total_genes, n_cell_types=n_cell_types, n_programs=n_programs,
        n_donors=n_donors, seed=seed,
    )
    return build_dataset(
        counts, regime.n_genes, n_cells=sizes, seed=seed, stratify=stratify, holdout=holdout,
        regime=regime.name, subsample=subsample, balance_by=balance_by,
    )


def dataset_from_anndata(
    adata: ad.AnnData, split_key: str = "split", regime: str = "custom", *, seed: int = 0
) -> ExpressionDataset:
    """Wrap normalised log1p expression that already carries a train/val/test split.

    Parameters
    ----------
    adata
        Cells x genes of normalised, log1p-transformed expression in ``X`` (not raw counts:
        use :func:`build_dataset` for those); obs columns are kept as metadata and var
        ``means``, ``variances``, ``variances_norm``, ``highly_variable_rank`` when present.
    split_key
        Obs column with ``"train"``, ``"val"`` and ``"test"`` labels.
    regime
        Regime label recorded in the manifest.
    seed
        Seed of the random training order (``train_rank``).
    """
    split = _given_split(adata.obs, split_key)
    values = _log_expression(adata.X)
    check_names(adata, "adata")
    provenance = plain(adata.uns.get("scalelib") or {"source": "anndata"})
    manifest = {
        "source": provenance.get("source", "anndata"),
        "provenance": provenance,
        "regime": regime,
        "seed": seed,
        "n_genes": adata.n_vars,
        "cells_drawn": [adata.n_obs],
        "train_sizes": [int((split == "train").sum())],
        "split": {"method": "given", "key": split_key, **split_summary(split)},
        "preprocessing": {"steps": ["normalised log1p expression supplied by the user"],
                          "gene_id_column": gene_id_column(adata.var), "dtype": "float32"},
        "versions": versions(),
    }
    return ExpressionDataset(
        X=values,
        obs=obs_table(adata.obs.drop(columns=[split_key]), split,
                       train_rank(split, child_rngs(seed, 1)[0])),
        var=var_table(adata.var),
        manifest=manifest,
    )


def candidate_genes(dataset: ExpressionDataset) -> pl.DataFrame:
    """HVG statistics of every gene detected in the training cells, with a ``selected`` flag.

    One row per candidate gene: ``gene_name``, ``gene_id``, ``means``, ``variances``,
    ``variances_norm`` (seurat_v3, on raw counts of the training cells) and whether it is in
    the vocabulary. Read from ``hvg.parquet``; datasets written before that file existed
    carry the table in their manifest (``hvg_candidates``, without gene IDs).
    """
    if dataset.hvg is not None:
        return dataset.hvg.select(HVG_TABLE_COLUMNS)
    table = dataset.manifest.get("hvg_candidates")
    if not table:
        raise ScalelibError(
            "this dataset carries no HVG statistics (it was not built from raw counts); "
            "rebuild it with `scalelib data build` or build_dataset"
        )
    return pl.DataFrame(table).with_columns(
        gene_id=pl.lit(None, dtype=pl.String),
        selected=pl.col("gene_name").is_in(dataset.genes),
    ).select(HVG_TABLE_COLUMNS)


def _given_split(obs: pd.DataFrame, split_key: str) -> np.ndarray:
    if split_key not in obs.columns:
        raise ScalelibError(
            f"obs has no column {split_key!r}; add one with train, val and test labels "
            "or pass split_key"
        )
    split = obs[split_key].astype(str).to_numpy().astype(object)
    unknown = sorted(set(split) - set(SPLITS))
    if unknown:
        raise ScalelibError(f"split column {split_key!r} holds {unknown}; use train, val, test")
    missing = [name for name in SPLITS if not (split == name).any()]
    if missing:
        raise ScalelibError(f"split column {split_key!r} has no {' or '.join(missing)} cells; "
                            "training needs train, val and test cells")
    return split


def _log_expression(matrix: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Dense float32 values, refused when they look like raw counts or are not finite."""
    values = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
    values = values.astype(np.float32, copy=False)
    if not np.isfinite(values).all() or values.min() < 0:
        raise ScalelibError(
            "X must hold normalised log1p expression (finite, non-negative values)"
        )
    if values.max() > 1 and np.array_equal(values, np.round(values)):
        raise ScalelibError(
            "X holds integers, like raw counts; build the dataset with build_dataset, which "
            "selects genes and normalises"
        )
    return values


def load_or_simulate(regime: str, preset: str, datasets_dir: str | Path,
                     seed: int = 0) -> ExpressionDataset:
    """Open ``datasets_dir/<regime>``, or simulate the regime of ``preset`` and write it there.

    The demo, the CLI and both notebooks share datasets through this layout and seed.

    Parameters
    ----------
    regime
        Regime name (``"rich"``, ``"limited"``); also the folder name under ``datasets_dir``.
    preset
        ``"demo"``, ``"smoke"`` or ``"paper"`` (genes and cells of the regime, see
        :func:`scalelib.config.get_regime`).
    datasets_dir
        Folder holding one dataset directory per regime.
    seed
        Seed of the simulation and of the dataset build (used only when written here).
    """
    path = Path(datasets_dir) / regime
    with file_lock(Path(datasets_dir) / f".{regime}.lock"):  # one writer among concurrent sweeps
        if not is_dataset_dir(path):
            simulate_dataset(get_regime(regime, preset), seed=seed).write(path, overwrite=True)
    return load_dataset(path)
