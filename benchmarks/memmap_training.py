"""Training throughput reading batches from the on-disk matrix (memmap) versus from memory.

For each model size, trains with ``scalelib.train.train(..., in_memory=True)`` (the training
cells copied into RAM once) and ``in_memory=False`` (each batch gathered from the
memory-mapped ``X.npy``), twice for the memmap: with the file evicted from the page cache
first (``posix_fadvise(DONTNEED)``: batches come from disk) and warm (from the page cache).
Throughput is training cells per second between step ``--skip`` and the last step (the final
validation pass is left out, and only 256 val and test cells are scored so that it stays
short); set-up is the time to the first step (loading splits and, in memory, copying the
180,000 training cells). A micro-benchmark of the batch fetch alone comes first.

Usage::

    .venv/bin/python benchmarks/memmap_training.py --data data/bench/rich --sizes T0,D3,D6
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from scalelib.config import TRAIN_PRESETS, find_size
from scalelib.data.store import ExpressionDataset, load_dataset
from scalelib.train import TrainingBatches, train


def evict(path: Path) -> None:
    """Drop ``path`` from the page cache (clean pages only; no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_whole(path: Path) -> float:
    """Seconds to read ``path`` sequentially (shows whether an eviction took effect)."""
    started = time.perf_counter()
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass
    return time.perf_counter() - started


def fetch_benchmark(data: Path, batch: int, n_batches: int) -> dict[str, float]:
    """Microseconds per batch fetch: memory, memmap from disk, memmap from the page cache."""
    path = data / "X.npy"
    dataset = load_dataset(data)
    rows = dataset.split_indices("train")
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(rows), batch, replace=False) for _ in range(n_batches)]
    timings = {}
    served = TrainingBatches(dataset.X, rows, in_memory=True)
    timings["memory"] = _time_fetches(served, batches)
    del served, dataset
    evict(path)
    served = TrainingBatches(load_dataset(data).X, rows, in_memory=False)  # a fresh mapping
    timings["memmap, disk"] = _time_fetches(served, batches)
    timings["memmap, page cache"] = _time_fetches(served, batches)
    return timings


def _time_fetches(served: TrainingBatches, batches: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for positions in batches:
        served.fetch(positions)
    return (time.perf_counter() - started) / len(batches) * 1e6


def small_held_out(dataset: ExpressionDataset, keep: int = 256
                   ) -> tuple[ExpressionDataset, int]:
    """The same matrix with only ``keep`` val and test cells scored (the final evaluation of
    10,000 + 10,000 cells would dominate a short run); the other held-out cells are parked
    after the training cells (``train_rank`` past the end), outside the subset trained on."""
    obs = dataset.obs.with_row_index("row")
    n_train = dataset.n_cells("train")
    held = obs.filter(pl.col("split") != "train").with_columns(
        pl.int_range(pl.len()).over("split").alias("k"))
    parked = held.filter(pl.col("k") >= keep)["row"].to_numpy()
    split = dataset.obs["split"].to_numpy().copy()
    rank = dataset.obs["train_rank"].to_numpy().copy()
    split[parked] = "train"
    rank[parked] = n_train + np.arange(len(parked))
    obs = dataset.obs.with_columns(pl.Series("split", split), pl.Series("train_rank", rank))
    return ExpressionDataset(dataset.X, obs, dataset.var, dataset.manifest), n_train


def train_once(data: Path, size_name: str, steps: int, batch: int, skip: int,
               in_memory: bool) -> dict[str, float]:
    """Cells/s between step ``skip`` and the last step, and the time to the first step."""
    dataset, n_train = small_held_out(load_dataset(data))  # a fresh mapping each run
    marks: dict[int, tuple[float, int]] = {}
    config = TRAIN_PRESETS["smoke"].with_(max_steps=steps, batch_size=batch, eval_every=steps,
                                          device="cpu", dtype="fp32")
    started = time.perf_counter()
    train(dataset, find_size(size_name), config, seed=0, progress=False, in_memory=in_memory,
          n_train=n_train, on_step=lambda info: marks.setdefault(
              info.step, (time.perf_counter() - started, info.cells_seen)))
    (t0, c0), (t1, c1) = marks[skip], marks[steps - 1]
    return {"cells_per_s": (c1 - c0) / (t1 - t0), "setup_s": marks[1][0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/bench/rich"))
    parser.add_argument("--sizes", default="T0,D3,D6", help="model sizes (any ladder)")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--skip", type=int, default=10, help="warm-up steps left out")
    args = parser.parse_args()
    path = args.data / "X.npy"
    dataset = load_dataset(args.data)
    n_genes = dataset.n_genes
    print(f"{args.data}: {dataset.X.shape[0]:,} cells x {n_genes} genes, "
          f"{path.stat().st_size / 1e9:.2f} GB on disk, {dataset.n_cells('train'):,} training "
          f"cells; batch {args.batch}; torch threads {torch.get_num_threads()}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    del dataset
    evict(path)
    cold, warm = read_whole(path), read_whole(path)
    print(f"  read X.npy whole: {cold:.2f} s after eviction, {warm:.2f} s from the page cache")
    for label, micros in fetch_benchmark(args.data, args.batch, 500).items():
        print(f"  fetch a batch from {label:<20} {micros:9,.0f} us")
    print(f"{'size':<6}{'params':>10}{'memory':>12}{'memmap disk':>14}{'memmap cache':>14}"
          f"{'set-up mem/map':>18}   (cells/s)")
    for size_name in args.sizes.split(","):
        results = {}
        for label, in_memory in (("memory", True), ("disk", False), ("cache", False)):
            if label == "disk":
                evict(path)
            results[label] = train_once(args.data, size_name, args.steps, args.batch,
                                        args.skip, in_memory)
        params = _params(size_name, n_genes)
        print(f"{size_name:<6}{params:>10,}{results['memory']['cells_per_s']:>12,.0f}"
              f"{results['disk']['cells_per_s']:>14,.0f}{results['cache']['cells_per_s']:>14,.0f}"
              f"{results['memory']['setup_s']:>11.1f}/{results['disk']['setup_s']:.1f} s",
              flush=True)


def _params(size_name: str, n_genes: int) -> int:
    from scalelib.model import count_parameters

    return count_parameters(find_size(size_name), n_genes)


if __name__ == "__main__":
    main()
