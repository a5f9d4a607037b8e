"""Write a large local SOMA store in the CELLxGENE Census layout, simulated for size.

The store mimics a Census slice: ``census_data/homo_sapiens`` with obs columns the Census
query uses (``is_primary_data``, ``cell_type``, ``dataset_id``, ``donor_id``, ``assay``,
``tissue``, ``tissue_general``, ``disease``, ``sex``), var ``feature_id``/``feature_name``,
and integer UMI counts in X ``raw``, written chunk by chunk (it never sits in memory whole).

Counts: each cell has a type (of ``--types``) and a log-normal library size (median 2,000
UMIs); its UMIs fall on genes drawn from the type's gene distribution (a Zipf-like base with
3% marker genes per type up-weighted by Gamma(2, 0.6) log-fold changes), which gives ~1,000
detected genes per cell as in 10x data and highly variable genes that separate types.

Usage::

    .venv/bin/python benchmarks/census_store.py --out data/bench/census --cells 250000 --genes 25000
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

CHUNK = 10_000
ASSAYS = ("10x 3' v2", "10x 3' v3", "10x 5' v1")
TISSUES = (("blood", "blood"), ("lung", "lung parenchyma"), ("bone marrow", "bone marrow"))


def gene_distributions(n_genes: int, n_types: int, rng: np.random.Generator) -> np.ndarray:
    """Cumulative gene probabilities per cell type, ``(n_types, n_genes)``."""
    base = rng.normal(0.0, 1.5, n_genes)
    log_rates = np.tile(base, (n_types, 1))
    n_markers = max(1, int(0.03 * n_genes))
    for k in range(n_types):
        markers = rng.choice(n_genes, n_markers, replace=False)
        log_rates[k, markers] += rng.gamma(2.0, 0.6, n_markers)
    probabilities = np.exp(log_rates - log_rates.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.cumsum(probabilities, axis=1)


def chunk_counts(types: np.ndarray, cdf: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO counts (row, gene, count) of the cells of one chunk."""
    library = np.maximum(50, rng.lognormal(np.log(2000), 0.4, len(types))).astype(np.int64)
    rows = np.repeat(np.arange(len(types)), library)
    genes = np.empty(len(rows), dtype=np.int64)
    for k in np.unique(types):
        pick = types[rows] == k
        genes[pick] = np.searchsorted(cdf[k], rng.random(int(pick.sum())) * cdf[k, -1])
    genes = np.minimum(genes, cdf.shape[1] - 1)
    keys, counts = np.unique(rows * cdf.shape[1] + genes, return_counts=True)
    return keys // cdf.shape[1], keys % cdf.shape[1], counts.astype(np.float32)


def obs_table(start: int, types: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Census-like metadata of one chunk of cells."""
    n = len(types)
    dataset = rng.integers(0, 40, n)
    tissue = np.array(TISSUES)[dataset % len(TISSUES)]
    return pa.table({
        "soma_joinid": pa.array(np.arange(start, start + n), pa.int64()),
        "cell_type": [f"type {k}" for k in types],
        "is_primary_data": rng.random(n) < 0.9,
        "dataset_id": [f"dataset-{d:02d}" for d in dataset],
        "donor_id": [f"donor-{d:02d}-{j}" for d, j in zip(dataset, rng.integers(0, 4, n))],
        "assay": np.array(ASSAYS)[dataset % len(ASSAYS)].tolist(),
        "tissue_general": tissue[:, 0].tolist(),
        "tissue": tissue[:, 1].tolist(),
        "disease": np.where(rng.random(n) < 0.8, "normal", "COVID-19").tolist(),
        "sex": rng.choice(["female", "male"], n).tolist(),
    })


OBS_SCHEMA = pa.schema([
    ("cell_type", pa.large_string()), ("is_primary_data", pa.bool_()),
    ("dataset_id", pa.large_string()), ("donor_id", pa.large_string()),
    ("assay", pa.large_string()), ("tissue_general", pa.large_string()),
    ("tissue", pa.large_string()), ("disease", pa.large_string()), ("sex", pa.large_string()),
])


def write_store(out: Path, n_cells: int, n_genes: int, n_types: int, seed: int) -> dict:
    """Write the store; return its size in cells, genes, non-zeros and bytes."""
    import tiledbsoma as soma

    rng = np.random.default_rng(seed)
    cdf = gene_distributions(n_genes, n_types, rng)
    type_weights = 1.0 / np.arange(1, n_types + 1)
    type_weights /= type_weights.sum()
    nnz = 0
    with soma.Collection.create(str(out)) as root:
        census_data = root.add_new_collection("census_data")
        experiment = census_data.add_new_collection("homo_sapiens", soma.Experiment)
        obs = experiment.add_new_dataframe("obs", schema=OBS_SCHEMA, domain=[(0, n_cells - 1)])
        rna = experiment.add_new_collection("ms").add_new_collection("RNA", soma.Measurement)
        var = rna.add_new_dataframe(
            "var", schema=pa.schema([("feature_id", pa.large_string()),
                                     ("feature_name", pa.large_string())]),
            domain=[(0, n_genes - 1)])
        var.write(pa.table({
            "soma_joinid": pa.array(np.arange(n_genes), pa.int64()),
            "feature_id": [f"ENSG{g:011d}" for g in range(n_genes)],
            "feature_name": [f"GENE{g}" for g in range(n_genes)],
        }))
        raw = rna.add_new_collection("X").add_new_sparse_ndarray(
            "raw", type=pa.float32(), shape=(n_cells, n_genes))
        for start in range(0, n_cells, CHUNK):
            types = rng.choice(n_types, min(CHUNK, n_cells - start), p=type_weights)
            obs.write(obs_table(start, types, rng))
            rows, genes, counts = chunk_counts(types, cdf, rng)
            raw.write(pa.table({"soma_dim_0": rows + start, "soma_dim_1": genes,
                                "soma_data": counts}))
            nnz += len(counts)
            print(f"  {start + len(types):,} cells written", flush=True)
        _write_summary(root)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"cells": n_cells, "genes": n_genes, "nnz": nnz, "bytes": size}


def _write_summary(root) -> None:
    info = root.add_new_collection("census_info")
    summary = info.add_new_dataframe(
        "summary", schema=pa.schema([("label", pa.large_string()), ("value", pa.large_string())]),
        domain=[(0, 1)])
    summary.write(pa.table({"soma_joinid": pa.array([0, 1], pa.int64()),
                            "label": ["census_build_date", "census_schema_version"],
                            "value": ["benchmark-simulated", "2.1.0"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/bench/census"))
    parser.add_argument("--cells", type=int, default=250_000)
    parser.add_argument("--genes", type=int, default=25_000)
    parser.add_argument("--types", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if args.out.exists():
        if not args.overwrite:
            raise SystemExit(f"{args.out} exists; pass --overwrite")
        shutil.rmtree(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    size = write_store(args.out, args.cells, args.genes, args.types, args.seed)
    print(f"wrote {args.out}: {size['cells']:,} cells x {size['genes']:,} genes, "
          f"{size['nnz']:,} non-zeros ({size['nnz'] / size['cells']:,.0f} per cell), "
          f"{size['bytes'] / 1e9:.2f} GB on disk, in {time.perf_counter() - started:,.0f} s")


if __name__ == "__main__":
    main()
