"""Small synthetic datasets for tests: a matrix of values split in row order."""

import numpy as np
import polars as pl

from scalelib.data.store import ExpressionDataset


def row_order_dataset(X: np.ndarray, n_train: int, n_val: int,
                      rng: np.random.Generator) -> ExpressionDataset:
    """A dataset of ``X`` (cells x genes) whose first ``n_train`` rows train, the next ``n_val``
    validate and the rest test; training cells ranked at random by ``rng``."""
    n_cells, n_genes = X.shape
    split = ["train"] * n_train + ["val"] * n_val + ["test"] * (n_cells - n_train - n_val)
    obs = pl.DataFrame({
        "cell_id": [f"cell{i}" for i in range(n_cells)],
        "split": split,
        "train_rank": [*rng.permutation(n_train).tolist(), *[-1] * (n_cells - n_train)],
    })
    var = pl.DataFrame({"gene_id": [f"G{i}" for i in range(n_genes)],
                        "gene_name": [f"gene{i}" for i in range(n_genes)]})
    return ExpressionDataset(X.astype(np.float32), obs, var, {"regime": "test"})
