"""Non-transformer baselines scored on the transformers' own validation and test masks.

Four families predict a cell's masked genes from its unmasked ones:

``mean``
    each gene's mean over the training cells (the same number as a run's ``baseline_val_mse``);
``pca``
    probabilistic PCA: the Gaussian with covariance ``W W^T + sigma^2 I`` built from the top
    ``k`` eigenpairs of the training covariance (``sigma^2`` the mean of the discarded
    eigenvalues), predicting the conditional mean of the masked genes;
``ridge``
    ridge regression of the masked on the unmasked genes, fitted afresh for every mask
    pattern: the conditional mean under the covariance ``C + lambda I``, which is the same
    answer as the ridge normal equations on the centred training cells, with ``lambda`` a
    multiple of the mean gene variance;
``knn``
    the mean of the ``k`` nearest training cells at the masked genes, with distances over the
    query cell's unmasked genes only (at most ``MAX_KNN_REFERENCE`` training cells, a seeded
    subsample, serve as neighbours).

Each family is fitted on training cells only. Its setting (``k`` or ``lambda``) is chosen on an
inner split of the training cells (``INNER_FRACTION`` of them, at most ``MAX_INNER_CELLS``,
masked at the same rate with the seed ``eval_mask_seed + 2``), the other training cells serving
as the fit; the family is then refitted on all training cells with that setting and scored on
the validation and test cells and masks of :func:`scalelib.heldout.held_out_splits`, with the
pooled MSE the training loop uses.

Both Gaussian families use one formula: with precision ``P = S^-1``, the conditional mean of
the masked genes ``M`` given the observed ``O`` is ``mu_M - (P_MM)^-1 P_MO (x_O - mu_O)``, one
``|M| x |M|`` solve per cell; cells with the same number of masked genes are solved as one
stacked batch, in chunks that bound memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from scalelib.config import TrainConfig
from scalelib.data.store import ExpressionDataset
from scalelib.errors import ScalelibError
from scalelib.heldout import MaskedSplit, fixed_mask, held_out_splits, per_gene_mean_mse

FAMILIES = ("mean", "pca", "ridge", "knn")
INNER_FRACTION = 0.15
MAX_INNER_CELLS = 5_000
MAX_TRAIN_CELLS = 200_000  # the first cells of the training order, as for a run's mean baseline
MAX_KNN_REFERENCE = 20_000
INNER_MASK_SEED_OFFSET = 2  # eval_mask_seed + 2: neither the validation nor the test mask
MIN_TRAIN_CELLS = 10
RIDGE_LAMBDAS = (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # x mean gene variance
PCA_COMPONENTS = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512)
KNN_NEIGHBOURS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_CHUNK_BYTES = 64 * 2**20  # working memory of one batch of solves or distances


@dataclass(frozen=True)
class BaselineResult:
    """One family's chosen setting and its scores.

    Attributes
    ----------
    family
        ``mean``, ``pca``, ``ridge`` or ``knn``.
    setting
        The chosen setting, e.g. ``"k=16"`` or ``"lambda=0.1"`` (``"none"`` for ``mean``).
    val_mse, test_mse
        Pooled MSE over the masked positions of the validation and test cells.
    inner_mse
        The same on the inner split that chose the setting.
    fit_seconds
        Wall time to choose the setting, refit and score both splits.
    n_train_cells
        Training cells the family was fitted on.
    """

    family: str
    setting: str
    val_mse: float
    test_mse: float
    inner_mse: float
    fit_seconds: float
    n_train_cells: int

    def to_dict(self) -> dict:
        """All fields as a dictionary."""
        return asdict(self)


def family_spec(family: str) -> dict:
    """What determines a family's result besides data and masks: its grid of settings and the
    inner-split and reference caps (a sweep hashes it into the baseline's run ID).

    Parameters
    ----------
    family
        One of ``FAMILIES``.
    """
    grids = {"mean": [], "pca": list(PCA_COMPONENTS), "ridge": list(RIDGE_LAMBDAS),
             "knn": list(KNN_NEIGHBOURS)}
    spec = {"family": family, "grid": grids[family], "inner_fraction": INNER_FRACTION,
            "max_inner_cells": MAX_INNER_CELLS, "max_train_cells": MAX_TRAIN_CELLS,
            "inner_mask_seed_offset": INNER_MASK_SEED_OFFSET}
    if family == "knn":
        spec["max_reference"] = MAX_KNN_REFERENCE
    return spec


def fit_baselines(dataset: ExpressionDataset, *, families: Sequence[str] = FAMILIES,
                  n_train: int | None = None, mask_rate: float = TrainConfig.mask_rate,
                  eval_mask_seed: int = TrainConfig.eval_mask_seed, seed: int = 0,
                  on_family: Callable[[BaselineResult], object] | None = None,
                  ) -> list[BaselineResult]:
    """Fit each family on the training cells and score it on the validation and test masks.

    Parameters
    ----------
    dataset
        Dataset with train/val/test splits.
    families
        Families to fit, from ``FAMILIES``.
    n_train
        Fit on the nested training subset of this many cells (all training cells when None).
    mask_rate, eval_mask_seed
        The masks of the transformer runs to compare with (their ``TrainConfig`` fields).
    seed
        Seeds the inner split and the kNN reference subsample.
    on_family
        Called with each result as soon as it is ready (progress).

    Returns
    -------
    list of BaselineResult
        In the order of ``families``.
    """
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        raise ScalelibError(f"unknown baseline family {unknown[0]!r}; choose from "
                            f"{', '.join(FAMILIES)}")
    rows = dataset.split_indices("train", n_train)[:MAX_TRAIN_CELLS]
    if len(rows) < MIN_TRAIN_CELLS:
        raise ScalelibError(f"baselines need at least {MIN_TRAIN_CELLS} training cells, the "
                            f"dataset has {len(rows)}; build a larger dataset")
    train_values = np.ascontiguousarray(dataset.X[rows], dtype=np.float32)
    held_out = held_out_splits(dataset, mask_rate=mask_rate, eval_mask_seed=eval_mask_seed)
    fit_part, inner = inner_split(train_values, mask_rate, eval_mask_seed + INNER_MASK_SEED_OFFSET,
                                  np.random.default_rng(seed))
    results = []
    for name in families:
        result = _fit_family(name, train_values, fit_part, inner, held_out.val, held_out.test,
                             seed)
        results.append(result)
        if on_family is not None:
            on_family(result)
    return results


def inner_split(train_values: np.ndarray, mask_rate: float, mask_seed: int,
                rng: np.random.Generator) -> tuple[np.ndarray, MaskedSplit]:
    """Split training cells into a fit part and a masked inner part that chooses settings.

    Parameters
    ----------
    train_values
        Training cells (cells x genes).
    mask_rate
        Masking rate of the inner cells (that of the evaluation).
    mask_seed
        Seed of the inner mask (not a validation or test seed).
    rng
        Draws which cells are held out.

    Returns
    -------
    tuple of (numpy.ndarray, MaskedSplit)
        The fit cells, and the inner cells with their mask.
    """
    n_inner = min(MAX_INNER_CELLS, max(1, round(INNER_FRACTION * len(train_values))))
    order = rng.permutation(len(train_values))
    inner_values = train_values[np.sort(order[:n_inner])]
    mask = fixed_mask(n_inner, train_values.shape[1], mask_rate, mask_seed)
    return train_values[np.sort(order[n_inner:])], MaskedSplit(inner_values, mask)


def _fit_family(name: str, train_values: np.ndarray, fit_part: np.ndarray, inner: MaskedSplit,
                val: MaskedSplit, test: MaskedSplit, seed: int) -> BaselineResult:
    started = time.perf_counter()
    scorer, settings = SCORERS[name], _settings(name, fit_part)
    inner_scores = scorer(fit_part, [inner], settings, seed)[0]
    best = int(np.argmin(inner_scores))
    val_mse, test_mse = scorer(train_values, [val, test], [settings[best]], seed)[:, 0]
    return BaselineResult(
        family=name, setting=_setting_text(name, settings[best]), val_mse=float(val_mse),
        test_mse=float(test_mse), inner_mse=float(inner_scores[best]),
        fit_seconds=time.perf_counter() - started, n_train_cells=len(train_values))


def _settings(name: str, fit_part: np.ndarray) -> list[float]:
    n_cells, n_genes = fit_part.shape
    if name == "mean":
        return [0.0]
    if name == "ridge":
        return list(RIDGE_LAMBDAS)
    if name == "pca":
        return [k for k in PCA_COMPONENTS if k < min(n_genes, n_cells)] or [1]
    return [k for k in KNN_NEIGHBOURS if k <= min(n_cells, MAX_KNN_REFERENCE)] or [1]


def _setting_text(name: str, setting: float) -> str:
    if name == "mean":
        return "none"
    if name == "ridge":
        return f"lambda={setting:g}"
    return f"k={int(setting)}"


# ---------------------------------------------------------------- scorers
# A scorer takes training cells, target splits, settings and a seed and returns the pooled MSE
# of every (split, setting) as an array of shape (len(splits), len(settings)).
Scorer = Callable[[np.ndarray, Sequence[MaskedSplit], Sequence[float], int], np.ndarray]


def score_mean(train_values: np.ndarray, splits: Sequence[MaskedSplit],
               settings: Sequence[float], seed: int) -> np.ndarray:
    """Per-gene training means (``settings`` holds one ignored value)."""
    return np.array([[per_gene_mean_mse(train_values, split.values, split.mask)]
                     for split in splits])


def score_ridge(train_values: np.ndarray, splits: Sequence[MaskedSplit],
                settings: Sequence[float], seed: int) -> np.ndarray:
    """Ridge from unmasked to masked genes; ``settings`` are lambdas relative to the mean
    gene variance."""
    mean, covariance = mean_and_covariance(train_values)
    scale = max(float(np.trace(covariance)) / len(covariance), 1e-12)
    precisions = [ridge_precision(covariance, relative * scale) for relative in settings]
    return _score_gaussians(mean, precisions, splits)


def score_pca(train_values: np.ndarray, splits: Sequence[MaskedSplit],
              settings: Sequence[float], seed: int) -> np.ndarray:
    """Probabilistic PCA conditional means; ``settings`` are numbers of components."""
    mean, covariance = mean_and_covariance(train_values)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]
    precisions = [ppca_precision(eigenvalues, eigenvectors, int(k)) for k in settings]
    return _score_gaussians(mean, precisions, splits)


def score_knn(train_values: np.ndarray, splits: Sequence[MaskedSplit],
              settings: Sequence[float], seed: int) -> np.ndarray:
    """k-nearest-neighbour averages; ``settings`` are neighbour counts; ``seed`` draws the
    reference subsample when there are more than ``MAX_KNN_REFERENCE`` training cells."""
    reference = train_values
    if len(reference) > MAX_KNN_REFERENCE:
        chosen = np.random.default_rng(seed).choice(len(reference), MAX_KNN_REFERENCE,
                                                    replace=False)
        reference = reference[np.sort(chosen)]
    ks = [int(k) for k in settings]
    return np.array([knn_sse(reference, split.values, split.mask, ks) / split.mask.sum()
                     for split in splits])


SCORERS: dict[str, Scorer] = {"mean": score_mean, "pca": score_pca, "ridge": score_ridge,
                              "knn": score_knn}


def _score_gaussians(mean: np.ndarray, precisions: Sequence[np.ndarray],
                     splits: Sequence[MaskedSplit]) -> np.ndarray:
    scores = np.empty((len(splits), len(precisions)))
    for i, split in enumerate(splits):
        for j, precision in enumerate(precisions):
            predictions = conditional_mean(mean, precision, split.values, split.mask)
            errors = (predictions - split.values)[split.mask]
            scores[i, j] = np.square(errors).sum() / split.mask.sum()
    return scores


# ---------------------------------------------------------------- Gaussian conditional means
def mean_and_covariance(values: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and covariance (divided by the number of cells), accumulated in float64.

    Parameters
    ----------
    values
        Cells x genes.
    chunk
        Cells per accumulation step (bounds the float64 copy).
    """
    mean = values.mean(axis=0, dtype=np.float64)
    covariance = np.zeros((values.shape[1], values.shape[1]))
    for start in range(0, len(values), chunk):
        centred = values[start:start + chunk].astype(np.float64) - mean
        covariance += centred.T @ centred
    return mean, covariance / len(values)


def ridge_precision(covariance: np.ndarray, penalty: float) -> np.ndarray:
    """The inverse of ``covariance + penalty * I``.

    With it, :func:`conditional_mean` gives ridge regression (penalty ``penalty`` per cell
    on the coefficients, intercept unpenalised) of the masked on the unmasked genes.
    """
    regularised = covariance + penalty * np.eye(len(covariance))
    return _symmetric_inverse(regularised)


def ppca_precision(eigenvalues: np.ndarray, eigenvectors: np.ndarray, k: int) -> np.ndarray:
    """The precision of probabilistic PCA with ``k`` components.

    Parameters
    ----------
    eigenvalues, eigenvectors
        Eigen-decomposition of the training covariance, eigenvalues in decreasing order.
    k
        Components kept; ``sigma^2`` is the mean of the other eigenvalues (floored at a
        millionth of the mean variance so that the precision exists).

    Returns
    -------
    numpy.ndarray
        ``(W W^T + sigma^2 I)^-1``, whose eigenvalues are ``1 / lambda_i`` on the kept
        directions and ``1 / sigma^2`` on the others.
    """
    floor = 1e-6 * max(float(eigenvalues.mean()), np.finfo(float).tiny)
    kept = np.maximum(eigenvalues[:k], floor)
    noise = max(float(eigenvalues[k:].mean()), floor) if k < len(eigenvalues) else floor
    directions = eigenvectors[:, :k]
    return (directions * (1.0 / kept - 1.0 / noise)) @ directions.T + np.eye(len(eigenvalues)) / noise


def conditional_mean(mean: np.ndarray, precision: np.ndarray, values: np.ndarray,
                     mask: np.ndarray) -> np.ndarray:
    """Gaussian conditional mean of every cell's masked genes given its unmasked ones.

    Parameters
    ----------
    mean
        Mean of the Gaussian (genes).
    precision
        Inverse covariance of the Gaussian (genes x genes).
    values
        Cells x genes; only the unmasked values are read.
    mask
        Boolean, True at the positions to predict.

    Returns
    -------
    numpy.ndarray
        ``values`` (float64) with every masked position replaced by
        ``mu_M - (P_MM)^-1 P_MO (x_O - mu_O)``. Cells with equally many masked genes are
        solved as stacked batches.
    """
    predictions = np.array(values, dtype=np.float64)
    shifts = np.where(mask, 0.0, predictions - mean) @ precision  # P_MO (x_O - mu_O) at M
    # LAPACK on many small systems: extra BLAS threads only contend (30x slower measured with
    # 2 threads on a busy 2-core machine at |M| = 154)
    with threadpool_limits(1, user_api="blas"):
        for batch, genes in _masked_groups(mask, lambda m: 8 * m * (m + 1)):
            blocks = precision[genes[:, :, None], genes[:, None, :]]
            rhs = np.take_along_axis(shifts[batch], genes, axis=1)[..., None]
            solved = np.linalg.solve(blocks, rhs)[..., 0]
            predictions[batch[:, None], genes] = mean[genes] - solved
    return predictions


def _masked_groups(mask: np.ndarray, bytes_per_cell: Callable[[int], int],
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of cells with equally many masked genes, as (cell indices, masked gene indices
    of shape cells x m), each batch within ``_CHUNK_BYTES`` given the bytes a cell with ``m``
    masked genes needs; cells with nothing masked are left out."""
    counts = mask.sum(axis=1)
    for m in np.unique(counts[counts > 0]).tolist():
        cells = np.flatnonzero(counts == m)
        per_batch = max(1, _CHUNK_BYTES // bytes_per_cell(m))
        for start in range(0, len(cells), per_batch):
            batch = cells[start:start + per_batch]
            yield batch, np.nonzero(mask[batch])[1].reshape(len(batch), m)


def _symmetric_inverse(matrix: np.ndarray) -> np.ndarray:
    inverse = np.linalg.inv(matrix)
    return (inverse + inverse.T) / 2


# ---------------------------------------------------------------- nearest neighbours
def knn_sse(reference: np.ndarray, values: np.ndarray, mask: np.ndarray,
            ks: Sequence[int]) -> np.ndarray:
    """Squared errors of k-nearest-neighbour averages, summed over masked positions, per k.

    Parameters
    ----------
    reference
        Training cells that serve as neighbours (cells x genes).
    values
        Query cells.
    mask
        Boolean, True at the positions to predict; distances use the other genes only.
    ks
        Neighbour counts (each at most ``len(reference)``).

    Returns
    -------
    numpy.ndarray
        One sum per entry of ``ks``.
    """
    reference = reference.astype(np.float64)
    reference_squares = np.square(reference)
    k_max = max(ks)
    per_chunk = max(1, _CHUNK_BYTES // (8 * len(reference)))
    sse = np.zeros(len(ks))
    for start in range(0, len(values), per_chunk):
        query = values[start:start + per_chunk].astype(np.float64)
        query_mask = mask[start:start + per_chunk]
        neighbours = _nearest(reference, reference_squares, query, ~query_mask, k_max)
        for cells, genes in _masked_groups(query_mask, lambda m: 16 * k_max * m):
            near = reference[neighbours[cells][:, :, None], genes[:, None, :]]  # cells, k, m
            running = np.cumsum(near, axis=1)
            truth = np.take_along_axis(query[cells], genes, axis=1)
            for i, k in enumerate(ks):
                sse[i] += np.square(running[:, k - 1] / k - truth).sum()
    return sse


def _nearest(reference: np.ndarray, reference_squares: np.ndarray, query: np.ndarray,
             observed: np.ndarray, k: int) -> np.ndarray:
    """Indices of each query cell's ``k`` nearest reference cells, nearest first, by squared
    distance over the query's observed genes only."""
    weights = observed.astype(np.float64)
    shown = query * weights
    distances = (np.square(shown).sum(axis=1, keepdims=True) - 2.0 * shown @ reference.T
                 + weights @ reference_squares.T)
    if k < len(reference):
        candidates = np.argpartition(distances, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(len(reference)), distances.shape)
    order = np.argsort(np.take_along_axis(distances, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)
