"""The learning saturation point: the smallest training-set size D whose downstream score is
within a fraction (95%) of the best score of the same model size, with a bootstrap interval.

It reads the probes table of :mod:`scalelib.probes` (one row per probed run and classifier,
with each row's test-cell labels and predictions), never the models. Scores are macro F1 over
test cells; seeds of one size and D are averaged before the best is taken. The interval
resamples the test cells (the same resample for every run of a group, so the runs stay paired)
and, where a D has runs of several seeds, those runs too (drawn with replacement, independently
per D); it recomputes every score, the seed means and the saturation point per resample. Its
ends are percentiles of that point, which can only take the D values the sweep trained. With two
seeds per D the seed resample has three outcomes (either seed twice, or both), so read such an
interval as a rough guide; ``n_seeds`` says how many seeds the least-replicated D of a curve had.
No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from scalelib.errors import ScalelibError

SATURATION_FRACTION = 0.95
# Columns that tell one curve of probe score against D from another.
CURVE_KEYS = ("dataset_fingerprint", "regime", "label", "classifier", "subsample", "model_family",
              "size")
SATURATION_SCHEMA = {
    **{name: pl.Utf8 for name in CURVE_KEYS},
    "n_sizes": pl.Int64, "best_d": pl.Int64, "best_f1": pl.Float64, "saturation_d": pl.Int64,
    "saturation_f1": pl.Float64, "saturation_low": pl.Int64, "saturation_high": pl.Int64,
    "n_seeds": pl.Int64, "fraction": pl.Float64, "n_bootstrap": pl.Int64,
}


def macro_f1_resampled(truth: np.ndarray, predicted: np.ndarray, n_classes: int,
                       weights: np.ndarray) -> np.ndarray:
    """Macro F1 of one set of predictions under weightings of its test cells.

    A class counts when it occurs (with positive weight) among the true or the predicted
    labels, as :func:`sklearn.metrics.f1_score` with ``average="macro"`` counts it; with all
    weights 1 the result equals that function's.

    Parameters
    ----------
    truth, predicted
        Integer class codes of the test cells, shape ``(n,)``.
    n_classes
        Number of class codes (codes lie in ``0 .. n_classes - 1``).
    weights
        ``(resamples, n)``: how often each cell is drawn in each resample.

    Returns
    -------
    numpy.ndarray
        Macro F1 per resample, shape ``(resamples,)``.
    """
    eye = np.eye(n_classes)
    true_onehot, predicted_onehot = eye[truth], eye[predicted]
    hits = weights @ (true_onehot * predicted_onehot)
    totals = weights @ true_onehot + weights @ predicted_onehot
    present = totals > 0
    per_class = np.divide(2 * hits, totals, out=np.zeros_like(hits), where=present)
    return per_class.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def saturation_size(train_sizes: Sequence[int], scores: Sequence[float],
                    fraction: float = SATURATION_FRACTION) -> int:
    """The smallest training-set size whose score reaches ``fraction`` of the best score.

    Parameters
    ----------
    train_sizes
        Training-set sizes D, one per score (any order).
    scores
        Score at each size (higher is better, e.g. macro F1).
    fraction
        Share of the best score that counts as saturated (0.95).
    """
    sizes, values = np.asarray(train_sizes), np.asarray(scores, dtype=float)
    reached = values >= fraction * np.nanmax(values)
    return int(sizes[reached].min())


def _class_codes(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """Truth (shared) and predictions (one row each) of a group as integer codes."""
    truths = rows["truth"].to_list()
    if any(truth != truths[0] for truth in truths[1:]):
        raise ScalelibError("probe rows of one curve were scored on different test cells; "
                            "probe the sweep again with --rerun")
    classes = sorted(set(truths[0]).union(*rows["predicted"].to_list()))
    code = {name: index for index, name in enumerate(classes)}
    truth = np.array([code[name] for name in truths[0]], dtype=np.int64)
    predicted = np.array([[code[name] for name in row] for row in rows["predicted"].to_list()],
                         dtype=np.int64)
    return truth, predicted, len(classes)


def _seed_means(resampled: np.ndarray, sizes: np.ndarray, distinct: np.ndarray,
                rng: np.random.Generator | None) -> np.ndarray:
    """Mean score per D in each resample, over a resample of that D's runs (seeds).

    Parameters
    ----------
    resampled
        ``(runs, resamples)``: each run's score under each resample of the test cells.
    sizes
        Training-set size D of each run, shape ``(runs,)``.
    distinct
        The distinct D values, in the order of the returned columns.
    rng
        Draws the runs of each D with replacement; None keeps every run once.

    Returns
    -------
    numpy.ndarray
        ``(resamples, len(distinct))``.
    """
    columns = []
    for d in distinct:
        runs = resampled[sizes == d].T
        if rng is not None and runs.shape[1] > 1:
            runs = np.take_along_axis(runs, rng.integers(0, runs.shape[1], runs.shape), axis=1)
        columns.append(runs.mean(axis=1))
    return np.stack(columns, axis=1)


def _curve_saturation(rows: pl.DataFrame, weights: np.ndarray, fraction: float,
                      rng: np.random.Generator | None) -> dict:
    """Saturation point and interval of one curve (rows at two or more D values); ``rng``
    resamples the seeds of each D (None: only the test cells are resampled)."""
    truth, predicted, n_classes = _class_codes(rows)
    resampled = np.stack([macro_f1_resampled(truth, row, n_classes, weights) for row in predicted])
    sizes = rows["n_train_cells"].to_numpy()
    distinct, runs_per_d = np.unique(sizes, return_counts=True)
    means = _seed_means(resampled, sizes, distinct, rng)
    full = rows.group_by("n_train_cells").agg(pl.col("macro_f1").mean()).sort("n_train_cells")
    point = saturation_size(full["n_train_cells"].to_list(), full["macro_f1"].to_list(), fraction)
    per_resample = [saturation_size(distinct, scores, fraction) for scores in means]
    best = full.sort("macro_f1", descending=True).row(0, named=True)
    return {
        "n_sizes": len(distinct), "best_d": best["n_train_cells"], "best_f1": best["macro_f1"],
        "saturation_d": point,
        "saturation_f1": full.filter(pl.col("n_train_cells") == point)["macro_f1"].item(),
        "saturation_low": int(np.quantile(per_resample, 0.025, method="lower")),
        "saturation_high": int(np.quantile(per_resample, 0.975, method="higher")),
        "n_seeds": int(runs_per_d.min()),
    }


def saturation_points(probes: pl.DataFrame, *, fraction: float = SATURATION_FRACTION,
                      n_bootstrap: int = 200, seed: int = 0) -> pl.DataFrame:
    """The saturation point of each curve of probe score against training-set size D.

    A curve is one dataset, label, classifier, subsampling strategy and model family, and for
    transformers one model size (the PCA baseline, fitted on the same nested subsets, gives one
    curve per classifier); curves with fewer than two distinct D values are left out.

    Parameters
    ----------
    probes
        Probes table (:mod:`scalelib.probes`): ``n_train_cells``, ``macro_f1``, ``truth``,
        ``predicted`` and the columns of :data:`CURVE_KEYS`.
    fraction
        Share of the curve's best seed-mean score that counts as saturated (0.95).
    n_bootstrap
        Resamples for the interval, each of the test cells and, where a D has several seeds,
        of that D's runs (0: the interval is the point).
    seed
        Seed of the resampling.

    Returns
    -------
    polars.DataFrame
        One row per curve (:data:`SATURATION_SCHEMA`): the best D and score, the saturation
        point ``saturation_d`` with its score, the 95% interval ``saturation_low`` to
        ``saturation_high``, and ``n_seeds``, the fewest runs (seeds) at any D of the curve
        (1: the interval resamples test cells only).
    """
    if not 0 < fraction <= 1:
        raise ScalelibError(f"the saturation fraction must lie in (0, 1], got {fraction}")
    if n_bootstrap < 0:
        raise ScalelibError("--bootstrap must be 0 or a positive number of resamples")
    rows = probes.filter(pl.col("n_train_cells").is_not_null() & pl.col("macro_f1").is_not_null())
    rows = rows.with_columns(
        (pl.col(name) if name in rows.columns else pl.lit(None)).cast(pl.Utf8).fill_null("")
        .alias(name) for name in CURVE_KEYS)
    out = []
    for keys, curve in rows.group_by(list(CURVE_KEYS), maintain_order=True):
        if curve["n_train_cells"].n_unique() < 2:
            continue
        n_cells = len(curve["truth"][0])
        rng = np.random.default_rng(seed)
        weights = (rng.multinomial(n_cells, np.full(n_cells, 1 / n_cells), size=n_bootstrap)
                   if n_bootstrap else np.ones((1, n_cells)))
        seeds = np.random.default_rng([seed, 1]) if n_bootstrap else None
        out.append({**dict(zip(CURVE_KEYS, keys)),
                    **_curve_saturation(curve, weights, fraction, seeds),
                    "fraction": fraction, "n_bootstrap": n_bootstrap})
    table = pl.DataFrame(out, schema=SATURATION_SCHEMA)
    return table.with_columns(pl.col(name).replace("", None) for name in CURVE_KEYS)
