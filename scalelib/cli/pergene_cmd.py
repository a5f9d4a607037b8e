"""``scalelib pergene``: per-gene validation error of the best model of each size in a sweep.

Examples::

    scalelib pergene --sweep data/demo
    scalelib pergene --sweep data/sweeps/kang8 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scalelib.errors import ScalelibError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pergene`` sub-command."""
    parser = subparsers.add_parser(
        "pergene",
        help="per-gene validation error (and bits) of the best model of each size",
        description="Gather the per-gene validation error of the best run of each size (per "
        "dataset, objective and data size) into DIR/pergene.parquet and print how the error "
        "spreads across genes and which genes carry most of it. Runs trained before per-gene "
        "files existed are rescored from their checkpoints on their datasets.",
    )
    parser.add_argument("--sweep", type=Path, required=True, metavar="DIR",
                        help="a sweep directory (`scalelib sweep --out DIR`)")
    parser.add_argument("--json", action="store_true",
                        help="print the per-run summary as a JSON list")
    parser.set_defaults(handler=run_pergene)


def run_pergene(args: argparse.Namespace) -> int:
    """Write ``pergene.parquet`` into the sweep directory and print the per-run summary."""
    from scalelib.atomic import atomic_path
    from scalelib.pergene import PERGENE_FILE, pergene_summary, pergene_table
    from scalelib.results import print_table

    if not args.sweep.is_dir():
        raise ScalelibError(f"no sweep directory at {args.sweep}; pass the --out of a sweep")
    table = pergene_table(args.sweep)
    with atomic_path(args.sweep / PERGENE_FILE) as temporary:
        table.write_parquet(temporary)
    summary = pergene_summary(table)
    if args.json:
        print(json.dumps(summary.to_dicts(), indent=1, default=str))
        return 0
    print_table(summary.select("regime", "objective", "n_train_cells", "size", "params",
                               "best_val_mse", "best_val_bits", "gene_mse_median", "gene_mse_q10",
                               "gene_mse_q90", "gene_mse_cv", "genes_for_half"))
    for row in summary.iter_rows(named=True):
        print(f"{row['regime']} {row['objective']} {row['size']}: most of the error in "
              f"{row['top_genes']}")
        if row["top_bits_genes"]:
            print(f"{row['regime']} {row['objective']} {row['size']}: most of the bits in "
                  f"{row['top_bits_genes']}")
    print(f"per-gene table: {args.sweep / PERGENE_FILE}")
    return 0
