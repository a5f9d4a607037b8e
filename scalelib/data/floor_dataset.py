"""Datasets whose masked-reconstruction floor is known, from the mixture of :mod:`.mixture`.

:func:`mixture_dataset` samples cells from a :class:`GaussianMixture` and writes their values
straight into the store's ``X`` as normalised log expression: the mixture lives in that space,
so there are no raw counts, no gene selection and no normalisation step (the manifest says so
under ``preprocessing``). Cells are split 90/5/5 stratified by type and ordered as every
dataset is (:mod:`scalelib.data.splits`). The manifest then records, under ``bayes_floor``,
what the Bayes-optimal predictor scores on the exact task the models are scored on: the
validation and test cells under the fixed masks of :mod:`scalelib.heldout` (the mask rate and
seed of :class:`scalelib.config.TrainConfig`, recorded beside them), and the population value
from fresh cells and masks, each as an MSE (the floor of ``c``) and bits per masked gene,
with Monte Carlo standard errors.

:func:`mixture_from_data` fits the mixture to a built dataset directory or to raw counts
(an ``.h5ad`` file or a 10x directory, built in memory first with the usual gene selection
and normalisation), so that its types, programs and noise are those of real cells;
:func:`mixture_from_simulator` fits it to cells of the count simulator
(:mod:`scalelib.data.simulate`, built as every dataset is), which needs no data on disk and
keeps what makes log expression hard to model: genes silent in most types, markers,
heteroscedastic noise. (A mixture drawn from simple priors, with every gene expressed at
similar levels, was tried first: the demo ladder's small transformers stayed at the
per-gene-mean baseline on it for over a thousand steps.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from scalelib.config import Regime, TrainConfig
from scalelib.data.build import obs_table, versions
from scalelib.data.mixture import GaussianMixture, expected_floor, fit_mixture, masked_floor
from scalelib.data.simulate import gene_symbols
from scalelib.data.splits import (
    assign_splits,
    cell_sizes,
    check_fractions,
    child_rngs,
    nested_train_sizes,
    train_rank,
)
from scalelib.data.store import ExpressionDataset, is_dataset_dir, load_dataset
from scalelib.errors import ScalelibError
from scalelib.heldout import fixed_mask

SOURCE = "mixture"
MC_CELLS = 20_000  # fresh cells behind the population floor
SIMULATED_FIT_CELLS = 10_000  # count-simulator cells a mixture is fitted to
CLUSTER_PCS = 20  # principal components the k-means clustering of unlabelled cells uses


@dataclass(frozen=True)
class FittedMixture:
    """A mixture fitted to data, the genes it covers and where it came from."""

    mixture: GaussianMixture
    gene_names: list[str]
    gene_ids: list[str]
    provenance: dict


def mixture_dataset(
    mixture: GaussianMixture,
    n_cells: int | Sequence[int],
    *,
    seed: int = 0,
    regime: str = SOURCE,
    gene_names: Sequence[str] | None = None,
    gene_ids: Sequence[str] | None = None,
    provenance: dict | None = None,
    mask_rate: float = TrainConfig.mask_rate,
    eval_mask_seed: int = TrainConfig.eval_mask_seed,
    mc_cells: int = MC_CELLS,
) -> ExpressionDataset:
    """Sample a dataset from ``mixture`` and record its Bayes floor in the manifest.

    Parameters
    ----------
    mixture
        The generative model.
    n_cells
        Cells to sample, or nested data sizes (the largest is sampled).
    seed
        Seed of the cells (child stream 0), the split (1), the training order (2) and the
        population floor's Monte Carlo cells (3).
    regime
        Regime label recorded in the manifest.
    gene_names, gene_ids
        Gene labels (default: symbol-like names, as the count simulator gives).
    provenance
        Where the mixture came from (:func:`mixture_from_data`, :func:`mixture_from_simulator`),
        for the manifest.
    mask_rate, eval_mask_seed
        The evaluation masks the floor is computed under: those of the runs that will be
        scored (:class:`scalelib.config.TrainConfig` fields; every preset uses the defaults).
    mc_cells
        Fresh cells behind the population floor.
    """
    sizes = cell_sizes(n_cells, None)
    draw_rng, split_rng, rank_rng, floor_rng = child_rngs(seed, 4)
    values, types = mixture.sample(sizes[-1], draw_rng)
    X = values.astype(np.float32)
    names = list(gene_names) if gene_names is not None else gene_symbols(mixture.n_genes)
    obs = pd.DataFrame({"cell_type": pd.Categorical.from_codes(types, list(mixture.type_names))},
                       index=[f"mix{i:07d}" for i in range(len(X))])
    split, split_info = assign_splits(obs, check_fractions((0.9, 0.05, 0.05)), split_rng,
                                      "cell_type", None)
    floor = bayes_floor(mixture, X, split, mask_rate=mask_rate, eval_mask_seed=eval_mask_seed,
                        mc_cells=mc_cells, seed=int(floor_rng.integers(2**32)))
    manifest = {
        "source": SOURCE,
        "provenance": {"source": SOURCE, **(provenance or {})},
        "regime": regime,
        "seed": seed,
        "n_genes": mixture.n_genes,
        "cells_drawn": sizes,
        "train_sizes": nested_train_sizes(sizes, int((split == "train").sum())),
        "split": split_info,
        "preprocessing": {
            "steps": ["sample a Gaussian mixture in normalised log-expression space", "split",
                      "train_rank"],
            "values": "mixture samples stored as they are: continuous, possibly negative; no "
                      "raw counts, gene selection or normalisation behind them",
            "dtype": "float32",
        },
        "mixture": mixture.summary(),
        "bayes_floor": floor,
        "versions": versions(),
    }
    return ExpressionDataset(
        X=X,
        obs=obs_table(obs, split, train_rank(split, rank_rng)),
        var=pl.DataFrame({"gene_id": list(gene_ids) if gene_ids is not None else
                          [f"ENSSIMG{g + 1:011d}" for g in range(mixture.n_genes)],
                          "gene_name": names}),
        manifest=manifest,
    )


def bayes_floor(mixture: GaussianMixture, X: np.ndarray, split: np.ndarray, *,
                mask_rate: float, eval_mask_seed: int, mc_cells: int, seed: int) -> dict:
    """The manifest's ``bayes_floor``: the Bayes predictor on the validation and test masks and
    on fresh cells (see the module docstring).

    Parameters
    ----------
    mixture
        The generative model of ``X``.
    X
        The dataset's values, as stored (float32: the floor is that of the stored values).
    split
        Split label per row of ``X``.
    mask_rate, eval_mask_seed
        The evaluation masks (validation: ``eval_mask_seed``; test: ``eval_mask_seed + 1``).
    mc_cells
        Fresh cells of the population estimate.
    seed
        Seed of those cells and their masks.
    """
    held_out = {}
    for offset, name in enumerate(("val", "test")):
        values = X[split == name]
        if len(values) == 0:
            raise ScalelibError(f"the {name} split is empty; sample more cells")
        mask = fixed_mask(len(values), X.shape[1], mask_rate, eval_mask_seed + offset)
        held_out[name] = masked_floor(mixture, values, mask).to_dict()
    return {
        "predictor": "posterior mean given the unmasked genes of the same cell (exact)",
        "mask_rate": mask_rate,
        "eval_mask_seed": eval_mask_seed,
        **held_out,
        "expected": expected_floor(mixture, mask_rate, n_cells=mc_cells, seed=seed).to_dict(),
    }


def mixture_from_data(path: str | Path, *, n_genes: int | None = None, n_types: int = 8,
                      rank: int = 8, labels: str = "cell_type", seed: int = 0) -> FittedMixture:
    """Fit a mixture to the training cells of a dataset directory or of raw counts.

    Parameters
    ----------
    path
        A dataset directory (its values are used as they are; with ``n_genes`` its first
        ``n_genes`` genes, the most variable) or raw counts (``.h5ad`` or 10x directory,
        built in memory with ``n_genes`` highly variable genes, default 256).
    n_genes
        Genes of the mixture (default: all of a dataset's, 256 for raw counts).
    n_types
        Clusters when the cells have no ``labels`` column.
    rank
        Programs per type.
    labels
        Obs column of cell types; when absent the cells are clustered by k-means on their top
        principal components into ``n_types`` clusters.
    seed
        Seed of the in-memory build and of the clustering.
    """
    dataset = _fit_source(Path(path), n_genes, seed)
    return _fitted(dataset, n_genes, n_types=n_types, rank=rank, labels=labels, seed=seed,
                   fit_to=str(path))


def mixture_from_simulator(n_genes: int, *, n_types: int = 8, rank: int = 8,
                           seed: int = 0) -> FittedMixture:
    """Fit a mixture to cells of the count simulator, typed by their simulated cell type.

    Parameters
    ----------
    n_genes
        Genes of the mixture: the highly variable genes of the simulated counts.
    n_types
        Cell types simulated.
    rank
        Programs per type.
    seed
        Seed of the simulation.
    """
    from scalelib.data.preprocess import simulate_dataset

    dataset = simulate_dataset(Regime("simulated", n_genes, SIMULATED_FIT_CELLS), seed=seed,
                               n_cell_types=n_types)
    return _fitted(dataset, n_genes, n_types=n_types, rank=rank, labels="cell_type", seed=seed,
                   fit_to="simulator")


def _fitted(dataset: ExpressionDataset, n_genes: int | None, *, n_types: int, rank: int,
            labels: str, seed: int, fit_to: str) -> FittedMixture:
    """Fit to the first ``n_genes`` genes of a dataset's training cells."""
    V = dataset.n_genes if n_genes is None else n_genes
    if not 2 <= V <= dataset.n_genes:
        raise ScalelibError(f"{fit_to} has {dataset.n_genes} genes; ask for 2 to that many "
                            "(--genes)")
    rows = dataset.split_indices("train")
    values = np.asarray(dataset.X[rows][:, :V], dtype=np.float64)
    if labels in dataset.obs.columns:
        cell_types = dataset.obs[labels].to_numpy()[rows].astype(str)
        how = f"obs column {labels!r}"
    else:
        cell_types = _clusters(values, n_types, seed)
        how = f"k-means into {n_types} clusters on the top {CLUSTER_PCS} principal components"
    mixture = fit_mixture(values, cell_types, rank=rank)
    provenance = {"fit_to": fit_to, "fit_dataset": dataset.fingerprint,
                  "types_from": how, "fit_cells": len(rows), "rank": rank}
    return FittedMixture(mixture, dataset.genes[:V], dataset.var["gene_id"].to_list()[:V],
                         provenance)


def _fit_source(path: Path, n_genes: int | None, seed: int) -> ExpressionDataset:
    """A dataset directory as it is, or raw counts built in memory."""
    if is_dataset_dir(path):
        return load_dataset(path)
    if not path.exists():
        raise ScalelibError(f"--fit-to {path} does not exist; give a dataset directory, an "
                            ".h5ad file or a 10x directory")
    from scalelib.data.preprocess import build_dataset
    from scalelib.data.sources import read_counts

    return build_dataset(read_counts(path), n_genes or 256, seed=seed)


def _clusters(values: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means labels (scipy's kmeans2, k-means++ starts) on the top principal components."""
    from scipy.cluster.vq import kmeans2

    centred = values - values.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    scores = centred @ axes[:CLUSTER_PCS].T
    _, labels = kmeans2(scores, n_clusters, minit="++", seed=seed)
    return np.array([f"cluster_{k + 1:02d}" for k in labels])
