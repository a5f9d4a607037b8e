"""Read raw UMI counts from files: an ``.h5ad`` file or a 10x Genomics directory.

Every reader returns an :class:`~anndata.AnnData` with raw counts as a float32 CSR ``X``
(integer values, as scanpy's 10x reader returns them), unique gene names, the gene IDs in
``var["gene_ids"]`` when the source has them, and its provenance in ``uns["scalelib"]``
(``source``, ``path``, where the counts came from), which :func:`build_dataset` copies into the
dataset manifest. :func:`check_counts` is shared with the other sources (Census, simulator).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from scalelib.errors import ScalelibError, read_failures

TENX_MATRIX = ("matrix.mtx.gz", "matrix.mtx")
OBS_TABLE = "obs.tsv"
CHECK_BLOCK = 10_000_000  # values checked at a time, so the check needs little extra memory


def read_counts(path: str | Path) -> ad.AnnData:
    """Read raw UMI counts from an ``.h5ad`` file or a 10x directory.

    Parameters
    ----------
    path
        An ``.h5ad`` file whose raw counts are in ``X``, ``layers["counts"]`` or ``.raw``
        (the first of these that holds non-negative integers is used, and the choice is
        recorded in ``uns["scalelib"]["counts_from"]``), or a directory in the 10x layout
        (``matrix.mtx.gz``, ``features.tsv.gz``, ``barcodes.tsv.gz``) with an optional
        ``obs.tsv`` of per-cell metadata whose first column holds the barcodes.

    Returns
    -------
    anndata.AnnData
        Counts in a float32 CSR ``X``, metadata in ``obs``, gene IDs in ``var["gene_ids"]``
        and the provenance in ``uns["scalelib"]``.
    """
    path = Path(path)
    if not path.exists():
        raise ScalelibError(f"no file or directory at {path}; check the path")
    if path.is_dir():
        if not any((path / name).exists() for name in TENX_MATRIX):
            raise ScalelibError(
                f"{path} is a directory without matrix.mtx(.gz); point to a 10x directory "
                "(matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz) or to an .h5ad file"
            )
        return _read_10x(path)
    if path.suffix == ".h5ad":
        return _read_h5ad(path)
    raise ScalelibError(
        f"unknown format of {path}; give an .h5ad file or a 10x directory "
        "(matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz)"
    )


def check_counts(matrix: np.ndarray | sparse.spmatrix, where: str) -> None:
    """Raise :class:`ScalelibError` unless ``matrix`` holds finite non-negative integers.

    Parameters
    ----------
    matrix
        A dense array or scipy sparse matrix of counts.
    where
        What the matrix is, for the message (``"X of data.h5ad"``).
    """
    values = matrix.data if sparse.issparse(matrix) else np.asarray(matrix).ravel()
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise ScalelibError(f"{where} holds {values.dtype} values; raw counts must be numbers")
    for start in range(0, values.size, CHECK_BLOCK):
        _check_block(values[start:start + CHECK_BLOCK], where)


def _check_block(values: np.ndarray, where: str) -> None:
    fix = "give raw UMI counts (non-negative integers), not normalised or scaled values"
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise ScalelibError(f"{where} holds NaN or infinite values; {fix}")
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise ScalelibError(
                f"{where} holds non-integer values (e.g. {fractional[0]:.4g}), as normalised "
                f"or log-transformed data do; {fix}"
            )
    if values.size and values.min() < 0:
        raise ScalelibError(f"{where} holds negative values (min {values.min():.4g}); {fix}")


def check_names(adata: ad.AnnData, where: str) -> None:
    """Raise :class:`ScalelibError` when gene names or cell IDs repeat (counts handed over in
    memory; the file readers first apply :func:`unique_gene_names`)."""
    for names, what, fix in (
        (adata.var_names, "gene names", "adata.var_names_make_unique()"),
        (adata.obs_names, "cell IDs", "adata.obs_names_make_unique()"),
    ):
        duplicated = names[names.duplicated()].unique()
        if len(duplicated):
            examples = ", ".join(map(repr, duplicated[:3]))
            raise ScalelibError(
                f"{where} has {len(duplicated)} duplicate {what} (e.g. {examples}); "
                f"make them unique ({fix}) and save again"
            )


def unique_gene_names(adata: ad.AnnData, where: str) -> None:
    """The one rule of every file source on repeated gene names: made unique as scanpy's 10x
    reader does (``GENE``, ``GENE-1``, ...), with a warning and their number recorded in
    ``uns["scalelib"]["renamed_duplicate_genes"]`` (gene IDs, not names, identify genes);
    repeated cell IDs are still refused (:func:`check_names`).

    Parameters
    ----------
    adata
        Counts just read from a file; changed in place.
    where
        The source, for messages.
    """
    repeated = int(adata.var_names.duplicated().sum())
    if repeated:
        examples = ", ".join(map(repr, adata.var_names[adata.var_names.duplicated()].unique()[:3]))
        warnings.warn(f"{where}: {repeated} repeated gene name(s) (e.g. {examples}) renamed "
                      "NAME-1, NAME-2, ... to make them unique", stacklevel=3)
        adata.var_names_make_unique()
        adata.uns.setdefault("scalelib", {})["renamed_duplicate_genes"] = repeated
    check_names(adata, where)


def _read_h5ad(path: Path) -> ad.AnnData:
    with read_failures(path, "check the file (a truncated copy?) or write it again"):
        adata = ad.read_h5ad(path)
    problems = []
    for location in ("X", "layers['counts']", "raw"):
        counts = _counts_at(adata, location)
        if counts is None:
            problems.append(f"{location}: absent")
            continue
        try:
            check_counts(counts.X, f"{location} of {path}")
        except ScalelibError as error:
            problems.append(str(error))
            continue
        counts.uns["scalelib"] = {"source": "h5ad", "path": str(path), "counts_from": location}
        unique_gene_names(counts, str(path))
        return counts
    raise ScalelibError(
        f"no raw counts in {path}: " + "; ".join(problems)
        + ". Store raw UMI counts in X, layers['counts'] or .raw"
    )


def _counts_at(adata: ad.AnnData, location: str) -> ad.AnnData | None:
    """A lean AnnData with the matrix at ``location`` as ``X`` (None when absent)."""
    if location == "X":
        matrix, var = adata.X, adata.var
    elif location == "raw":
        if adata.raw is None:
            return None
        matrix, var = adata.raw.X, adata.raw.var
    else:
        if "counts" not in adata.layers:
            return None
        matrix, var = adata.layers["counts"], adata.var
    if matrix is None:
        return None
    return ad.AnnData(X=_as_csr(matrix), obs=adata.obs.copy(), var=var.copy())


def _read_10x(path: Path) -> ad.AnnData:
    import scanpy as sc

    with read_failures(path, "check that matrix.mtx(.gz), features.tsv(.gz) and "
                       "barcodes.tsv(.gz) are complete (a truncated download?)"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Variable names are not unique")
        adata = sc.read_10x_mtx(path, var_names="gene_symbols", make_unique=False)
    adata.X = _as_csr(adata.X)
    check_counts(adata.X, f"matrix.mtx of {path}")
    provenance = {"source": "10x", "path": str(path), "counts_from": "matrix.mtx"}
    if (path / OBS_TABLE).exists():
        adata.obs = _join_obs(adata.obs, path / OBS_TABLE)
        provenance["obs"] = OBS_TABLE
    adata.uns["scalelib"] = provenance
    unique_gene_names(adata, str(path))
    return adata


def _join_obs(obs: pd.DataFrame, table_path: Path) -> pd.DataFrame:
    """Join a tab-separated table keyed by barcode (first column) onto ``obs``."""
    table = read_obs_table(table_path)
    matched = obs.index.isin(table.index)
    if not matched.any():
        raise ScalelibError(
            f"no barcode of the matrix appears in {table_path}; its first column must hold "
            "the barcodes of barcodes.tsv.gz"
        )
    return obs.join(table, how="left")


def read_obs_table(path: str | Path) -> pd.DataFrame:
    """Read per-cell metadata (tab-separated, barcodes in the first column).

    Columns of numbers with a fractional part (coordinates, scores) become floats; every other
    column, integer-looking IDs such as donor ``1016`` included, stays a string label.
    """
    table = pd.read_csv(path, sep="\t", index_col=0, dtype=str)
    table.index = table.index.astype(str)
    if table.index.duplicated().any():
        raise ScalelibError(f"{path} lists some barcodes twice; keep one row per barcode")
    for column in table.columns:
        numbers = pd.to_numeric(table[column], errors="coerce")
        parsed = numbers.notna().sum() == table[column].notna().sum()
        if parsed and (numbers.dropna() % 1 != 0).any():
            table[column] = numbers
        else:
            table[column] = table[column].astype("category")
    return table


def _as_csr(matrix: np.ndarray | sparse.spmatrix) -> sparse.csr_matrix:
    """Counts as a float32 CSR matrix (a copy only when the type or format differs)."""
    if sparse.issparse(matrix):
        return sparse.csr_matrix(matrix, dtype=np.float32)
    return sparse.csr_matrix(np.asarray(matrix), dtype=np.float32)
