"""Cost of the resume file: time spent saving it at each evaluation, as a share of the run.

For each size, trains with ``scalelib.train.train`` into a temporary directory (the demo preset
on the simulated rich demo regime, patience off so every run takes the same steps) and times
every :meth:`scalelib.resume.ResumeFile.save` call. Prints the saves, their total and mean
time, the run's wall time, the ratio of the two, the file's size, and the time to load it back
(``torch.load(..., weights_only=True)``).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/resume_overhead.py --sizes D2,D4,D6
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Self

import torch

from scalelib.config import DEMO_REGIMES, TRAIN_PRESETS, find_size
from scalelib.data.preprocess import simulate_dataset
from scalelib.resume import RESUME_NAME, ResumeFile
from scalelib.train import train


class TimedSaves:
    """Wraps ``ResumeFile.save`` to time each call and keep a copy of the last file."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.size_bytes = 0
        self.load_seconds = 0.0
        self._save = ResumeFile.save

    def __enter__(self) -> Self:
        def timed(resume: ResumeFile, *args, **kwargs) -> None:
            started = time.perf_counter()
            self._save(resume, *args, **kwargs)
            self.seconds.append(time.perf_counter() - started)
            self.size_bytes = resume.path.stat().st_size
            started = time.perf_counter()
            torch.load(resume.path, weights_only=True)
            self.load_seconds = time.perf_counter() - started

        ResumeFile.save = timed
        return self

    def __exit__(self, *exc: object) -> None:
        ResumeFile.save = self._save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="D2,D4,D6")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimiser steps (default: the demo preset's budget)")
    args = parser.parse_args()

    regime = DEMO_REGIMES["rich"]
    dataset = simulate_dataset(regime, seed=0)
    config = TRAIN_PRESETS["demo"].with_(patience=None)
    if args.steps is not None:
        config = config.with_(max_steps=args.steps, max_cells=None)
    print(f"demo preset, rich demo regime (V={regime.n_genes}), {config.total_steps} steps, "
          f"evaluation every {config.eval_every}, {torch.get_num_threads()} torch thread(s)")
    print(f"{'size':<5}{'params':>9}{'saves':>7}{'save s':>9}{'ms/save':>9}{'run s':>8}"
          f"{'ratio':>8}{'KiB':>8}{'load ms':>9}")
    for name in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as folder, TimedSaves() as saves:
            result = train(dataset, find_size(name), config, out_dir=Path(folder),
                           progress=False)
            assert not (Path(folder) / RESUME_NAME).exists()
        total = sum(saves.seconds)
        print(f"{name:<5}{result.params:>9,}{len(saves.seconds):>7}{total:>9.3f}"
              f"{1e3 * total / max(1, len(saves.seconds)):>9.1f}{result.wall_time_s:>8.1f}"
              f"{total / result.wall_time_s:>8.2%}{saves.size_bytes / 1024:>8.0f}"
              f"{1e3 * saves.load_seconds:>9.1f}")


if __name__ == "__main__":
    main()
