"""Per-step overhead of training the smallest sizes: the loop around the model step.

For each size and torch thread count, trains with ``scalelib.train.train`` as a sweep does (the
demo preset on the simulated rich demo regime, ``--steps`` optimiser steps, writing its run
directory, so the resume file saved after each evaluation is counted) and reads the loop's time
per step from the run's curve (first to last step: evaluations on the schedule are included,
set-up and the final test pass are not). The model step, ``optimiser_step`` (masked forward,
loss, backward, clipping, AdamW), and the validation passes are timed as they run inside the
loop. Overhead is the share of the loop's step time spent outside the model step, split into
validation passes and the rest (fetching and masking batches, the schedule, bookkeeping,
copies of the best weights, resume files). Every setting is measured ``--repeats`` times,
interleaved, and medians are printed.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_overhead.py --sizes D0,D1,D2 --threads 1,2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

import scalelib.train
from scalelib.config import DEMO_REGIMES, TRAIN_PRESETS, TrainConfig, find_size
from scalelib.data.preprocess import simulate_dataset
from scalelib.data.store import ExpressionDataset
from scalelib.train import train


def timed(calls: list[float], function: Callable) -> Callable:
    """``function``, appending the seconds of each call to ``calls``."""
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        calls.append(time.perf_counter() - started)
        return result
    return wrapper


def step_seconds(dataset: ExpressionDataset, size_name: str,
                 config: TrainConfig) -> tuple[float, float, float]:
    """Seconds per step of the training loop, of its model steps and of its validation passes."""
    model_steps: list[float] = []
    passes: list[float] = []
    originals = scalelib.train.optimiser_step, scalelib.train.evaluate
    scalelib.train.optimiser_step = timed(model_steps, originals[0])  # looked up when called
    scalelib.train.evaluate = timed(passes, originals[1])
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            result = train(dataset, find_size(size_name), config, out_dir=out_dir,
                           progress=False)
    finally:
        scalelib.train.optimiser_step, scalelib.train.evaluate = originals
    curve = result.curve
    steps = curve.height - 1  # the time from the end of step 1 to the end of the last
    loop = (curve["elapsed_s"][-1] - curve["elapsed_s"][0]) / steps
    in_loop = curve["val_mse"].is_not_null().sum()  # the passes after these are test and final
    return loop, sum(model_steps[1:]) / steps, sum(passes[:in_loop]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="D0,D1,D2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", default="1", help="torch thread counts, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    regime = DEMO_REGIMES["rich"]
    dataset = simulate_dataset(regime, seed=0)
    config = TRAIN_PRESETS["demo"].with_(max_steps=args.steps, max_cells=None, patience=None)
    print(f"demo preset, rich demo regime (V={regime.n_genes}), batch {config.batch_size}, "
          f"{args.steps} steps, evaluation every {config.eval_every} on "
          f"{len(dataset.split_indices('val')):,} cells; median of {args.repeats}")
    threads = [int(n) for n in args.threads.split(",")]
    names = args.sizes.split(",")
    measured: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for _ in range(args.repeats):  # interleaved, so that a busy minute hits every setting
        for name in names:
            for n in threads:
                torch.set_num_threads(n)
                measured.setdefault((name, n), []).append(step_seconds(dataset, name, config))
    for (name, n), rows in measured.items():
        loop, model_step, validation = (statistics.median(column) for column in zip(*rows))
        overhead = 1 - model_step / loop
        print(f"  {name} {n} thread(s): loop {loop * 1e3:6.2f} ms/step, model step "
              f"{model_step * 1e3:6.2f} ms/step, overhead {overhead:5.1%} of the step "
              f"(validation {validation / loop:5.1%}, the rest {overhead - validation / loop:5.1%})")


if __name__ == "__main__":
    main()
