"""Build time and peak memory of `scalelib data build` from a local SOMA store.

Runs the real command in a child process, samples its resident memory (psutil, every 0.2 s)
and reads the kernel's peak (``getrusage(RUSAGE_CHILDREN).ru_maxrss``). For scale it also
prints the size of the final matrix, of the drawn cells' raw counts (what an in-memory build
would hold as CSR), and the peak of a child that only imports the libraries and opens the
dataset (the fixed cost).

``--naive`` also measures the obvious in-memory recipe on the same cells: one
``cellxgene_census.get_anndata`` of every drawn cell, scanpy's seurat_v3 on the training
cells, then the selected genes; and checks that scanpy chooses the genes the streaming build
chose.

Usage (after benchmarks/census_store.py)::

    .venv/bin/python benchmarks/census_build.py --store data/bench/census --regime rich --naive
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil


def run_measured(argv: list[str]) -> dict:
    """Run ``argv``; return wall time, peak RSS (sampled and kernel) and an RSS timeline."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    process = subprocess.Popen(argv)
    watched = psutil.Process(process.pid)
    samples: list[tuple[float, int]] = []
    while process.poll() is None:
        try:
            rss = watched.memory_info().rss
            rss += sum(child.memory_info().rss for child in watched.children(recursive=True))
        except psutil.Error:
            break
        samples.append((time.perf_counter() - started, rss))
        time.sleep(0.2)
    code = process.wait()
    wall = time.perf_counter() - started
    peak_kernel = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {code}")
    return {"wall_s": wall, "peak_rss": max(r for _, r in samples) if samples else 0,
            "peak_rss_kernel": peak_kernel if peak_kernel > before * 1024 else None,
            "samples": samples}


def timeline(samples: list[tuple[float, int]], parts: int = 10) -> str:
    """Peak RSS in each tenth of the run, in GB."""
    if not samples:
        return ""
    end = samples[-1][0]
    peaks = []
    for i in range(parts):
        window = [r for t, r in samples if i * end / parts <= t <= (i + 1) * end / parts]
        peaks.append(max(window) if window else 0)
    return " ".join(f"{p / 1e9:.2f}" for p in peaks)


def naive_build(store: Path, dataset_dir: Path) -> None:
    """The in-memory recipe on the cells of ``dataset_dir`` (run in a child process)."""
    import cellxgene_census
    import numpy as np
    import polars as pl
    import scanpy as sc

    obs = pl.read_parquet(dataset_dir / "obs.parquet")
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    joinids = np.sort(obs["cell_id"].cast(pl.Int64).to_numpy())
    train = np.isin(joinids, obs.filter(pl.col("split") == "train")["cell_id"].cast(pl.Int64))
    started = time.perf_counter()
    with cellxgene_census.open_soma(uri=str(store)) as census:
        adata = cellxgene_census.get_anndata(census, "Homo sapiens", obs_coords=joinids,
                                             var_column_names=["feature_id"])
    read_s = time.perf_counter() - started
    hvg = sc.pp.highly_variable_genes(adata[train], flavor="seurat_v3",
                                      n_top_genes=manifest["n_genes"], inplace=False)
    chosen = hvg[hvg["highly_variable"]].sort_values("highly_variable_rank").index
    selected = adata[:, chosen].X
    sc.pp.log1p(sc.pp.normalize_total(sc.AnnData(selected), target_sum=1e4, copy=True))
    same = adata.var.loc[chosen, "feature_id"].tolist() == manifest["gene_ids"]
    print(f"naive: get_anndata {read_s:,.0f} s, {adata.X.nnz:,} non-zeros in memory; "
          f"scanpy chose the same {len(chosen)} genes in the same order: {same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("data/bench/census"))
    parser.add_argument("--out", type=Path, default=Path("data/bench/rich"))
    parser.add_argument("--regime", default="rich")
    parser.add_argument("--chunk-cells", type=int, default=2000)
    parser.add_argument("--naive", action="store_true", help="also measure the in-memory recipe")
    parser.add_argument("--naive-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_child:
        naive_build(args.store, args.out)
        return
    scalelib = [sys.executable, "-m", "scalelib"]
    build = [*scalelib, "data", "build", "--source", f"soma:{args.store}", "--regime",
             args.regime, "--out", str(args.out), "--overwrite", "--quiet",
             "--chunk-cells", str(args.chunk_cells)]
    print("$", " ".join(build), flush=True)
    result = run_measured(build)
    baseline = run_measured([*scalelib, "data", "info", str(args.out)])
    manifest = json.loads((args.out / "manifest.json").read_text())
    n_cells = sum(manifest["n_cells"].values())
    nnz = manifest["provenance"]["spilled_nonzeros"]
    drawn = manifest["cells_drawn"][-1]
    print(f"\nbuilt {args.out}: {n_cells:,} cells x {manifest['n_genes']:,} genes from "
          f"{manifest['query']['n_matching_cells']:,} matching cells of {args.store}")
    print(f"wall time            {result['wall_s']:,.0f} s")
    print(f"peak RSS (sampled)   {result['peak_rss'] / 1e9:.2f} GB")
    if result["peak_rss_kernel"]:
        print(f"peak RSS (kernel)    {result['peak_rss_kernel'] / 1e9:.2f} GB")
    print(f"RSS by tenth of run  {timeline(result['samples'])} GB")
    print(f"fixed cost (imports, `data info`): {baseline['peak_rss'] / 1e9:.2f} GB")
    print(f"final matrix X.npy   {(args.out / 'X.npy').stat().st_size / 1e9:.2f} GB")
    print(f"drawn cells' counts  {nnz:,} non-zeros = {(8 * nnz + 8 * drawn) / 1e9:.2f} GB as "
          "float32/int32 CSR (spilled to disk, not held in memory)")
    if args.naive:
        naive = run_measured([sys.executable, __file__, "--naive-child", "--store",
                              str(args.store), "--out", str(args.out)])
        print(f"naive in-memory recipe: wall {naive['wall_s']:,.0f} s, peak RSS "
              f"{naive['peak_rss'] / 1e9:.2f} GB (sampled)")


if __name__ == "__main__":
    main()
