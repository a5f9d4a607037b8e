"""Per-step overhead of training the smallest sizes: the loop around the model step.

For each size, trains with ``scalelib.train.train`` (the demo preset on the simulated rich demo
regime, ``--steps`` optimiser steps) and reads the loop's time per step from the run's curve
(first to last step, so evaluations on the schedule are included, set-up and the test pass are
not). In the same process it times the model step alone, ``optimiser_step`` on ready batches
and masks of the same shape (masked forward, loss, backward, clipping, AdamW), before and after
the run. Overhead is the share of the loop's step time spent outside the model step: fetching
and masking batches, the schedule, bookkeeping, progress, validation.

Usage::

    .venv/bin/python benchmarks/step_overhead.py --sizes D0,D1,D2 --steps 300
"""

from __future__ import annotations

import argparse
import time

import torch

from scalelib.config import DEMO_REGIMES, TRAIN_PRESETS, TrainConfig, find_size
from scalelib.data.preprocess import simulate_dataset
from scalelib.hardware import resolve_device, resolve_dtype
from scalelib.model import MaskedExpressionTransformer
from scalelib.train import make_optimizer, optimiser_step, train


def model_step_seconds(size_name: str, n_genes: int, config: TrainConfig, steps: int) -> float:
    """Median seconds of ``optimiser_step`` alone, on random batches made beforehand."""
    size = find_size(size_name)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device, size)
    model = MaskedExpressionTransformer(size, n_genes, dropout=config.dropout,
                                        attention_dropout=config.attention_dropout).to(device)
    optimizer = make_optimizer(model, config, device)
    batches = [torch.rand(config.batch_size, n_genes, device=device) for _ in range(8)]
    masks = [torch.rand(batch.shape, device=device) < config.mask_rate for batch in batches]
    seconds = []
    for step in range(steps):
        started = time.perf_counter()
        optimiser_step(model, optimizer, batches[step % 8], masks[step % 8], config.lr, config,
                       dtype)
        seconds.append(time.perf_counter() - started)
    return sorted(seconds)[len(seconds) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="D0,D1,D2")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    regime = DEMO_REGIMES["rich"]
    dataset = simulate_dataset(regime, seed=0)
    config = TRAIN_PRESETS["demo"].with_(max_steps=args.steps, max_cells=None, patience=None)
    print(f"demo preset, rich demo regime (V={regime.n_genes}), batch {config.batch_size}, "
          f"{args.steps} steps, evaluation every {config.eval_every} on "
          f"{len(dataset.split_indices('val')):,} cells")
    for name in args.sizes.split(","):
        before = model_step_seconds(name, dataset.n_genes, config, 100)
        result = train(dataset, find_size(name), config, progress=False)
        elapsed = result.curve["elapsed_s"]
        loop = (elapsed[-1] - elapsed[0]) / (len(elapsed) - 1)
        after = model_step_seconds(name, dataset.n_genes, config, 100)
        model_step = (before + after) / 2
        print(f"  {name}: loop {loop * 1e3:6.2f} ms/step, model step {model_step * 1e3:6.2f} "
              f"ms/step, overhead {1 - model_step / loop:5.1%} of the step")


if __name__ == "__main__":
    main()
