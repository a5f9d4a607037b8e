"""Data: sources of raw counts, preprocessing into datasets, and the on-disk store.

The store is imported eagerly (numpy and polars only); the readers, builders, Census source
and simulator load scanpy, anndata or tiledbsoma, so they are imported on first use, which
keeps ``from scalelib.data import load_dataset`` fast for training and the command line.

Modules: ``store`` (the on-disk format), ``sources`` (.h5ad and 10x readers, count checks),
``simulate`` (the simulator), ``census`` (datasets from the Census or a SOMA store, streamed),
``soma_store`` (reading and writing stores in the Census layout), ``counts``
(raw counts in memory or spilled to disk), ``hvg`` (streaming seurat_v3), ``splits``
(train/val/test and nested subsets), ``build`` (the shared builder) and ``preprocess`` (the
in-memory entry points).
"""

from importlib import import_module

from scalelib.data.store import ExpressionDataset, is_dataset_dir, load_dataset

_LAZY = {
    "build_dataset": "scalelib.data.preprocess",
    "candidate_genes": "scalelib.data.preprocess",
    "dataset_from_anndata": "scalelib.data.preprocess",
    "simulate_dataset": "scalelib.data.preprocess",
    "build_census_dataset": "scalelib.data.census",
    "compose_obs_filter": "scalelib.data.census",
    "write_census_layout": "scalelib.data.soma_store",
    "seurat_v3": "scalelib.data.hvg",
    "check_counts": "scalelib.data.sources",
    "read_counts": "scalelib.data.sources",
    "simulate_counts": "scalelib.data.simulate",
}

__all__ = [
    "ExpressionDataset", "build_census_dataset", "build_dataset", "candidate_genes",
    "check_counts", "compose_obs_filter", "dataset_from_anndata", "is_dataset_dir",
    "load_dataset", "read_counts", "seurat_v3", "simulate_counts", "simulate_dataset",
    "write_census_layout",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
