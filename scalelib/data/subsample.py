"""How the nested training subsets are drawn: ``random``, ``rebalanced`` or ``geosketch``.

A dataset orders its training cells once per strategy; the first ``D`` cells of an order form
the training subset of size ``D``, so the subsets of one strategy are nested (a smaller one is
a prefix of a larger one) and every strategy shares the dataset's gene list, validation and
test cells. The random order is the column ``train_rank``; the others are
``train_rank_<strategy>`` (see :mod:`scalelib.data.store`).

- ``random``: a seeded permutation (:func:`scalelib.data.splits.train_rank`).
- ``rebalanced``: towards equal shares of the groups of a column (cell types by default):
  every group's cells in a random order, then the cells taken round-robin across groups, so
  any prefix holds ``min(n_group, k)`` or ``k + 1`` cells of each group (water-filling; a
  group with fewer cells than its equal share gives all it has).
- ``geosketch``: geometric sketching (Hie et al. 2019, the ``geosketch`` package) on the
  first :data:`GEOSKETCH_PCS` principal components of the training cells' normalised
  expression. Sketches are not nested by themselves, so the order is built from the whole
  training set down: at each checkpoint size (the dataset's nested training sizes and the
  halvings of the training set down to :data:`MIN_CHECKPOINT` cells) the cells kept are a
  sketch of the cells kept at the next larger checkpoint; the cells of the smallest sketch
  come first, then those each larger sketch adds, each block in a random order.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pandas as pd

from scalelib.errors import ScalelibError

STRATEGIES = ("random", "rebalanced", "geosketch")
GEOSKETCH_PCS = 20  # principal components the sketch covers
MIN_CHECKPOINT = 64  # halvings of the training set stop above this many cells
RANK_PREFIX = "train_rank"


def rank_column(strategy: str) -> str:
    """The obs column holding a strategy's training order (``train_rank`` for random).

    Parameters
    ----------
    strategy
        One of :data:`STRATEGIES`.
    """
    return RANK_PREFIX if strategy == "random" else f"{RANK_PREFIX}_{strategy}"


def check_strategies(strategies: Sequence[str], obs: pd.DataFrame | None = None,
                     balance_by: str | None = None) -> list[str]:
    """The strategies, deduplicated in order, checked before any work starts.

    Parameters
    ----------
    strategies
        Names from :data:`STRATEGIES`.
    obs
        Cell metadata; when given, ``balance_by`` must be one of its columns if
        ``rebalanced`` is asked for.
    balance_by
        Column whose groups ``rebalanced`` evens out.

    Raises
    ------
    ScalelibError
        An unknown or missing strategy, ``rebalanced`` without a column to balance, or
        ``geosketch`` without the geosketch package.
    """
    unknown = [name for name in strategies if name not in STRATEGIES]
    if unknown or not strategies:
        raise ScalelibError(f"unknown subsample strategy {', '.join(map(repr, unknown)) or '(none)'}; "
                            f"choose among {', '.join(STRATEGIES)}")
    chosen = list(dict.fromkeys(strategies))
    if "rebalanced" in chosen:
        if balance_by is None:
            raise ScalelibError("rebalanced subsets need a column to balance; pass --balance-by COL")
        if obs is not None and balance_by not in obs.columns:
            raise ScalelibError(
                f"cannot rebalance by {balance_by!r}: obs has no such column (it has "
                f"{', '.join(map(str, obs.columns)) or 'none'}); pass --balance-by with one of them")
    if "geosketch" in chosen:
        _geosketch()
    return chosen


def checkpoints(train_sizes: Sequence[int], n_train: int) -> list[int]:
    """Sizes at which a geosketch order is a sketch: the nested sizes and the halvings.

    Parameters
    ----------
    train_sizes
        The dataset's nested training sizes.
    n_train
        Training cells.

    Returns
    -------
    list of int
        Distinct sizes below ``n_train``, increasing.
    """
    halvings, size = [], n_train // 2
    while size >= MIN_CHECKPOINT:
        halvings.append(size)
        size //= 2
    return sorted({int(s) for s in (*train_sizes, *halvings) if 0 < s < n_train})


def rebalanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A training order that takes the groups of ``labels`` in turn (round-robin).

    Parameters
    ----------
    labels
        Group label of each training cell.
    rng
        Generator of the order within groups and of the ties between groups.

    Returns
    -------
    numpy.ndarray
        Rank of each cell (a permutation of ``0 .. n - 1``).
    """
    n = len(labels)
    _, codes = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    shuffled = rng.permutation(n)
    by_group = shuffled[np.argsort(codes[shuffled], kind="stable")]  # random within a group
    starts = np.searchsorted(codes[by_group], codes[by_group])
    turn = np.empty(n, dtype=np.int64)
    turn[by_group] = np.arange(n) - starts  # the cell's position within its group
    order = np.lexsort((rng.random(n), turn))
    return _ranks(order)


def geosketch_order(values: np.ndarray, sizes: Sequence[int], rng: np.random.Generator,
                    n_pcs: int = GEOSKETCH_PCS) -> np.ndarray:
    """A training order whose prefix at each of ``sizes`` is a geometric sketch.

    Parameters
    ----------
    values
        Normalised expression of the training cells (cells x genes).
    sizes
        Checkpoint sizes below the number of cells (see :func:`checkpoints`).
    rng
        Generator of the sketches' seeds and of the order within each block.
    n_pcs
        Principal components the sketch covers.

    Returns
    -------
    numpy.ndarray
        Rank of each cell (a permutation of ``0 .. n - 1``).
    """
    embedding = principal_components(values, n_pcs)
    members = np.arange(len(values))
    blocks = []
    for size in sorted(sizes, reverse=True):
        chosen = members[_sketch(embedding[members], size, int(rng.integers(2**31)))]
        blocks.append(rng.permutation(np.setdiff1d(members, chosen)))
        members = chosen
    blocks.append(rng.permutation(members))
    return _ranks(np.concatenate(blocks[::-1]))


def principal_components(values: np.ndarray, n_pcs: int) -> np.ndarray:
    """Scores of the cells on the first ``n_pcs`` principal components (centred, unscaled).

    Parameters
    ----------
    values
        Cells x genes.
    n_pcs
        Components kept (at most the number of genes).
    """
    centred = np.asarray(values, dtype=np.float64) - values.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return centred @ vectors[:, ::-1][:, :min(n_pcs, values.shape[1])]


def subsample_record(strategies: Sequence[str], balance_by: str | None,
                     sizes: Sequence[int]) -> dict:
    """What the manifest records about the training orders.

    Parameters
    ----------
    strategies
        Strategies the dataset holds orders for.
    balance_by
        Column ``rebalanced`` evens out (None when not asked for).
    sizes
        Geosketch checkpoints (see :func:`checkpoints`).
    """
    record: dict = {"strategies": list(strategies)}
    if "rebalanced" in strategies:
        record["balance_by"] = balance_by
    if "geosketch" in strategies:
        record["geosketch"] = {"pcs": GEOSKETCH_PCS, "checkpoints": list(sizes),
                               "version": _geosketch_version()}
    return record


def _ranks(order: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def _sketch(embedding: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Positions of a geometric sketch of ``size`` cells (geosketch seeds numpy's global
    generator: its state is restored afterwards)."""
    gs = _geosketch()
    state = np.random.get_state()
    try:
        return np.asarray(gs(embedding, size, seed=seed, replace=False), dtype=np.int64)
    finally:
        np.random.set_state(state)


def _geosketch():
    try:
        from geosketch import gs
    except ImportError:
        raise ScalelibError("geosketch subsets need the geosketch package; "
                            "pip install geosketch") from None
    return gs


def _geosketch_version() -> str | None:
    try:
        return version("geosketch")
    except PackageNotFoundError:
        return None
