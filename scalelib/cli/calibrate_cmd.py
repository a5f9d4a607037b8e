"""``scalelib calibrate``: fit the scaling law on a mixture whose floor is known, and compare.

Examples::

    scalelib calibrate --preset smoke
    scalelib calibrate --preset demo --fit-to data/datasets/pbmc3k --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scalelib.cli.core import add_workers_option
from scalelib.config import CALIBRATION_PRESETS
from scalelib.errors import ScalelibError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` sub-command."""
    parser = subparsers.add_parser(
        "calibrate",
        help="train a ladder to convergence on data with a known floor; compare fitted c and "
             "bits with the truth",
        description="Sample a Gaussian-mixture dataset whose Bayes-optimal masked MSE and "
        "conditional entropy are exact, train a ladder on it to convergence, fit L = a P^-alpha "
        "+ c by both methods and print fitted c, the true floor, the best model, ridge, "
        "0.5 log2(2 pi e c) and the true bits side by side, with the bits the same ladder "
        "measures directly with a Gaussian likelihood head (and their fitted floor). Exits 1 "
        "when the best model beats the floor, or the head's bits fall below the true bits, "
        "beyond the error bar (something is wrong).",
    )
    parser.add_argument("--preset", default="smoke", choices=sorted(CALIBRATION_PRESETS),
                        help="smoke (minutes: V=16, 2 types, rank 2, sizes D1-D4) or demo (the "
                             "demo ladder, V=128, 8 types, rank 8, 20,000 cells); default smoke")
    parser.add_argument("--fit-to", type=Path, metavar="PATH",
                        help="fit the mixture to a dataset directory, .h5ad file or 10x "
                             "directory (default: to cells of the count simulator)")
    parser.add_argument("--fit-labels", default="cell_type",
                        help="obs column of cell types of --fit-to (absent: k-means clusters)")
    parser.add_argument("--types", type=int,
                        help="cell types of the count simulator (or clusters of unlabelled "
                             "--fit-to data); default the preset's (smoke 2, demo 8)")
    parser.add_argument("--rank", type=int,
                        help="gene programs per type; default the preset's (smoke 2, demo 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and runs (0)")
    parser.add_argument("--out", type=Path,
                        help="output directory (default data/calibrate/<preset>, with -fitted "
                             "when --fit-to is given)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_workers_option(parser)
    parser.set_defaults(handler=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from scalelib.calibrate import print_calibration, run_calibration

    if any(value is not None and value < 1 for value in (args.types, args.rank)):
        raise ScalelibError("--types and --rank must be positive integers")
    if args.fit_to is not None and not args.fit_to.exists():
        raise ScalelibError(f"--fit-to {args.fit_to} does not exist; give a dataset directory, "
                            "an .h5ad file or a 10x directory")
    out = args.out or Path("data/calibrate") / (args.preset + ("-fitted" if args.fit_to else ""))
    calibration = run_calibration(out, preset=args.preset, fit_to=args.fit_to,
                                  n_types=args.types, rank=args.rank, labels=args.fit_labels,
                                  seed=args.seed, progress=not args.json,
                                  workers=args.workers)
    if args.json:
        print(json.dumps(calibration.to_dict(), indent=1, allow_nan=False))
    else:
        print_calibration(calibration)
    if calibration.floor_beaten or calibration.entropy_beaten:
        if args.json:  # the table's warning is not printed with --json
            beaten = ("the best model beats the Bayes-optimal floor" if calibration.floor_beaten
                      else "the Gaussian head's bits fall below the true bits")
            print(f"WARNING: SOMETHING IS WRONG: {beaten} beyond its error bar", file=sys.stderr)
        return 1
    return 0
