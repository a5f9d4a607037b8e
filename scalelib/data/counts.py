"""Raw counts of the drawn cells as compressed sparse rows, in memory or spilled to disk.

The dataset builder makes three passes over the raw counts of the drawn cells (gene moments,
clipped moments for seurat_v3, then the selected genes). :class:`CountRows` serves those passes
in blocks of consecutive rows whatever holds the counts:

- counts already in memory (an ``.h5ad`` or 10x directory read with :func:`read_counts`, the
  simulator) are wrapped without a copy;
- counts streamed from a SOMA store (the Census) are written once, chunk by chunk, with
  :class:`SpillWriter` to three flat files in a temporary directory and read back block by
  block (:class:`SpilledRows`), so the network is read once and memory holds one block.

Spill layout (removed when the build ends): ``data.f32`` (float32 counts), ``indices.i32``
(int32 gene positions), ``indptr.i64`` (int64 row offsets, written by :meth:`SpillWriter.finish`);
8 bytes per non-zero plus 8 per cell.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import sparse

from scalelib.errors import ScalelibError

BLOCK_NNZ = 2_000_000  # non-zeros per block: ~100 MB of temporaries in the passes
BLOCK_ROWS = 16_384


class CountRows(ABC):
    """Cells x genes raw counts served as CSR blocks of consecutive rows.

    Subclasses say where the entries live (:meth:`entries`); ``indptr`` (``n_cells + 1``
    offsets, int64) and ``n_genes`` are always in memory.
    """

    def __init__(self, indptr: np.ndarray, n_genes: int) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.n_genes = n_genes

    @property
    def n_cells(self) -> int:
        """Number of cells (rows)."""
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.indptr[-1])

    @abstractmethod
    def entries(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 counts and gene positions of entries ``lo:hi``.

        Parameters
        ----------
        lo, hi
            Start and stop offsets into the stored entries (as in ``indptr``).

        Returns
        -------
        data, indices : numpy.ndarray
            ``hi - lo`` float32 counts and their gene positions.
        """

    def block(self, start: int, stop: int) -> sparse.csr_matrix:
        """Rows ``start:stop`` as a CSR matrix.

        Parameters
        ----------
        start, stop
            First row and one past the last row (``0 <= start <= stop <= n_cells``).

        Returns
        -------
        scipy.sparse.csr_matrix
            ``(stop - start) x n_genes`` float32 counts (may share memory with the store).
        """
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        data, indices = self.entries(lo, hi)
        return sparse.csr_matrix((data, indices, self.indptr[start:stop + 1] - lo),
                                 shape=(stop - start, self.n_genes), copy=False)

    def blocks(self, rows: np.ndarray | None = None, max_nnz: int = BLOCK_NNZ,
               max_rows: int = BLOCK_ROWS) -> Iterator[sparse.csr_matrix]:
        """Consecutive blocks of rows, in order, optionally keeping only the masked rows.

        Parameters
        ----------
        rows
            Boolean mask over the cells (all cells when None).
        max_nnz, max_rows
            Bounds on the stored entries and rows of a block (a single row may exceed
            ``max_nnz``).

        Yields
        ------
        scipy.sparse.csr_matrix
            Blocks of consecutive rows over all genes; with ``rows``, only the kept rows of
            each block (blocks with none are skipped).
        """
        for start, stop in _row_ranges(self.indptr, max_nnz, max_rows):
            keep = None if rows is None else rows[start:stop]
            if keep is not None and not keep.any():
                continue
            block = self.block(start, stop)
            yield block if keep is None or keep.all() else block[keep]


class CsrRows(CountRows):
    """Counts held in memory as CSR arrays.

    Parameters
    ----------
    data, indices, indptr
        The CSR arrays (float32 counts, gene positions, row offsets).
    n_genes
        Number of genes (columns).
    """

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                 n_genes: int) -> None:
        super().__init__(indptr, n_genes)
        self.data = data
        self.indices = indices

    @classmethod
    def from_matrix(cls, matrix: np.ndarray | sparse.spmatrix | sparse.sparray) -> CsrRows:
        """Wrap a scipy sparse or dense matrix as float32 CSR (no copy when it already is).

        Parameters
        ----------
        matrix
            Cells x genes raw counts. Duplicate entries are summed and indices sorted (on a
            copy) when the CSR form is not canonical.
        """
        csr = sparse.csr_matrix(matrix, dtype=np.float32)
        if not csr.has_canonical_format:
            csr = csr.copy()
            csr.sum_duplicates()
        return cls(csr.data, csr.indices, csr.indptr, csr.shape[1])

    def entries(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of the entries ``lo:hi``.

        Parameters
        ----------
        lo, hi
            Start and stop offsets into the stored entries.
        """
        return self.data[lo:hi], self.indices[lo:hi]


class SpilledRows(CountRows):
    """Counts in the spill files of :class:`SpillWriter`, read block by block.

    Blocks are read with plain file reads (not memory maps), so the process holds one block
    at a time whatever the size of the spill; the operating system's page cache does the rest.
    """

    def __init__(self, directory: str | Path, indptr: np.ndarray, n_genes: int) -> None:
        super().__init__(indptr, n_genes)
        self.directory = Path(directory)

    def entries(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Entries ``lo:hi`` read from ``data.f32`` and ``indices.i32``.

        Parameters
        ----------
        lo, hi
            Start and stop offsets into the stored entries.
        """
        return (_read(self.directory / "data.f32", np.float32, lo, hi),
                _read(self.directory / "indices.i32", np.int32, lo, hi))


def _read(path: Path, dtype: npt.DTypeLike, lo: int, hi: int) -> np.ndarray:
    if hi <= lo:
        return np.zeros(0, dtype=dtype)
    return np.fromfile(path, dtype=dtype, count=hi - lo, offset=lo * np.dtype(dtype).itemsize)


def _row_ranges(indptr: np.ndarray, max_nnz: int, max_rows: int) -> list[tuple[int, int]]:
    """Split rows into consecutive ranges of at most ``max_rows`` rows and ~``max_nnz`` entries."""
    ranges, start, n = [], 0, len(indptr) - 1
    while start < n:
        limit = int(np.searchsorted(indptr, indptr[start] + max_nnz, side="right")) - 1
        stop = min(max(limit, start + 1), start + max_rows, n)
        ranges.append((start, stop))
        start = stop
    return ranges


class SpillWriter:
    """Append CSR chunks of raw counts to flat files; :meth:`finish` maps them back.

    Parameters
    ----------
    directory
        An empty directory for the three files (see the module docstring).
    n_genes
        Number of genes every chunk has.
    """

    def __init__(self, directory: str | Path, n_genes: int) -> None:
        self.directory = Path(directory)
        self.n_genes = n_genes
        self._offsets = [np.zeros(1, dtype=np.int64)]
        self._nnz = 0
        self._data = open(self.directory / "data.f32", "wb")  # noqa: SIM115 (closed in finish)
        self._indices = open(self.directory / "indices.i32", "wb")  # noqa: SIM115

    def append(self, chunk: sparse.csr_matrix) -> None:
        """Write the rows of ``chunk`` (float32 counts over all ``n_genes`` genes).

        Parameters
        ----------
        chunk
            Rows to append after those already written; converted to float32 and duplicate
            entries summed.

        Raises
        ------
        ScalelibError
            ``chunk`` does not have ``n_genes`` columns.
        """
        if chunk.shape[1] != self.n_genes:
            raise ScalelibError(f"a chunk has {chunk.shape[1]} genes, expected {self.n_genes}")
        chunk = sparse.csr_matrix(chunk, dtype=np.float32)
        chunk.sum_duplicates()
        np.ascontiguousarray(chunk.data, dtype=np.float32).tofile(self._data)
        np.ascontiguousarray(chunk.indices, dtype=np.int32).tofile(self._indices)
        self._offsets.append(self._nnz + chunk.indptr[1:].astype(np.int64))
        self._nnz += chunk.nnz

    def finish(self) -> SpilledRows:
        """Close the files and return the spilled rows."""
        self._data.close()
        self._indices.close()
        indptr = np.concatenate(self._offsets)
        indptr.tofile(self.directory / "indptr.i64")
        return SpilledRows(self.directory, indptr, self.n_genes)

    def close(self) -> None:
        """Close the files without mapping them (after a failure)."""
        self._data.close()
        self._indices.close()
