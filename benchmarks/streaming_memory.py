"""Peak memory of training as the dataset grows: streamed from disk versus held in memory.

For each dataset size, builds a dataset with ``scalelib data build --source SOURCE --cells N``
(kept under ``--work`` and reused): from a local SOMA store in the Census layout
(``--source soma:STORE``, written by ``benchmarks/census_store.py``) or from scalelib's
simulator (``--source simulate``, quicker to write at 500,000 cells). Then it trains one model on it in a fresh child process,
streamed (``train(..., in_memory=False)``, what ``scalelib sweep --memmap`` does: batches and
validation blocks read from ``X.npy``) and, unless ``--streamed-only``, held in memory. The
child reports the kernel's peak resident set (``VmHWM``: anonymous memory plus file pages
mapped into the process; the page cache the reads pass through is the kernel's, not the
process's) and, at the end, the anonymous and file-backed parts (``RssAnon``, ``RssFile``).

Usage (after ``benchmarks/census_store.py --out data/bench/census500k --cells 500000``)::

    .venv/bin/python benchmarks/streaming_memory.py --source soma:data/bench/census500k \\
        --cells 50000,100000,200000,500000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def build(source: str, cells: int, genes: int, out: Path) -> Path:
    """The dataset of ``cells`` cells from ``source`` (built once, then reused)."""
    if (out / "manifest.json").exists():
        return out
    census = ["--include-secondary"] if source.startswith("soma:") else []
    command = [sys.executable, "-m", "scalelib", "data", "build", "--source", source,
               "--cells", str(cells), "--genes", str(genes), *census, "--out", str(out),
               "--quiet"]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"  built in {time.perf_counter() - started:,.0f} s", flush=True)
    return out


def proc_status() -> dict[str, int]:
    """Memory lines of ``/proc/self/status`` in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def child(data: Path, size: str, steps: int, batch: int, in_memory: bool) -> None:
    """Train once and print the memory figures as JSON (run in a fresh process)."""
    import torch

    from scalelib.config import TRAIN_PRESETS, find_size
    from scalelib.data.store import load_dataset
    from scalelib.train import train

    torch.set_num_threads(1)
    dataset = load_dataset(data, obs_columns=None if in_memory else ())  # as sweep --memmap
    before = proc_status()
    config = TRAIN_PRESETS["smoke"].with_(max_steps=steps, batch_size=batch, device="cpu",
                                          dtype="fp32", eval_every=max(1, steps // 2),
                                          eval_batch_size=256)
    started = time.perf_counter()
    result = train(dataset, find_size(size), config, seed=0, progress=False,
                   in_memory=in_memory)
    print(json.dumps({**proc_status(), "before_train_VmHWM": before["VmHWM"],
                      "train_s": time.perf_counter() - started,
                      "best_val_mse": result.best_val_mse,
                      "cells": int(dataset.X.shape[0]),
                      "val_cells": dataset.n_cells("val"),
                      "x_bytes": int(dataset.X.nbytes)}))


def measure(data: Path, size: str, steps: int, batch: int, in_memory: bool) -> dict:
    """Run :func:`child` in a fresh interpreter; return its figures."""
    command = [sys.executable, __file__, "--child", str(data), "--size", size, "--steps",
               str(steps), "--batch", str(batch), *(["--in-memory"] if in_memory else [])]
    done = subprocess.run(command, check=True, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="soma:data/bench/census500k",
                        help="soma:STORE (Census layout) or simulate")
    parser.add_argument("--cells", default="50000,100000,200000,500000")
    parser.add_argument("--genes", type=int, default=128)
    parser.add_argument("--work", type=Path, default=Path("data/bench/streaming"))
    parser.add_argument("--size", default="T1", help="model size (any ladder)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--streamed-only", action="store_true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.size, args.steps, args.batch, args.in_memory)
        return
    modes = [("streamed", False)] + ([] if args.streamed_only else [("in memory", True)])
    print(f"{args.size}, {args.steps} steps of batch {args.batch}, validation twice; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'cells':>9} {'val':>7} {'X.npy':>8}  {'mode':<10}{'peak RSS':>10}{'anon':>9}"
          f"{'file':>9}{'load+imports':>14}{'train s':>9}")
    for cells in (int(text) for text in args.cells.split(",")):
        label = args.source.replace(":", "_").replace("/", "_")
        data = build(args.source, cells, args.genes, args.work / f"{label}_{cells}")
        for label, in_memory in modes:
            got = measure(data, args.size, args.steps, args.batch, in_memory)
            print(f"{got['cells']:>9,} {got['val_cells']:>7,} {got['x_bytes'] / 1e6:>6,.0f}MB  "
                  f"{label:<10}{got['VmHWM'] / 1e6:>8,.0f}MB{got['RssAnon'] / 1e6:>7,.0f}MB"
                  f"{got['RssFile'] / 1e6:>7,.0f}MB{got['before_train_VmHWM'] / 1e6:>12,.0f}MB"
                  f"{got['train_s']:>9,.0f}", flush=True)


if __name__ == "__main__":
    main()
