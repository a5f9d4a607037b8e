"""The results table: one row per training run or baseline, as parquet, appended atomically.

Every stage after training reads this table (and the fit JSON), never the training code.

On disk each row carries a SHA-256 of its values (column ``row_sha256``, checked and dropped
when read), so a damaged file that still parses is caught rather than read with changed
values. Appends hold an exclusive lock (``.results.parquet.lock`` beside the table) for the
whole read-modify-write, so concurrent writers lose no rows; readers need no lock because a
write replaces the file atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import polars as pl

from scalelib.atomic import atomic_path
from scalelib.errors import ScalelibError, read_failures
from scalelib.fitrules import TRANSFORMER
from scalelib.locks import file_lock

# Column -> (polars dtype, meaning). The order here is the column order on disk.
RESULTS_SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "run_id": (pl.Utf8, "hash of everything that determines the run"),
    "regime": (pl.Utf8, "data regime label (rich, limited, custom)"),
    "source": (pl.Utf8, "where the cells came from (simulator, census, a path)"),
    "dataset": (pl.Utf8, "dataset directory or label"),
    "dataset_fingerprint": (pl.Utf8, "content hash of the dataset"),
    "n_genes": (pl.Int64, "vocabulary size V"),
    "n_train_cells": (pl.Int64, "training cells available to the run (D)"),
    "n_val_cells": (pl.Int64, "validation cells"),
    "n_test_cells": (pl.Int64, "test cells"),
    "size": (pl.Utf8, "model size name"),
    "d_model": (pl.Int64, "width"),
    "n_layers": (pl.Int64, "encoder blocks"),
    "n_heads": (pl.Int64, "attention heads"),
    "ff_mult": (pl.Int64, "feed-forward multiple"),
    "params": (pl.Int64, "trainable parameters P, embeddings included"),
    "flops_per_cell": (pl.Float64, "training FLOPs per cell (model.training_flops_per_cell)"),
    "seed": (pl.Int64, "seed of initialisation, masks and batch order"),
    "batch_size": (pl.Int64, "cells per optimiser step"),
    "lr": (pl.Float64, "peak learning rate of this run (after any width scaling)"),
    "schedule": (pl.Utf8, "learning-rate schedule"),
    "mask_rate": (pl.Float64, "fraction of genes masked"),
    "budget_steps": (pl.Int64, "optimiser steps the budget allowed"),
    "steps": (pl.Int64, "optimiser steps taken"),
    "cells_seen": (pl.Int64, "training cells processed (with repeats)"),
    "tokens_seen": (pl.Int64, "gene tokens processed (cells_seen x V)"),
    "masked_tokens_seen": (pl.Int64, "masked gene tokens scored in training"),
    "train_flops": (pl.Float64, "cells_seen x flops_per_cell"),
    "best_step": (pl.Int64, "optimiser step of the best validation score"),
    "best_val_mse": (pl.Float64, "validation MSE over masked genes at the best checkpoint"),
    "test_mse": (pl.Float64, "test MSE over masked genes at the best checkpoint"),
    "baseline_val_mse": (pl.Float64, "per-gene training-mean predictor, validation"),
    "baseline_test_mse": (pl.Float64, "per-gene training-mean predictor, test"),
    "final_train_loss": (pl.Float64, "mean training loss over the last evaluation interval"),
    "stopped_early": (pl.Boolean, "early stopping ended the run"),
    "budget_mode": (pl.Utf8, "fixed (the whole budget) or converge (until the rule held)"),
    "converged": (pl.Boolean, ("the convergence rule (fixed budget) or the cool-down test "
                               "(converge mode) held (scalelib.convergence)")),
    "val_improvement": (pl.Float64, ("fixed budget: relative improvement of the best validation "
                        "score over the last half of evaluations; converge mode: of the last "
                        "cool-down at twice the steps over the one before (NaN before one)")),
    "wall_time_s": (pl.Float64, "training wall time in seconds"),
    "device": (pl.Utf8, "torch device"),
    "dtype": (pl.Utf8, "matrix-product precision (fp32 or bf16 autocast)"),
    "torch_version": (pl.Utf8, "torch version"),
    "code_version": (pl.Utf8, "scalelib version and git commit"),
    "checkpoint": (pl.Utf8, "path of the best-validation checkpoint"),
    "finished_at": (pl.Utf8, "UTC time the run finished (ISO 8601)"),
    "status": (pl.Utf8, "ok, or failed: <reason>"),
    "model_family": (pl.Utf8, "transformer, or a baseline: mean, pca, ridge or knn"),
    "setting": (pl.Utf8, "a baseline's setting chosen on its inner split (k=16, lambda=0.1)"),
    "world_size": (pl.Int64, "processes that trained the run data-parallel (torchrun), 1 alone"),
    "objective": (pl.Utf8, ("training objective: mse, gaussian, nb or nb_gene (scalelib.objectives); "
                  "baselines mse")),
    "best_val_bits": (pl.Float64, ("validation NLL per masked gene in bits at the best checkpoint "
                      "(likelihood objectives; null for mse)")),
    "test_bits": (pl.Float64, "test NLL per masked gene in bits (likelihood objectives)"),
    "subsample": (pl.Utf8, ("how the nested training subset was drawn: random, rebalanced or "
                  "geosketch (scalelib.data.subsample)")),
}

RESULT_COLUMNS = tuple(RESULTS_SCHEMA)
# Columns added after tables were first written, with the value an older table implies.
LATER_COLUMNS: dict[str, object] = {"budget_mode": "fixed", "converged": None,
                                    "val_improvement": None, "model_family": TRANSFORMER,
                                    "setting": None, "world_size": 1, "objective": "mse",
                                    "best_val_bits": None, "test_bits": None,
                                    "subsample": "random"}
CHECKSUM_COLUMN = "row_sha256"


def empty_results() -> pl.DataFrame:
    """An empty results table with the full schema."""
    return pl.DataFrame(schema={name: dtype for name, (dtype, _) in RESULTS_SCHEMA.items()})


def rows_to_frame(rows: list[dict]) -> pl.DataFrame:
    """Build a results table from row dictionaries, checking every column is present.

    Parameters
    ----------
    rows
        One dictionary per run, keyed by exactly the columns of ``RESULTS_SCHEMA``.

    Returns
    -------
    polars.DataFrame
        The rows in schema order and dtypes.

    Raises
    ------
    ValueError
        A row lacks a column or has a column the schema does not know.
    """
    for row in rows:
        missing = [name for name in RESULT_COLUMNS if name not in row]
        extra = [name for name in row if name not in RESULTS_SCHEMA]
        if missing or extra:
            raise ValueError(f"results row mismatch: missing {missing}, unexpected {extra}")
    schema = {name: dtype for name, (dtype, _) in RESULTS_SCHEMA.items()}
    return pl.DataFrame(rows, schema=schema, orient="row")


def read_results(path: str | Path) -> pl.DataFrame:
    """Read and verify a results table (an empty table when the file does not exist yet).

    Parameters
    ----------
    path
        Parquet file written by :func:`write_results`.

    Returns
    -------
    polars.DataFrame
        The schema's columns, in schema order (extra columns on disk are dropped; columns
        of ``LATER_COLUMNS`` missing from an older table read as their fill value).

    Raises
    ------
    ScalelibError
        The file cannot be read (whatever the reader raised, Rust panics included), lacks a
        schema column, has a column of the wrong type, or a row does not match its checksum.
    """
    path = Path(path)
    if not path.exists():
        return empty_results()
    fix = _repair_advice(path)
    with read_failures(path, fix):
        table = _parse_parquet(path.read_bytes())  # one open: no torn reads
    if CHECKSUM_COLUMN in table.columns:  # checked on the columns as stored
        damaged = _rows_failing_checksum(table)
        if damaged:
            raise ScalelibError(f"{path} is damaged: {damaged} row(s) do not match their "
                                f"checksum; {fix}")
    table = table.with_columns(
        pl.lit(value, dtype=RESULTS_SCHEMA[name][0]).alias(name)
        for name, value in LATER_COLUMNS.items() if name not in table.columns)
    missing = [name for name in RESULT_COLUMNS if name not in table.columns]
    if missing and CHECKSUM_COLUMN in table.columns:
        raise ScalelibError(f"{path} is damaged (missing {', '.join(missing[:5])}); {fix}")
    if missing:
        raise ScalelibError(
            f"{path} is not a scalelib results table (missing {', '.join(missing[:5])}); "
            "point to the results.parquet a sweep wrote"
        )
    wrong = [name for name in RESULT_COLUMNS
             if table.schema[name] not in (RESULTS_SCHEMA[name][0], pl.Null)]
    if wrong:
        raise ScalelibError(f"{path} has column(s) {', '.join(wrong[:5])} of the wrong type; {fix}")
    return table.select(pl.col(name).cast(RESULTS_SCHEMA[name][0]) for name in RESULT_COLUMNS)


def _parse_parquet(data: bytes) -> pl.DataFrame:
    # pyarrow, not polars: on damaged bytes polars' reader can abort the process (a failed
    # allocation in Rust), which no handler catches; pyarrow raises, and a full validation
    # catches what would make the conversion panic (invalid UTF-8).
    import pyarrow.parquet as pq

    arrow = pq.read_table(io.BytesIO(data))
    arrow.validate(full=True)
    return pl.from_arrow(arrow)


def _repair_advice(path: Path) -> str:
    if path.name == "results.parquet" and (path.parent / "runs").is_dir():
        return (f"rebuild it from its run directories with "
                f"`scalelib sweep --rebuild-table --out {path.parent}`")
    return "restore it from a copy, or rerun the sweep that wrote it"


def row_checksums(table: pl.DataFrame) -> list[str]:
    """SHA-256 of each row's column names and values (every column but ``row_sha256``).

    Parameters
    ----------
    table
        Any table; values are hashed as JSON (floats in their shortest exact form).
    """
    columns = [name for name in table.columns if name != CHECKSUM_COLUMN]
    return [
        hashlib.sha256(json.dumps([columns, list(row)], default=str).encode()).hexdigest()
        for row in table.select(columns).iter_rows()
    ]


def _rows_failing_checksum(table: pl.DataFrame) -> int:
    stored = table[CHECKSUM_COLUMN].to_list()
    return sum(a != b for a, b in zip(stored, row_checksums(table), strict=True))


def write_results(table: pl.DataFrame, path: str | Path) -> Path:
    """Write a results table atomically (temporary file, then rename) with row checksums.

    Parameters
    ----------
    table
        Results table holding at least the schema's columns; only those are written, followed
        by ``row_sha256``.
    path
        Destination parquet file.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    table = table.select(pl.col(name).cast(RESULTS_SCHEMA[name][0]) for name in RESULT_COLUMNS)
    table = table.with_columns(pl.Series(CHECKSUM_COLUMN, row_checksums(table), dtype=pl.Utf8))
    with atomic_path(path) as temporary:
        table.write_parquet(temporary)
    return path


def table_lock_path(path: str | Path) -> Path:
    """The lock file that serialises writers of the results table at ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def append_results(rows: list[dict], path: str | Path) -> pl.DataFrame:
    """Append rows to the table at ``path``, replacing earlier rows of the same run_id.

    The read and the write happen under the table's lock, so appends by concurrent
    processes are serialised and none is lost.

    Parameters
    ----------
    rows
        New result rows, each with every schema column (see :func:`rows_to_frame`).
    path
        Results parquet file; created when it does not exist.

    Returns
    -------
    polars.DataFrame
        The whole table as written: kept earlier rows, then the new rows.
    """
    new = rows_to_frame(rows)
    with file_lock(table_lock_path(path)):
        existing = read_results(path)
        kept = existing.filter(~pl.col("run_id").is_in(new["run_id"].to_list()))
        table = pl.concat([kept, new], how="vertical")
        write_results(table, path)
    return table


def finished_run_ids(path: str | Path) -> set[str]:
    """IDs of runs in the table that finished with status ``ok``.

    Parameters
    ----------
    path
        Results parquet file (a missing file gives an empty set).
    """
    table = read_results(path)
    return set(table.filter(pl.col("status") == "ok")["run_id"].to_list())


def print_table(table: pl.DataFrame) -> None:
    """Print a table whole, for a terminal: every row and column, 4 decimals, no dtypes.

    Parameters
    ----------
    table
        The rows to show (e.g. a selection of results columns).
    """
    with pl.Config(tbl_rows=1000, tbl_cols=40, float_precision=4, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, tbl_width_chars=200):
        print(table)
