"""The demo ladder trained to convergence: cells, steps and wall time per run, and the fits' c.

Runs the demo (:func:`scalelib.demo.run_demo`, what ``scalelib demo --budget converge --cells
CAP`` runs) in the ``converge`` budget mode for each variant of the training settings asked
for (every combination of ``--batch``, ``--dtype`` and ``--eval-every``), each variant in its
own directory under ``--out`` on the same simulated datasets, one after the other. Prints per
run: regime, size, cells seen, steps, converged, the last doubling's gain (the relative
improvement of the last cool-down over the one at half the steps), best validation MSE and
wall time; per variant the demo's total wall time (baselines, fits and figures included; the
datasets are simulated before the clock starts), the converged count per regime and the
fitted floor ``c`` with its bootstrap interval (grid and huber) beside those of a fixed-budget
demo directory given with ``--compare``.

The cap is the rich regime's; the limited regime gets half (``REGIME_BUDGET_FRACTION``). A
batch other than the preset's (64) scales the peak learning rate by ``(batch / 64) ** 0.5``
(``--lr-rule sqrt``) or ``batch / 64`` (``linear``).

Usage::

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/converged_demo.py \\
        --sizes D6 --cells 400000 --workers 2 --compare data/demo
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from scalelib.config import TRAIN_PRESETS, TrainConfig
from scalelib.data.preprocess import load_or_simulate
from scalelib.demo import DEMO_REGIMES, run_demo
from scalelib.results import print_table
from scalelib.scaling import read_fits, transformer_rows

LR_RULES = {"sqrt": 0.5, "linear": 1.0}


@dataclass(frozen=True)
class Variant:
    """One combination of the settings compared."""

    batch: int
    dtype: str
    eval_every: int | None

    @property
    def label(self) -> str:
        """Short name, also the variant's directory."""
        every = "" if self.eval_every is None else f"-eval{self.eval_every}"
        return f"b{self.batch}-{self.dtype}{every}"

    def config(self, preset: str, cells: int, lr_rule: str) -> TrainConfig:
        """The training preset in the converge mode, capped at ``cells``, with this variant's
        settings (the peak rate scaled with the batch from the preset's by ``lr_rule``)."""
        base = TRAIN_PRESETS[preset]
        scale = (self.batch / base.batch_size) ** LR_RULES[lr_rule]
        changes = {"eval_every": self.eval_every} if self.eval_every is not None else {}
        return base.with_(budget_mode="converge", max_cells=cells, max_steps=None,
                          batch_size=self.batch, lr=base.lr * scale, dtype=self.dtype,
                          **changes)


def c_intervals(fits_json: Path) -> dict[tuple[str, str], str]:
    """``(regime, method) -> "c [low, high] (status)"`` of a demo directory's fits."""
    cells = {}
    for fit in read_fits(fits_json).fits:
        low, high = fit.ci.get("c", (math.nan, math.nan)) if fit.ci else (math.nan, math.nan)
        cells[(fit.group.get("regime"), fit.method)] = (
            f"{fit.c:.4f} [{low:.4f}, {high:.4f}] ({fit.status})")
    return cells


def run_variant(variant: Variant, args: argparse.Namespace) -> pl.DataFrame:
    """Train the demo with ``variant`` into its directory; print its runs and summary."""
    out = args.out / variant.label
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "datasets").exists():
        (out / "datasets").symlink_to((args.out / "datasets").resolve())
    config = variant.config(args.preset, args.cells, args.lr_rule)
    print(f"\n== {variant.label}: batch {config.batch_size}, peak lr {config.lr:.4g} at width "
          f"{config.lr_reference_width}, dtype {config.dtype}, eval every {config.eval_every} "
          f"steps, cap {args.cells:,} cells (rich), {args.workers} worker(s)", flush=True)
    summary = run_demo(out, preset=args.preset, seeds=args.seeds, n_bootstrap=args.bootstrap,
                       workers=args.workers, config=config, sizes=args.sizes,
                       regimes=args.regimes, progress=False)
    runs = transformer_rows(summary.results).sort("regime", "params")
    print_table(runs.select("regime", "size", "cells_seen", "steps", "converged",
                            pl.col("val_improvement").alias("last_doubling_gain"),
                            "best_val_mse", "wall_time_s"))
    print(f"{variant.label}: total wall {summary.wall_time_s:.0f} s "
          f"({summary.wall_time_s / 60:.1f} min); sum of run walls "
          f"{runs['wall_time_s'].sum():.0f} s")
    for regime in args.regimes:
        of = runs.filter(pl.col("regime") == regime)
        print(f"{variant.label}: {regime}: {of['converged'].sum()} of {of.height} converged")
    print_fits(out / "fits.json", args.compare)
    return runs.with_columns(pl.lit(variant.label).alias("variant"),
                             pl.lit(summary.wall_time_s).alias("demo_wall_s"))


def print_fits(fits_json: Path, compare: Path | None) -> None:
    """The fitted c per regime and method, beside the fixed-budget demo's when given."""
    mine = c_intervals(fits_json)
    theirs = c_intervals(compare / "fits.json") if compare is not None else {}
    for (regime, method), text in mine.items():
        other = f"   fixed budget: {theirs[(regime, method)]}" if (regime, method) in theirs else ""
        print(f"  c {regime:<8}{method:<6} {text}{other}")


def parse_args() -> argparse.Namespace:
    def items(text: str) -> list[str]:
        return [item.strip() for item in text.split(",") if item.strip()]

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("demo", "smoke"), default="demo",
                        help="demo, or smoke to check this script in seconds")
    parser.add_argument("--sizes", type=items, help="demo sizes, e.g. D5,D6 (default all)")
    parser.add_argument("--regimes", type=items, default=list(DEMO_REGIMES),
                        help="rich,limited (default both)")
    parser.add_argument("--cells", type=int, default=400_000,
                        help="cap in cells of the rich regime (default 400000; limited half)")
    parser.add_argument("--workers", type=int, default=1, help="processes training at once")
    parser.add_argument("--batch", type=lambda t: [int(b) for b in items(t)], default=[64],
                        help="batch sizes to compare, e.g. 64,256 (default 64, the demo preset's)")
    parser.add_argument("--lr-rule", choices=sorted(LR_RULES), default="sqrt",
                        help="how the peak rate scales with the batch (default sqrt)")
    parser.add_argument("--dtype", type=items, default=["auto"],
                        help="precisions to compare, e.g. fp32,bf16 (default auto)")
    parser.add_argument("--eval-every", type=lambda t: [int(e) for e in items(t)],
                        default=[None], help="evaluation intervals in steps (default 50)")
    parser.add_argument("--seeds", type=lambda t: [int(s) for s in items(t)], default=[0])
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--compare", type=Path,
                        help="a fixed-budget demo directory (with fits.json) to compare c with")
    parser.add_argument("--out", type=Path,
                        help="keep the runs here (default: a temporary directory; a second "
                        "call on the same --out reuses finished runs, so its times are not "
                        "a measurement)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        args.out = args.out or Path(scratch)
        for regime in args.regimes:  # simulated before any clock starts
            load_or_simulate(regime, args.preset, args.out / "datasets")
        started = time.perf_counter()
        variants = [Variant(*combo)
                    for combo in itertools.product(args.batch, args.dtype, args.eval_every)]
        tables = [run_variant(variant, args) for variant in variants]
    print(f"\nall variants: {time.perf_counter() - started:.0f} s")
    if len(tables) > 1:
        print_table(pl.concat(tables).select("variant", "regime", "size", "cells_seen",
                                             "converged", "best_val_mse", "wall_time_s")
                    .sort("regime", "size", "variant"))


if __name__ == "__main__":
    main()
