"""Per-gene validation error of the best model of each size: the spread across genes and the
genes that carry most of the floor.

Each training run writes ``pergene.parquet`` into its run directory (see
:func:`scalelib.train.train`): per gene, the masked validation positions, the summed and mean
squared error of the best checkpoint and, for likelihood objectives, the summed NLL and mean
bits. Computing it at the end of the run costs one validation pass of a model already in
memory and needs no dataset afterwards; runs trained before the file existed are rescored from
their ``best.pt`` on their dataset (same masks) and the file is written then.

:func:`pergene_table` gathers those files for the best run of each size (per dataset,
objective and training-set size; best by validation bits for likelihood objectives, by
validation MSE otherwise) into one tidy table, which ``scalelib pergene --sweep DIR`` writes
to ``DIR/pergene.parquet``; :func:`pergene_summary` condenses it to one row per run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from scalelib.errors import ScalelibError
from scalelib.results import read_results
from scalelib.scaling import ok_rows, transformer_rows

PERGENE_FILE = "pergene.parquet"
RUN_COLUMNS = ("run_id", "regime", "dataset_fingerprint", "objective", "n_train_cells", "size",
               "params", "seed", "best_val_mse", "best_val_bits")
TOP_GENES = 5  # genes named per run in the summary


def best_runs(results: pl.DataFrame) -> pl.DataFrame:
    """The best finished transformer run of each size, per dataset, objective and data size.

    Parameters
    ----------
    results
        A results table (see :mod:`scalelib.results`).

    Returns
    -------
    polars.DataFrame
        The chosen rows (lowest validation bits for likelihood objectives, lowest validation
        MSE for ``mse``), ordered by dataset, objective, data size and parameters.
    """
    rows = transformer_rows(ok_rows(results)).filter(pl.col("best_val_mse").is_not_null())
    score = pl.coalesce("best_val_bits", "best_val_mse")
    keys = ["dataset_fingerprint", "objective", "n_train_cells", "size"]
    return (rows.sort(score).group_by(keys, maintain_order=True).first()
            .sort("dataset_fingerprint", "objective", "n_train_cells", "params"))


def pergene_table(sweep_dir: str | Path) -> pl.DataFrame:
    """Per-gene validation error of the best run of each size in a sweep directory.

    Parameters
    ----------
    sweep_dir
        A sweep directory (``results.parquet`` and ``runs/<run_id>/``).

    Returns
    -------
    polars.DataFrame
        One row per run and gene: the run columns of :data:`RUN_COLUMNS`, then ``gene``,
        ``n_masked``, ``squared_error_sum``, ``mse``, ``nll_nats_sum`` and ``bits`` (null for
        ``mse`` runs), ``error_share`` (the gene's part of the run's summed squared error) and
        ``error_rank`` (1 for the gene carrying most of it). Per run, ``squared_error_sum``
        summed over genes divided by ``n_masked`` summed is the run's ``best_val_mse``.
    """
    sweep_dir = Path(sweep_dir)
    results_path = sweep_dir / "results.parquet"
    if not results_path.exists():
        raise ScalelibError(f"no results.parquet in {sweep_dir}; point --sweep to a sweep "
                            "directory (`scalelib sweep --out DIR`)")
    chosen = best_runs(read_results(results_path))
    if chosen.height == 0:
        raise ScalelibError(f"{results_path} has no finished transformer run; run the sweep")
    parts = [_with_run_columns(run_genes(sweep_dir / "runs" / row["run_id"], row), row)
             for row in chosen.iter_rows(named=True)]
    return pl.concat(parts, how="diagonal_relaxed")


def run_genes(run_dir: Path, row: dict) -> pl.DataFrame:
    """A run's per-gene table: its ``pergene.parquet``, or rescored from its checkpoint.

    Parameters
    ----------
    run_dir
        The run's directory.
    row
        Its results row (``dataset`` names the dataset directory to rescore on).
    """
    path = run_dir / PERGENE_FILE
    if not path.exists():
        rescore_checkpoint(run_dir / "best.pt", row["dataset"]).write_parquet(path)
    return pl.read_parquet(path)


def rescore_checkpoint(checkpoint: Path, dataset_dir: str) -> pl.DataFrame:
    """Per-gene validation scores of a saved model on the masks of its training run.

    Parameters
    ----------
    checkpoint
        A ``best.pt`` written by :func:`scalelib.train.train`.
    dataset_dir
        The dataset it was trained on.
    """
    import torch

    from scalelib.config import TrainConfig
    from scalelib.data.store import load_dataset
    from scalelib.heldout import fixed_mask
    from scalelib.objectives import uses_counts
    from scalelib.train import evaluate, load_checkpoint, normalisation_total

    if not checkpoint.exists():
        raise ScalelibError(f"no checkpoint at {checkpoint} to rescore; rerun the sweep with "
                            "--rerun to write per-gene errors")
    dataset = load_dataset(dataset_dir)
    config = TrainConfig(**torch.load(checkpoint, map_location="cpu", weights_only=True)["config"])
    values = dataset.split_values("val")
    nb = uses_counts(config.objective)
    scores = evaluate(load_checkpoint(checkpoint), values,
                      fixed_mask(len(values), dataset.n_genes, config.mask_rate,
                                 config.eval_mask_seed),
                      batch_size=config.eval_batch_size, device=torch.device("cpu"),
                      dtype="fp32", objective=config.objective,
                      counts=dataset.split_counts("val") if nb else None,
                      target_sum=normalisation_total(dataset) if nb else None)
    return scores.per_gene(dataset.genes)


def _with_run_columns(genes: pl.DataFrame, row: dict) -> pl.DataFrame:
    total = float(genes["squared_error_sum"].sum())
    columns = [pl.lit(row[name]).alias(name) for name in RUN_COLUMNS]
    return genes.with_columns(
        *columns,
        error_share=pl.col("squared_error_sum") / total,
        error_rank=pl.col("squared_error_sum").rank("ordinal", descending=True).cast(pl.Int64),
    ).select(*RUN_COLUMNS, pl.exclude(RUN_COLUMNS))


def pergene_summary(table: pl.DataFrame) -> pl.DataFrame:
    """One row per run of a :func:`pergene_table`: how the error spreads across genes.

    Parameters
    ----------
    table
        Output of :func:`pergene_table`.

    Returns
    -------
    polars.DataFrame
        Run columns, then ``gene_mse_median``, ``gene_mse_q10`` and ``gene_mse_q90`` (over
        genes with masked positions), ``gene_mse_cv`` (standard deviation over mean),
        ``genes_for_half`` (fewest genes whose squared errors make half the run's total),
        ``top_genes`` (the :data:`TOP_GENES` largest contributors with their shares) and, for
        likelihood objectives, ``gene_bits_median`` and ``top_bits_genes`` (the largest
        contributors to the summed NLL; None for ``mse``). Bits and squared error can rank
        genes differently: a highly expressed gene with a wide count distribution carries many
        bits but little error on the log1p scale.
    """
    rows = []
    for _, run in table.group_by("run_id", maintain_order=True):
        scored = run.filter(pl.col("n_masked") > 0).sort("error_rank")
        mse = scored["mse"].to_numpy()
        shares = scored["error_share"].to_numpy()
        top = _top(scored["gene"], shares)
        bits = scored["bits"].drop_nulls() if "bits" in scored.columns else pl.Series([])
        rows.append({
            **{name: run[name][0] for name in RUN_COLUMNS},
            "gene_mse_median": float(np.median(mse)),
            "gene_mse_q10": float(np.quantile(mse, 0.1)),
            "gene_mse_q90": float(np.quantile(mse, 0.9)),
            "gene_mse_cv": float(mse.std() / mse.mean()),
            "genes_for_half": int(np.searchsorted(np.cumsum(shares), 0.5) + 1),
            "top_genes": top,
            "gene_bits_median": float(bits.median()) if bits.len() else math.nan,
            "top_bits_genes": _top_bits(scored) if bits.len() else None,
        })
    return pl.DataFrame(rows)


def _top(genes: pl.Series, shares: np.ndarray) -> str:
    """The first :data:`TOP_GENES` genes with their shares, in the given order."""
    return ", ".join(f"{gene} {share:.1%}" for gene, share in
                     zip(genes[:TOP_GENES], shares[:TOP_GENES]))


def _top_bits(scored: pl.DataFrame) -> str:
    """The genes carrying most of a likelihood run's summed NLL, with their shares."""
    ranked = scored.sort("nll_nats_sum", descending=True)
    nll = ranked["nll_nats_sum"].to_numpy()
    return _top(ranked["gene"], nll / nll.sum())
