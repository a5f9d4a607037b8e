"""Highly variable genes by the seurat_v3 recipe, computed in two streaming passes over counts.

Why not call ``scanpy.pp.highly_variable_genes(flavor="seurat_v3")``: it needs the counts of
every training cell over every gene in memory at once (and casts them to float64 in places),
which for 180,000 Census cells over ~60,000 genes means several GB. scanpy has no streaming
variant, so this module computes the same statistics from blocks of rows:

1. pass 1 accumulates, per gene, the sum and the sum of squares of the counts, both in
   float64 (exact for integer-valued terms while a sum stays below 2^53). Each square is
   first taken in the counts' dtype (float32 for :class:`~scalelib.data.counts.CountRows`
   blocks, as in scanpy), so it is exact for counts up to 4096 (squares up to 2^24); a larger
   count's square may be rounded to float32's 24-bit significand (relative error up to
   2^-24) before it is added. Means and unbiased variances follow;
2. the loess fit of ``log10(variance)`` on ``log10(mean)`` (scikit-misc, ``span=0.3``,
   ``degree=2``) over the genes with non-zero variance gives the expected standard deviation
   ``sd_g``; counts are clipped at ``mean_g + sd_g * sqrt(n_cells)``;
3. pass 2 accumulates the sum and the sum of squares of the clipped counts; the normalised
   variance is ``(n mean^2 + sum(clip^2) - 2 mean sum(clip)) / ((n - 1) sd^2)``;
4. genes are ranked by normalised variance, most variable first.

Each step uses the same arithmetic as scanpy 1.10-1.11 (float32 squares of float32 counts
in pass 1, the same formulas, sums accumulated in row order with :func:`numpy.add.at`, the same
double argsort), so the selected genes are scanpy's: tests check it on pbmc3k and kang8.
Memory: the per-gene vectors and one block of rows, whatever the number of cells.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from scipy import sparse

from scalelib.errors import ScalelibError

SPAN = 0.3
HVG_COLUMNS = ("means", "variances", "variances_norm", "highly_variable_rank")


def seurat_v3(
    blocks: Callable[[], Iterable[sparse.csr_matrix]], gene_names: pd.Index, n_top_genes: int,
    span: float = SPAN,
) -> pd.DataFrame:
    """seurat_v3 statistics of every gene from blocks of raw counts (two passes).

    Parameters
    ----------
    blocks
        Called once per pass; returns the cells' counts as CSR blocks, always in the same
        order (cells x all genes, integer values).
    gene_names
        Gene names (the index of the result).
    n_top_genes
        Number of genes selected.
    span
        Loess span (scanpy's default 0.3).

    Returns
    -------
    pandas.DataFrame
        Indexed by gene: ``means``, ``variances``, ``variances_norm``,
        ``highly_variable_rank`` (0 = most variable; NaN outside the top ``n_top_genes``),
        ``highly_variable`` and ``n_cells_detected``.
    """
    n_genes = len(gene_names)
    sums, squares, detected, n_cells = _moments(blocks(), n_genes)
    _check_request(n_top_genes, int((detected > 0).sum()), n_genes, n_cells)
    means = sums / n_cells
    variances = (squares / n_cells - means**2) * (n_cells / (n_cells - 1))
    reg_std = np.sqrt(10 ** _loess_log_variance(means, variances, span))
    clip = reg_std * np.sqrt(n_cells) + means
    clipped_sums, clipped_squares = _clipped_moments(blocks(), clip, n_genes)
    norm = (1 / ((n_cells - 1) * np.square(reg_std))) * (
        (n_cells * np.square(means)) + clipped_squares - 2 * clipped_sums * means
    )
    rank = np.argsort(np.argsort(-norm[None, :], axis=1), axis=1)[0]
    top = rank < n_top_genes
    return pd.DataFrame({
        "means": means,
        "variances": variances,
        "variances_norm": norm,
        "highly_variable_rank": np.where(top, rank, np.nan),
        "highly_variable": top,
        "n_cells_detected": detected,
    }, index=pd.Index(gene_names, name=None))


def selected_genes(hvg: pd.DataFrame) -> pd.Index:
    """The selected genes in rank order (most variable first).

    Parameters
    ----------
    hvg
        Result of :func:`seurat_v3` (needs ``highly_variable`` and ``highly_variable_rank``).

    Returns
    -------
    pandas.Index
        Names of the genes with ``highly_variable`` set, sorted by rank.
    """
    chosen = hvg[hvg["highly_variable"]]
    return chosen.index[np.argsort(chosen["highly_variable_rank"].to_numpy())]


def _moments(blocks: Iterable[sparse.csr_matrix], n_genes: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-gene sums, sums of squares and detection counts, and the number of cells."""
    sums = np.zeros(n_genes)
    squares = np.zeros(n_genes)
    detected = np.zeros(n_genes, dtype=np.int64)
    n_cells = 0
    for block in blocks:
        data = np.asarray(block.data)
        # float64 terms keep numpy.add.at on its fast path; squares are taken in the counts'
        # own dtype first (float32), as scanpy does, so the sums match scanpy's bit for bit
        np.add.at(sums, block.indices, data.astype(np.float64))
        np.add.at(squares, block.indices, (data * data).astype(np.float64))
        detected += np.bincount(block.indices[data != 0], minlength=n_genes)
        n_cells += block.shape[0]
    return sums, squares, detected, n_cells


def _clipped_moments(blocks: Iterable[sparse.csr_matrix], clip: np.ndarray, n_genes: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene sums and sums of squares of ``min(count, clip)`` over the stored entries."""
    sums = np.zeros(n_genes)
    squares = np.zeros(n_genes)
    for block in blocks:
        values = np.minimum(np.asarray(block.data, dtype=np.float64), clip[block.indices])
        np.add.at(squares, block.indices, values**2)
        np.add.at(sums, block.indices, values)
    return sums, squares


def _loess_log_variance(means: np.ndarray, variances: np.ndarray, span: float) -> np.ndarray:
    """Loess fit of log10 variance on log10 mean; 0 for genes with no variance."""
    from skmisc.loess import loess

    fitted = np.zeros(len(means))
    varying = variances > 0
    model = loess(np.log10(means[varying]), np.log10(variances[varying]), span=span, degree=2)
    try:
        model.fit()
    except ValueError as error:  # scanpy fails the same way on such data
        raise ScalelibError(
            f"the seurat_v3 loess fit failed on {int(varying.sum()):,} varying genes "
            f"({error}); draw more cells"
        ) from None
    fitted[varying] = model.outputs.fitted_values
    return fitted


def _check_request(n_top_genes: int, detected: int, n_genes: int, n_cells: int) -> None:
    if n_cells < 2:
        raise ScalelibError(f"{n_cells} training cell(s) are too few to rank genes; "
                            "draw more cells")
    if detected == 0:
        raise ScalelibError(f"none of the {n_genes:,} genes has counts in the {n_cells:,} "
                            "training cells; check that the input holds counts and genes")
    if not 1 <= n_top_genes <= detected:
        raise ScalelibError(
            f"asked for {n_top_genes:,} genes but only {detected:,} of {n_genes:,} genes have "
            f"counts in the {n_cells:,} training cells; ask for between 1 and {detected:,} genes"
        )
