"""Train/validation/test splits, nested training subsets and the seeded random streams.

Every function here reads cell metadata only (never counts), so a source that streams its
counts (the Census) splits its cells before reading them.

- :func:`assign_splits`: 90/5/5 by default, stratified by a label column (each split keeps the
  label proportions), or with whole groups (donors, datasets) held out for val and test.
- :func:`train_rank`: a seeded order of the training cells; the first ``D`` form the nested
  training subset of size ``D``, so every data size shares one gene list, val and test set.
- :func:`nested_train_sizes`: the training size of each requested draw size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from scalelib.data.store import SPLITS
from scalelib.errors import ScalelibError

HOLDOUT_TRIES = 64  # random group orders tried when holding out whole groups


def child_rngs(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from ``seed`` (draw, split, training order).

    Parameters
    ----------
    seed
        Root seed; the same seed always gives the same generators.
    n
        Number of generators (children of ``numpy.random.SeedSequence(seed)``).

    Returns
    -------
    list of numpy.random.Generator
        Statistically independent streams, in spawn order.
    """
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def cell_sizes(n_cells: int | Sequence[int] | None, available: int | None,
               what: str = "the source has") -> list[int]:
    """Sorted distinct cell counts, checked against the ``available`` cells.

    Parameters
    ----------
    n_cells
        One size, several nested sizes, or None for every available cell.
    available
        Cells the source holds (None: not known yet, not checked).
    what
        How the message names the source (``"the source has"``, ``"the filter matches"``).
    """
    if n_cells is None:
        if available is None:
            raise ScalelibError("give the number of cells to draw")
        return [available]
    requested = list(np.atleast_1d(n_cells))
    bad = [n for n in requested if isinstance(n, bool) or int(n) != n or n < 1]
    if bad or not requested:
        raise ScalelibError(f"n_cells must be positive integers, got {n_cells!r}")
    sizes = sorted({int(n) for n in requested})
    if available is not None and sizes[-1] > available:
        raise ScalelibError(
            f"asked for {sizes[-1]:,} cells but {what} only {available:,}; "
            f"ask for at most {available:,} cells or use a larger source"
        )
    return sizes


def draw_positions(n_available: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``n`` cells drawn at random without replacement (all when equal).

    Parameters
    ----------
    n_available
        Cells to draw from (positions ``0 .. n_available - 1``).
    n
        Cells to draw, at most ``n_available``.
    rng
        Generator of the draw (not used when ``n == n_available``).

    Returns
    -------
    numpy.ndarray
        ``n`` distinct positions in increasing order.
    """
    if n == n_available:
        return np.arange(n_available)
    return np.sort(rng.choice(n_available, n, replace=False))


def check_fractions(split_fractions: Sequence[float]) -> tuple[float, float, float]:
    """Train, val and test fractions as floats, refused unless positive and summing to 1.

    Parameters
    ----------
    split_fractions
        Three numbers: train, val and test fractions (sum within 1e-6 of 1).

    Raises
    ------
    ScalelibError
        Not three numbers, one not positive, or a sum other than 1.
    """
    fractions = tuple(float(f) for f in split_fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ScalelibError(
            f"split_fractions must be three positive numbers (train, val, test) summing to 1, "
            f"got {tuple(split_fractions)}"
        )
    return fractions


def assign_splits(
    obs: pd.DataFrame, fractions: tuple[float, float, float], rng: np.random.Generator,
    stratify: str | None, holdout: str | None,
) -> tuple[np.ndarray, dict]:
    """Split label of every cell and a description of the split for the manifest.

    Parameters
    ----------
    obs
        Cell metadata, one row per cell.
    fractions
        Target train, val and test fractions.
    rng
        Generator of the split.
    stratify
        Column whose label proportions every split keeps (random split when absent).
    holdout
        Column whose groups go whole to one split; takes precedence over ``stratify``.

    Returns
    -------
    split : numpy.ndarray
        ``"train"``, ``"val"`` or ``"test"`` per cell (object dtype).
    info : dict
        Split method, its column, requested fractions, and the realised counts and fractions
        (:func:`split_summary`); a holdout split also lists the groups of each split.
    """
    if holdout is not None:
        split, info = _holdout_split(obs, holdout, fractions, rng)
    elif stratify is not None and stratify in obs.columns:
        split = _stratified_split(obs[stratify].astype(str).to_numpy(), fractions, rng)
        info = {"method": "stratified", "stratify": stratify}
    else:
        split = _stratified_split(np.zeros(len(obs)), fractions, rng)
        info = {"method": "random", "stratify": None}
        if stratify is not None:
            info["note"] = f"obs has no column {stratify!r}: the split is not stratified"
    return split, {**info, "fractions_requested": list(fractions), **split_summary(split)}


def split_summary(split: np.ndarray) -> dict:
    """Cells and realised fractions per split.

    Parameters
    ----------
    split
        ``"train"``, ``"val"`` or ``"test"`` per cell.

    Returns
    -------
    dict
        ``{"n_cells": {split: count}, "fractions": {split: fraction rounded to 4 places}}``.
    """
    counts = {name: int((split == name).sum()) for name in SPLITS}
    return {"n_cells": counts,
            "fractions": {name: round(c / len(split), 4) for name, c in counts.items()}}


def nested_train_sizes(sizes: list[int], n_train: int) -> list[int]:
    """Nested training sizes: each draw size times the realised training fraction.

    Parameters
    ----------
    sizes
        Draw sizes in increasing order (as :func:`cell_sizes` returns them); the last is the
        cells actually split.
    n_train
        Training cells in the split of ``sizes[-1]`` cells.

    Returns
    -------
    list of int
        ``round(size * n_train / sizes[-1])`` for each size; the last is ``n_train``.

    Raises
    ------
    ScalelibError
        The smallest size rounds to no training cell.
    """
    train_sizes = [round(n * n_train / sizes[-1]) for n in sizes]
    if train_sizes[0] < 1:
        raise ScalelibError(
            f"a draw of {sizes[0]} cells leaves no training cell; ask for more cells"
        )
    return train_sizes


def train_rank(split: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random order of the training cells (0, 1, ...); -1 for val and test cells.

    Parameters
    ----------
    split
        ``"train"``, ``"val"`` or ``"test"`` per cell.
    rng
        Generator of the order.

    Returns
    -------
    numpy.ndarray
        int64 rank per cell: a permutation of ``0 .. n_train - 1`` over training cells, -1
        elsewhere; the cells with ``rank < D`` form the nested training subset of size ``D``.
    """
    rank = np.full(len(split), -1, dtype=np.int64)
    train = np.flatnonzero(split == "train")
    rank[train] = rng.permutation(len(train))
    return rank


def _stratified_split(
    labels: np.ndarray, fractions: tuple[float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """Exact split sizes, apportioned across label groups in proportion to their size."""
    n = len(labels)
    n_val, n_test = (max(1, round(f * n)) for f in fractions[1:])
    if n_val + n_test >= n:
        raise ScalelibError(f"{n} cells are too few to split into train, val and test; "
                            "draw more cells")
    _, codes = np.unique(labels, return_inverse=True)
    sizes = np.bincount(codes)
    held = _apportion(sizes, n_val + n_test)
    val = _apportion(held, n_val)
    order = np.lexsort((rng.permutation(n), codes))  # by group, random within a group
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n) - (np.cumsum(sizes) - sizes)[codes[order]]
    return np.where(position < val[codes], "val",
                    np.where(position < held[codes], "test", "train")).astype(object)


def _apportion(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` that sum to ``total`` (largest remainders)."""
    quota = weights * (total / weights.sum())
    counts = np.floor(quota).astype(np.int64)
    short = total - counts.sum()
    counts[np.argsort(counts - quota, kind="stable")[:short]] += 1
    return counts


def _holdout_split(
    obs: pd.DataFrame, column: str, fractions: tuple[float, float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict]:
    """Whole groups of ``column`` go to val and test, each at least one group.

    Groups are assigned greedily in a random order; of ``HOLDOUT_TRIES`` seeded orders, the
    one whose split fractions come closest to the requested ones wins.
    """
    if column not in obs.columns:
        raise ScalelibError(
            f"cannot hold out groups of {column!r}: obs has no such column "
            f"(it has {', '.join(map(str, obs.columns)) or 'none'}); choose one of them"
        )
    labels = obs[column].astype(str).to_numpy()
    groups, codes = np.unique(labels, return_inverse=True)
    if len(groups) < 3:
        raise ScalelibError(
            f"holding out {column!r} needs at least 3 groups (train, val, test) but there "
            f"are {len(groups)}; hold out another column or use stratify instead"
        )
    shares = np.bincount(codes) / len(codes)
    tries = (_fill_groups(rng.permutation(len(groups)), shares, fractions)
             for _ in range(HOLDOUT_TRIES))
    assignment = min(tries, key=lambda a: _fraction_error(a, shares, fractions))
    info = {
        "method": "holdout",
        "holdout": column,
        "groups": {name: sorted(groups[assignment == name].tolist()) for name in SPLITS},
    }
    return assignment[codes], info


def _fill_groups(order: np.ndarray, shares: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Val, then test, take groups in ``order`` while each brings them closer to their share."""
    assignment = np.full(len(order), "train", dtype=object)
    remaining = list(order)
    for name, target, reserve in (("val", fractions[1], 2), ("test", fractions[2], 1)):
        taken = [remaining.pop(0)]
        for group in list(remaining):
            total = shares[taken].sum()
            if len(remaining) > reserve and abs(total + shares[group] - target) < abs(
                    total - target):
                taken.append(group)
                remaining.remove(group)
        assignment[taken] = name
    return assignment


def _fraction_error(assignment: np.ndarray, shares: np.ndarray,
                    fractions: Sequence[float]) -> float:
    return sum(abs(shares[assignment == name].sum() - f) for name, f in zip(SPLITS, fractions))
