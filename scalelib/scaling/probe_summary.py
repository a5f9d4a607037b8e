"""Summaries of a probes table (:mod:`scalelib.probes`): the best score of each family, and
how the transformers stand against the PCA and expression probes. No torch here.

Scores are seed means of macro F1 at one size and training-set size D; "best" is the highest
such mean. The expression probe does not depend on D or the subsampling strategy (its rows have
neither), so every strategy is compared with the same expression score.
"""

from __future__ import annotations

import polars as pl

GROUP = ("regime", "subsample", "model_family", "classifier")


def best_scores(probes: pl.DataFrame) -> pl.DataFrame:
    """The best seed-mean macro F1 of each regime, strategy, model family and classifier.

    Parameters
    ----------
    probes
        A probes table (``macro_f1``, ``size``, ``params``, ``n_train_cells`` and
        :data:`GROUP`).

    Returns
    -------
    polars.DataFrame
        One row per group: :data:`GROUP`, ``size``, ``params``, ``n_train_cells`` (where the
        best is), ``macro_f1`` and ``n_runs`` (the seeds averaged there).
    """
    means = (probes.group_by(*GROUP, "size", "params", "n_train_cells")
             .agg(pl.col("macro_f1").mean(), pl.len().alias("n_runs")))
    best = means.sort("macro_f1", descending=True).group_by(GROUP, maintain_order=True).first()
    return best.sort("regime", "classifier", "subsample", "model_family", nulls_last=True)


def against_baselines(probes: pl.DataFrame) -> pl.DataFrame:
    """The best transformer of each regime, strategy and classifier beside the best PCA probe
    of that strategy and the expression probe.

    Parameters
    ----------
    probes
        A probes table with transformer, ``pca`` and ``expression`` rows.

    Returns
    -------
    polars.DataFrame
        Per regime, ``subsample`` and ``classifier``: the best transformer's ``size``,
        ``n_train_cells`` and ``transformer_f1``, then ``pca_f1``, ``expression_f1``, and
        ``minus_pca`` = transformer_f1 - pca_f1 (negative: PCA is ahead).
    """
    best = best_scores(probes)
    keys = ["regime", "subsample", "classifier"]
    transformers = best.filter(pl.col("model_family") == "transformer").select(
        *keys, "size", "n_train_cells", pl.col("macro_f1").alias("transformer_f1"))
    pca = best.filter(pl.col("model_family") == "pca").select(
        *keys, pl.col("macro_f1").alias("pca_f1"))
    expression = best.filter(pl.col("model_family") == "expression").select(
        "regime", "classifier", pl.col("macro_f1").alias("expression_f1"))
    return (transformers.join(pca, on=keys, how="left", nulls_equal=True)
            .join(expression, on=["regime", "classifier"], how="left")
            .with_columns((pl.col("transformer_f1") - pl.col("pca_f1")).alias("minus_pca"))
            .sort("regime", "classifier", "subsample"))

