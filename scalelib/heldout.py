"""The held-out cells every model is scored on: validation and test values with fixed masks.

Transformers (:mod:`scalelib.train`) and baselines (:mod:`scalelib.baselines`) read their
validation and test cells and masks from here, so both are scored on exactly the same cells
and masked positions: the validation mask is drawn from ``eval_mask_seed``, the test mask from
``eval_mask_seed + 1``, each position masked with probability ``mask_rate``. A split's MSE is
pooled: the squared errors of all its masked positions summed, divided by their number.

No torch here: the baselines and the report read it without the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scalelib.config import TrainConfig
from scalelib.data.store import ExpressionDataset
from scalelib.errors import ScalelibError


def fixed_mask(n_cells: int, n_genes: int, rate: float, seed: int) -> np.ndarray:
    """A reproducible boolean mask, True at masked positions.

    Parameters
    ----------
    n_cells, n_genes
        Shape of the mask.
    rate
        Probability that a position is masked.
    seed
        Seed of the draw (the same seed gives the same mask).
    """
    return np.random.default_rng(seed).random((n_cells, n_genes), dtype=np.float32) < rate


class FixedMask:
    """The mask of :func:`fixed_mask`, drawn a block of rows at a time and never held whole:
    ``FixedMask(...)[a:b]`` equals ``fixed_mask(...)[a:b]``.

    Parameters
    ----------
    n_cells, n_genes, rate, seed
        As for :func:`fixed_mask`.
    """

    def __init__(self, n_cells: int, n_genes: int, rate: float, seed: int) -> None:
        self.shape = (n_cells, n_genes)
        self.rate, self.seed = rate, seed

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("FixedMask takes contiguous row ranges only")
        generator = np.random.default_rng(self.seed)
        skipped = start * self.shape[1]
        # fixed_mask's float32 draws take one half of a 64-bit PCG64 output each
        generator.bit_generator.advance(skipped // 2)
        if skipped % 2:
            generator.random(1, dtype=np.float32)
        draws = generator.random((max(0, stop - start), self.shape[1]), dtype=np.float32)
        return draws < self.rate


def gene_means(train_values: np.ndarray, rows_per_chunk: int = 8192) -> np.ndarray:
    """Per-gene means (float64) of training cells, summed a chunk of rows at a time.

    Parameters
    ----------
    train_values
        Training cells (cells x genes): an array, a memory map, or rows read on demand
        (:class:`scalelib.data.store.RowsOnDisk`).
    rows_per_chunk
        Rows read at once.
    """
    totals = np.zeros(train_values.shape[1], dtype=np.float64)
    for start in range(0, len(train_values), rows_per_chunk):
        totals += np.asarray(train_values[start:start + rows_per_chunk]).sum(axis=0,
                                                                             dtype=np.float64)
    return totals / len(train_values)


def masked_mse_of_means(means: np.ndarray, values: np.ndarray, mask: np.ndarray,
                        rows_per_chunk: int = 8192) -> float:
    """MSE over masked positions of predicting each gene by ``means`` (pooled over chunks).

    Parameters
    ----------
    means
        One prediction per gene.
    values
        Cells to score (an array, memory map or rows read on demand).
    mask
        Boolean mask of ``values``' shape, True at the scored positions (an array or a
        :class:`FixedMask`).
    rows_per_chunk
        Rows read at once.
    """
    squared, count = 0.0, 0
    for start in range(0, len(values), rows_per_chunk):
        chunk = np.asarray(values[start:start + rows_per_chunk])
        chunk_mask = mask[start:start + rows_per_chunk]
        squared += float(np.square((chunk - means)[chunk_mask]).sum())
        count += int(chunk_mask.sum())
    return squared / count


def per_gene_mean_mse(train_values: np.ndarray, values: np.ndarray, mask: np.ndarray) -> float:
    """MSE over masked positions of predicting each gene by its mean over training cells.

    Parameters
    ----------
    train_values
        Training cells (cells x genes) whose per-gene means are the prediction.
    values
        Cells to score.
    mask
        Boolean mask of ``values``' shape, True at the scored positions.
    """
    return masked_mse_of_means(gene_means(train_values), values, mask)


@dataclass(frozen=True)
class MaskedSplit:
    """The cells of one held-out split and the positions of them that are scored."""

    values: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class HeldOut:
    """Validation and test cells with their fixed masks (see the module docstring)."""

    val: MaskedSplit
    test: MaskedSplit


def held_out_splits(dataset: ExpressionDataset, *, mask_rate: float = TrainConfig.mask_rate,
                    eval_mask_seed: int = TrainConfig.eval_mask_seed) -> HeldOut:
    """A dataset's validation and test values with the masks training scores them on.

    Parameters
    ----------
    dataset
        The dataset (its ``val`` and ``test`` splits are loaded into memory as float32).
    mask_rate
        Probability that a position is masked (a run's ``TrainConfig.mask_rate``).
    eval_mask_seed
        Seed of the validation mask; the test mask uses ``eval_mask_seed + 1`` (a run's
        ``TrainConfig.eval_mask_seed``).

    Raises
    ------
    ScalelibError
        The validation or test split is empty.
    """
    val_values, test_values = dataset.split_values("val"), dataset.split_values("test")
    if len(val_values) == 0 or len(test_values) == 0:
        raise ScalelibError("the dataset has an empty validation or test split; rebuild it")
    n_genes = dataset.n_genes
    return HeldOut(
        MaskedSplit(val_values, fixed_mask(len(val_values), n_genes, mask_rate, eval_mask_seed)),
        MaskedSplit(test_values, fixed_mask(len(test_values), n_genes, mask_rate,
                                            eval_mask_seed + 1)),
    )
