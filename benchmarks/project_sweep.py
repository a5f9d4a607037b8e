"""Projected wall time of a full sweep, from measured training and evaluation throughput.

For each size, times optimiser steps (``scalelib.bench.benchmark_training``) at the preset's
batch size and precision, and forward passes at the evaluation batch size; then projects, per
run, ``budget cells / training cells/s`` plus ``evaluations x validation cells / evaluation
cells/s`` (a final test pass included), times the number of seeds. Data loading is left out
(measured separately: benchmarks/memmap_training.py). The default is the reference study's
rich regime (V=512, 200,000 cells split 90/5/5) on its six sizes at V=512, three seeds, with
the ``paper`` training preset (2,000,000 cells, batch 64, evaluation every 500 steps).

Usage::

    .venv/bin/python benchmarks/project_sweep.py --device cuda --dtype bf16
    .venv/bin/python benchmarks/project_sweep.py --sizes XXS,TINY,XS --device cpu
"""

from __future__ import annotations

import argparse
import time

import torch

from scalelib.bench import benchmark_training
from scalelib.config import PAPER_REGIMES, TRAIN_PRESETS, find_size
from scalelib.hardware import resolve_device, resolve_dtype
from scalelib.model import MaskedExpressionTransformer


def evaluation_cells_per_s(size_name: str, n_genes: int, batch_size: int, device: str,
                           dtype: str, repeats: int = 5) -> float:
    """Cells per second of no-grad forward passes at ``batch_size`` (best of ``repeats``)."""
    size = find_size(size_name)
    torch_device = resolve_device(device)
    chosen = resolve_dtype(dtype, torch_device, size)
    model = MaskedExpressionTransformer(size, n_genes).to(torch_device).eval()
    values = torch.rand(batch_size, n_genes, device=torch_device)
    mask = torch.rand(values.shape, device=torch_device) < 0.15
    best = float("inf")
    with torch.no_grad(), torch.autocast(torch_device.type, dtype=torch.bfloat16,
                                         enabled=chosen == "bf16"):
        for _ in range(repeats + 1):
            if torch_device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            model(values, mask).sum().item()
            best = min(best, time.perf_counter() - started)
    return batch_size / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="XXS,TINY,XS,S,M,L")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="paper", help="training preset (paper)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per size")
    args = parser.parse_args()

    config = TRAIN_PRESETS[args.preset]
    regime = PAPER_REGIMES["rich"]
    val_cells = round(0.05 * regime.n_cells)
    evaluations = config.total_steps // config.eval_every + 2  # + the last step and the test pass
    print(f"rich regime V={regime.n_genes}, {regime.n_cells:,} cells; preset {args.preset}: "
          f"{config.max_cells:,} cells at batch {config.batch_size} ({config.total_steps:,} "
          f"steps), {evaluations} passes over {val_cells:,} held-out cells; {args.seeds} seeds")
    total = 0.0
    for name in args.sizes.split(","):
        bench = benchmark_training(find_size(name), regime.n_genes, config.batch_size,
                                   steps=args.steps, dtype=args.dtype, device=args.device)
        eval_speed = evaluation_cells_per_s(name, regime.n_genes, config.eval_batch_size,
                                            args.device, args.dtype)
        run_s = config.max_cells / bench.cells_per_s + evaluations * val_cells / eval_speed
        total += args.seeds * run_s
        print(f"  {name:<5} P={bench.params:>12,} {bench.dtype}  {bench.cells_per_s:>10,.0f} "
              f"train cells/s  {eval_speed:>10,.0f} eval cells/s  MFU {bench.mfu:6.1%}  "
              f"{run_s / 60:8.1f} min/run")
    print(f"projected sweep wall time on {bench.device}: {total / 3600:.2f} h "
          f"({len(args.sizes.split(','))} sizes x {args.seeds} seeds, one run at a time)")


if __name__ == "__main__":
    main()
