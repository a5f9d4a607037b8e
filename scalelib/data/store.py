"""The on-disk dataset that training reads: a directory of four files and an optional fifth.

```
DIR/
  manifest.json   provenance: source, query (Census version, obs filter), seed, versions,
                  splits, nested training sizes, gene list (names and IDs), hashes
  X.npy           float32 (n_cells, n_genes), C order: normalised (total 1e4 over the selected
                  genes) log1p expression, genes in vocabulary order; a plain .npy so numpy
                  memory-maps it (``np.load(path, mmap_mode="r")``) and a training batch reads
                  only its own rows
  obs.parquet     one row per cell, in the row order of X: cell_id, split
                  ("train" | "val" | "test"), train_rank (position in the seeded training
                  order, -1 outside train; the first D ranks form the nested subset of size D),
                  train_rank_<strategy> for each further subsample strategy the dataset was
                  built with (rebalanced, geosketch: scalelib.data.subsample),
                  and whatever metadata the source had (cell_type, donor_id, dataset_id, ...)
  var.parquet     one row per gene in vocabulary order: gene_id, gene_name, and the
                  highly-variable-gene statistics when known (means, variances, variances_norm,
                  highly_variable_rank)
  hvg.parquet     optional: the seurat_v3 statistics of every gene detected in the training
                  cells (gene_name, gene_id, means, variances, variances_norm, selected), for
                  mean-variance plots; datasets written before it existed load without it
  counts.npy      optional: int32 (n_cells, n_genes), the raw counts behind X (same rows and
                  genes); their row sums are the library sizes X was normalised by. Written
                  by every build from raw counts; the negative-binomial objective needs it, and
                  datasets written before it existed (or wrapped from normalised values) load
                  without it
```

The manifest records at least ``format_version``, ``source``, ``seed``, ``regime``,
``n_genes``, ``n_cells`` (per split), ``train_sizes`` (the nested training sizes), ``genes`` and
``gene_ids`` (vocabulary order), ``cell_ids_sha256`` (hash of the cell IDs in row order) and
``fingerprint`` (content hash used in run IDs); Census and SOMA sources add
``census_version`` and ``obs_filter``; ``subsample`` lists the strategies whose training
orders the dataset holds (``{"strategies": ["random"]}`` when absent).

An :class:`ExpressionDataset` reads its training subsets through one strategy's order
(``subsample``, random by default; :meth:`ExpressionDataset.subsampled` gives the same data
through another). The random view's fingerprint is the dataset's; another strategy's hashes
the dataset's fingerprint with that strategy's order, so its runs never share IDs with the
random ones.

The manifest also records ``files``: the size and SHA-256 of each data file (and, for
``X.npy``, a hash of sampled blocks). Loading checks them, so a dataset changed after its build
(values edited, a file truncated) is refused instead of trained on under its old fingerprint:
files up to :data:`FULL_HASH_BYTES` are hashed whole (about 0.3 s per 100 MB), larger matrices
by their sampled blocks and size. A build refuses non-finite values.

A directory is written to a temporary sibling and renamed into place, so a failed build
leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from scalelib.atomic import current_umask
from scalelib.data.subsample import STRATEGIES, rank_column
from scalelib.errors import ScalelibError, read_failures

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
OBS_REQUIRED = ("cell_id", "split", "train_rank")
DATASET_FILES = ("manifest.json", "X.npy", "obs.parquet", "var.parquet")
HVG_FILE = "hvg.parquet"
COUNTS_FILE = "counts.npy"
HVG_TABLE_COLUMNS = ("gene_name", "gene_id", "means", "variances", "variances_norm", "selected")
FULL_HASH_BYTES = 1 << 30  # larger matrices are checked by sampled blocks on load
SAMPLED_BLOCKS, BLOCK_BYTES = 64, 1 << 20


@dataclass(frozen=True)
class ExpressionDataset:
    """Normalised log1p expression of cells over a fixed gene vocabulary, with splits.

    Parameters
    ----------
    X
        ``(n_cells, n_genes)`` float32 array (possibly a read-only memory map).
    obs
        Per-cell table in the row order of ``X`` with at least ``cell_id``, ``split`` and
        ``train_rank``.
    var
        Per-gene table in vocabulary order with at least ``gene_id`` and ``gene_name``.
    manifest
        Provenance (see the module docstring); ``fingerprint`` identifies the content.
    hvg
        Optional per-gene table of highly-variable-gene statistics of every gene detected in
        the training cells, with a ``selected`` flag (see the module docstring).
    counts
        Optional raw counts behind ``X`` (integers, same shape; possibly a memory map).
    subsample
        The strategy whose training order defines the nested training subsets (its obs
        column is ``train_rank`` for random, ``train_rank_<strategy>`` otherwise).
    """

    X: np.ndarray
    obs: pl.DataFrame
    var: pl.DataFrame
    manifest: dict = field(default_factory=dict)
    hvg: pl.DataFrame | None = None
    counts: np.ndarray | None = None
    subsample: str = "random"

    def __post_init__(self) -> None:
        _check_tables(self.X, self.obs, self.var)
        if self.counts is not None and self.counts.shape != self.X.shape:
            raise ScalelibError(f"counts shape {self.counts.shape} differs from the expression "
                                f"matrix's {self.X.shape}")
        if rank_column(self.subsample) not in self.obs.columns:
            raise ScalelibError(
                f"this dataset holds no {self.subsample!r} training order (it has "
                f"{', '.join(self.subsamples)}); rebuild it with `scalelib data build ... "
                f"--subsample {self.subsample}`")
        if self.hvg is not None:
            missing = [c for c in HVG_TABLE_COLUMNS if c not in self.hvg.columns]
            if missing:
                raise ScalelibError(f"hvg table lacks column(s) {', '.join(missing)}")

    @property
    def n_genes(self) -> int:
        """Vocabulary size V."""
        return self.X.shape[1]

    @property
    def genes(self) -> list[str]:
        """Gene names in vocabulary order."""
        return self.var["gene_name"].to_list()

    @property
    def regime(self) -> str:
        """Regime label recorded in the manifest (``"custom"`` when absent)."""
        return self.manifest.get("regime", "custom")

    @property
    def source(self) -> str:
        """Source label recorded in the manifest (``"unknown"`` when absent)."""
        return str(self.manifest.get("source", "unknown"))

    @functools.cached_property
    def fingerprint(self) -> str:
        """Short content hash: cells, genes, splits, values and the training order in use."""
        content = self.manifest.get("fingerprint") or content_fingerprint(
            self.X, self.obs, self.var)
        if self.subsample == "random":
            return content
        order = hash_strings([str(v) for v in self.obs[rank_column(self.subsample)].to_list()])
        return hashlib.sha256(f"{content}:{self.subsample}:{order}".encode()).hexdigest()[:16]

    @property
    def subsamples(self) -> list[str]:
        """Strategies whose training orders this dataset holds (random always)."""
        return [name for name in STRATEGIES if rank_column(name) in self.obs.columns]

    @property
    def built_subsamples(self) -> list[str]:
        """The strategies the dataset was built for (``["random"]`` for older datasets)."""
        return list((self.manifest.get("subsample") or {}).get("strategies") or ["random"])

    def subsampled(self, strategy: str) -> ExpressionDataset:
        """The same data with its nested training subsets drawn by ``strategy``.

        Parameters
        ----------
        strategy
            One of :attr:`subsamples`.
        """
        if strategy not in STRATEGIES:
            raise ScalelibError(f"unknown subsample strategy {strategy!r}; choose among "
                                f"{', '.join(STRATEGIES)}")
        return dataclasses.replace(self, subsample=strategy)

    def n_cells(self, split: str) -> int:
        """Number of cells in a split."""
        return int((self.obs["split"] == _check_split(split)).sum())

    def split_indices(self, split: str, n_train: int | None = None) -> np.ndarray:
        """Row indices of a split; for ``"train"`` optionally the nested subset of size ``n_train``.

        Parameters
        ----------
        split
            ``"train"``, ``"val"`` or ``"test"``.
        n_train
            Keep the training cells with ``train_rank < n_train`` (ignored for val and test).
        """
        in_split = (self.obs["split"] == _check_split(split)).to_numpy()
        if split == "train" and n_train is not None:
            available = int(in_split.sum())
            if not 1 <= n_train <= available:
                raise ScalelibError(
                    f"asked for {n_train} training cells but the dataset has {available}; "
                    "choose a smaller data size or build a larger dataset"
                )
            in_split &= self.obs[rank_column(self.subsample)].to_numpy() < n_train
        return np.flatnonzero(in_split)

    def split_values(self, split: str, n_train: int | None = None) -> np.ndarray:
        """The expression matrix of a split, loaded into memory as float32."""
        return np.ascontiguousarray(self.X[self.split_indices(split, n_train)], dtype=np.float32)

    def require_counts(self) -> np.ndarray:
        """The raw counts behind ``X``; a clear error when the dataset does not keep them."""
        if self.counts is None:
            where = self.manifest.get("path", "DIR")
            raise ScalelibError(
                f"the dataset at {where} keeps no raw counts (built before counts.npy existed, "
                "or from normalised values); rebuild it from raw counts with `scalelib data "
                "build --source ... --out NEW_DIR` and the same options")
        return self.counts

    def split_counts(self, split: str, n_train: int | None = None) -> np.ndarray:
        """The raw counts of a split, loaded into memory as float32 (see :meth:`require_counts`)."""
        counts = self.require_counts()
        return np.ascontiguousarray(counts[self.split_indices(split, n_train)], dtype=np.float32)

    def write(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        """Write the dataset to ``out_dir`` atomically and return the path.

        Parameters
        ----------
        out_dir
            Target directory; must not exist unless ``overwrite``.
        overwrite
            Replace an existing dataset directory.
        """
        out_dir = Path(out_dir)
        check_writable(out_dir, overwrite)
        if not all_finite(self.X):
            raise ScalelibError("the expression matrix holds NaN or infinite values; check "
                                "the input counts for missing or non-numeric entries")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        manifest = {**self.manifest, "format_version": FORMAT_VERSION}
        manifest.setdefault("fingerprint", content_fingerprint(self.X, self.obs, self.var))
        manifest.update(
            n_genes=self.n_genes,
            n_cells={split: self.n_cells(split) for split in SPLITS},
            genes=self.genes,
            gene_ids=self.var["gene_id"].to_list(),
            cell_ids_sha256=hash_strings(self.obs["cell_id"].to_list()),
        )
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp creates 0700
            np.save(staging / "X.npy", np.asarray(self.X, dtype=np.float32))
            self.obs.write_parquet(staging / "obs.parquet")
            self.var.write_parquet(staging / "var.parquet")
            if self.hvg is not None:
                self.hvg.write_parquet(staging / HVG_FILE)
            if self.counts is not None:
                np.save(staging / COUNTS_FILE, np.asarray(self.counts, dtype=np.int32))
            manifest["files"] = {name: file_digest(staging / name)
                                 for name in (*DATASET_FILES[1:], HVG_FILE, COUNTS_FILE)
                                 if (staging / name).exists()}
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return out_dir


def load_dataset(path: str | Path, in_memory: bool = False,
                 obs_columns: Sequence[str] | None = None) -> ExpressionDataset:
    """Open a dataset directory written by :meth:`ExpressionDataset.write`.

    Parameters
    ----------
    path
        The dataset directory.
    in_memory
        Read ``X`` into memory instead of memory-mapping it.
    obs_columns
        The per-cell metadata columns to read besides ``cell_id``, ``split`` and the
        training orders (``train_rank...``) (None: all). Training reads none, so that streamed training does not
        hold every cell's metadata.
    """
    path = Path(path)
    if not path.is_dir():
        raise ScalelibError(
            f"no dataset directory at {path}; build one with `scalelib data build --out {path}`"
        )
    missing = [name for name in DATASET_FILES if not (path / name).exists()]
    if missing:
        raise ScalelibError(
            f"{path} is not a scalelib dataset (missing {', '.join(missing)}); "
            "rebuild it with `scalelib data build`"
        )
    fix = (f"rebuild it (`scalelib data build --out {path} --overwrite`; a dataset a sweep "
           "simulated is simulated again once its folder is deleted)")
    with read_failures(path / "manifest.json", fix):
        manifest = json.loads((path / "manifest.json").read_text())
        if not isinstance(manifest, dict):
            raise TypeError("not a JSON object")
    _verify_files(path, manifest.get("files"), fix)
    with read_failures(path, fix):
        X = np.load(path / "X.npy", mmap_mode=None if in_memory else "r", allow_pickle=False)
        orders = [rank_column(name) for name in STRATEGIES[1:]
                  if rank_column(name) in pl.read_parquet_schema(path / "obs.parquet")]
        columns = None if obs_columns is None else [*OBS_REQUIRED, *orders, *obs_columns]
        obs = pl.read_parquet(path / "obs.parquet", columns=columns)
        var = pl.read_parquet(path / "var.parquet")
        hvg = pl.read_parquet(path / HVG_FILE) if (path / HVG_FILE).exists() else None
        counts = (np.load(path / COUNTS_FILE, mmap_mode=None if in_memory else "r",
                          allow_pickle=False) if (path / COUNTS_FILE).exists() else None)
    if "files" not in manifest and not all_finite(X):  # built before hashes were recorded
        raise ScalelibError(f"{path / 'X.npy'} holds NaN or infinite values; {fix}")
    return ExpressionDataset(X=X, obs=obs, var=var, manifest={**manifest, "path": str(path)},
                             hvg=hvg, counts=counts)


def read_rows(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``X[rows]`` as float32; from a memory-mapped ``X.npy``, by reading the file.

    Reads (each run of consecutive rows at once) go through the page cache but leave nothing
    mapped into the process, so its resident memory does not grow with the rows it has read,
    as it does when rows are gathered through the memory map.

    Parameters
    ----------
    X
        The dataset's matrix: a read-only memory map of ``X.npy``, or any array.
    rows
        Row indices; ascending order reads runs of rows at once.
    """
    rows = np.asarray(rows, dtype=np.int64)
    on_disk = (isinstance(X, np.memmap) and X.filename is not None and X.dtype == np.float32
               and X.flags.c_contiguous)
    if not on_disk:
        return np.ascontiguousarray(X[rows], dtype=np.float32)
    values = np.empty((len(rows), X.shape[1]), dtype=np.float32)
    row_bytes = X.shape[1] * values.itemsize
    run_starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
    with open(X.filename, "rb", buffering=0) as handle:
        for first, last in zip(run_starts, [*run_starts[1:], len(rows)]):
            handle.seek(X.offset + int(rows[first]) * row_bytes)
            block = memoryview(values[first:last]).cast("B")
            if handle.readinto(block) != block.nbytes:
                raise ScalelibError(f"{X.filename} ended before row {rows[last - 1]}; rebuild "
                                    "the dataset")
    return values


class RowsOnDisk:
    """Some rows of a dataset's matrix, read when sliced (``rows_on_disk[a:b]``; see
    :func:`read_rows`), for passes over a split that never hold it whole.

    Parameters
    ----------
    X
        The dataset's matrix (a memory map of ``X.npy``).
    rows
        The row indices, ascending.
    """

    def __init__(self, X: np.ndarray, rows: np.ndarray) -> None:
        self.X, self.rows = X, rows
        self.shape = (len(rows), X.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, positions: slice) -> np.ndarray:
        return read_rows(self.X, self.rows[positions])


def file_digest(path: Path) -> dict:
    """Size, SHA-256 and (for files over :data:`FULL_HASH_BYTES`) sampled-block hash of a file.

    Parameters
    ----------
    path
        A data file of a dataset directory.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK_BYTES * 8):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest(),
            "sampled_sha256": sampled_digest(path)}


def sampled_digest(path: Path) -> str:
    """SHA-256 of :data:`SAMPLED_BLOCKS` blocks at evenly spaced offsets, and the file size."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in np.linspace(0, max(size - BLOCK_BYTES, 0), SAMPLED_BLOCKS, dtype=np.int64):
            handle.seek(int(offset))
            digest.update(handle.read(BLOCK_BYTES))
    return digest.hexdigest()


def _verify_files(path: Path, recorded: dict | None, fix: str) -> None:
    """Check each data file against the size and hash recorded when the dataset was built."""
    for name, expected in (recorded or {}).items():
        file = path / name
        if not file.is_file() or file.stat().st_size != expected.get("size"):
            raise ScalelibError(f"{file} is missing or changed size since the dataset was "
                                f"built; {fix}")
        whole = expected["size"] <= FULL_HASH_BYTES
        found = file_digest(file)["sha256"] if whole else sampled_digest(file)
        if found != expected["sha256" if whole else "sampled_sha256"]:
            raise ScalelibError(f"{file} changed since the dataset was built (its content hash "
                                f"differs), so results of the old data cannot be reused; {fix}")


def all_finite(X: np.ndarray, rows_per_chunk: int = 65536) -> bool:
    """Whether every value of ``X`` is finite (read in chunks of rows, memory maps included)."""
    return all(np.isfinite(X[start:start + rows_per_chunk]).all()
               for start in range(0, X.shape[0], rows_per_chunk))


def check_writable(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse an existing ``out_dir`` unless ``overwrite``, and never replace a foreign folder.

    Parameters
    ----------
    out_dir
        Where a dataset is about to be written.
    overwrite
        Whether an existing dataset there may be replaced.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not overwrite:
        raise ScalelibError(f"{out_dir} already exists; choose another --out or pass --overwrite")
    if not out_dir.is_dir() or (any(out_dir.iterdir()) and not is_dataset_dir(out_dir)):
        raise ScalelibError(
            f"{out_dir} exists and is not a scalelib dataset; --overwrite only replaces "
            "datasets, so choose another --out"
        )


def is_dataset_dir(path: str | Path) -> bool:
    """True when ``path`` holds a dataset written by scalelib."""
    return all((Path(path) / name).exists() for name in DATASET_FILES)


def hash_strings(values: list[str]) -> str:
    """SHA-256 of a list of strings (newline-joined, order-sensitive)."""
    return hashlib.sha256("\n".join(values).encode()).hexdigest()


def content_fingerprint(X: np.ndarray, obs: pl.DataFrame, var: pl.DataFrame) -> str:
    """A 16-hex-digit hash of cell IDs, splits, nested order, gene IDs and the values."""
    digest = hashlib.sha256()
    for column in ("cell_id", "split", "train_rank"):
        digest.update(hash_strings([str(v) for v in obs[column].to_list()]).encode())
    digest.update(hash_strings(var["gene_id"].to_list()).encode())
    step = max(1, X.shape[0] // 4096)  # a strided sample of rows keeps this fast on big data
    digest.update(np.ascontiguousarray(X[::step], dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ScalelibError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def _check_tables(X: np.ndarray, obs: pl.DataFrame, var: pl.DataFrame) -> None:
    if X.ndim != 2:
        raise ScalelibError(f"expression matrix must be 2-D, got shape {X.shape}")
    if obs.height != X.shape[0] or var.height != X.shape[1]:
        raise ScalelibError(
            f"matrix shape {X.shape} does not match {obs.height} cells x {var.height} genes"
        )
    for table, columns in ((obs, OBS_REQUIRED), (var, ("gene_id", "gene_name"))):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ScalelibError(f"dataset table lacks column(s) {', '.join(missing)}")
    bad = set(obs["split"].unique().to_list()) - set(SPLITS)
    if bad:
        raise ScalelibError(f"unknown split label(s) {sorted(bad)}; use train, val and test")
