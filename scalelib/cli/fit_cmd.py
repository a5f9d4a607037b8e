"""``scalelib fit``: fit ``y = a x^-alpha + c`` to the points of any CSV or parquet table, or
with ``--data`` the joint ``L(N, D) = E + A N^-alpha + B D^-beta`` (:mod:`scalelib.cli.joint_fit`).

Examples::

    scalelib fit data/demo/results.parquet --group-by regime --bootstrap 1000
    scalelib fit ../shared/data/chinchilla/svg_extracted_data.csv --x "Model Size" --y loss --json
    scalelib fit results.parquet --data n_train_cells --group-by subsample --flops 1e13
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scalelib.atomic import check_output_file
from scalelib.cli.joint_fit import add_joint_options, is_joint, run_joint
from scalelib.errors import ScalelibError
from scalelib.fitrules import METHODS  # pure Python: no scipy at parser build

if TYPE_CHECKING:
    import polars as pl

    from scalelib.scaling import PowerLawFit

# polars and scipy load when a fit runs, not whenever the CLI builds its parser.
READERS = {  # extension -> polars reader and its options
    ".csv": ("read_csv", {}),
    ".tsv": ("read_csv", {"separator": "\t"}),
    ".parquet": ("read_parquet", {}),
    ".pq": ("read_parquet", {}),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit`` sub-command."""
    parser = subparsers.add_parser(
        "fit",
        help="fit y = a x^-alpha + c, or L(N, D) with --data, (with bootstrap intervals) "
        "to a table",
        description="Fit y = a x^-alpha + c to the points of a CSV or parquet table, one "
        "point per row. Rows of a table with a text status column are used only when "
        "status is 'ok'. bits = 0.5 log2(2 pi e c) per masked gene (c taken as the "
        "variance of Gaussian noise); with --y best_val_bits (likelihood heads) c is "
        "itself in bits.",
    )
    parser.add_argument("table", type=Path, metavar="TABLE",
                        help="CSV, TSV or parquet table (e.g. a sweep's results.parquet)")
    parser.add_argument("--x", default="params", metavar="COLUMN",
                        help="column of model sizes (default: params)")
    parser.add_argument("--y", default="best_val_mse", metavar="COLUMN",
                        help="column of losses (default: best_val_mse)")
    parser.add_argument("--method", choices=METHODS, default="huber",
                        help="huber: log-sum-exp, Huber loss, L-BFGS-B (default); "
                        "grid: the reference study's grid over c")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="bootstrap resamples for 95%% intervals (default: 0, none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--min-x", type=float, default=None, metavar="X",
                        help="fit only rows whose x is at least X (e.g. to leave out models "
                        "too small to learn anything)")
    parser.add_argument("--group-by", nargs="+", default=[], metavar="COL",
                        help="fit each combination of these columns' values separately")
    parser.add_argument("--json", action="store_true",
                        help="print JSON (an object, or a list of objects with --group-by)")
    parser.add_argument("--out", type=Path, metavar="FITS.json",
                        help="also write the fits file (with bootstrap samples) here")
    add_joint_options(parser)
    parser.set_defaults(handler=run_fit)


def read_table(path: Path) -> pl.DataFrame:
    """Read a CSV, TSV or parquet table, or raise a ScalelibError naming the fix."""
    import polars as pl

    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ScalelibError(
            f"cannot read {path}: unsupported extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(READERS)}"
        )
    if not path.is_file():
        raise ScalelibError(f"no table at {path}; check the path")
    try:
        name, options = reader
        return getattr(pl, name)(path, **options)
    except Exception as error:  # polars raises several types for a malformed file
        raise ScalelibError(
            f"cannot read {path} ({error}); check that it is a valid table"
        ) from error


def run_fit(args: argparse.Namespace) -> int:
    """Fit, print a summary or JSON, optionally write the fits file; return the exit status."""
    from scalelib.scaling import json_ready, write_fits

    if args.bootstrap < 0:
        raise ScalelibError("--bootstrap must be 0 or a positive number of resamples")
    if args.out:
        check_output_file(args.out, inputs=(args.table,), replaceable=_is_fits_file)
    table = _rows_from(read_table(args.table), args.x, args.min_x)
    if is_joint(args):
        return run_joint(args, table)
    if args.flops or args.flops_per_item:
        raise ScalelibError("--flops and --flops-per-item need the joint fit; give the data "
                            "column with --data (or --data-from-flops)")
    fits = _fit_with_progress(table, args)
    if not args.group_by and fits[0].status == "error":
        raise ScalelibError(fits[0].message)
    if args.out:
        write_fits(fits, args.out, x=args.x, y=args.y)
    if args.json:
        objects = [_json_object(fit, args) for fit in fits]
        print(json.dumps(json_ready(objects if args.group_by else objects[0]), indent=1,
                         allow_nan=False))
    else:
        print(_summary(fits, args))
    return 0


def _is_fits_file(path: Path) -> bool:
    from scalelib.scaling import read_fits

    try:
        read_fits(path)
    except ScalelibError:
        return False
    return True


def _rows_from(table: pl.DataFrame, x: str, min_x: float | None) -> pl.DataFrame:
    import polars as pl

    if min_x is None:
        return table
    if x not in table.columns:
        raise ScalelibError(f"no column {x!r} in the table; choose --x among {table.columns}")
    kept = pl.col(x) >= min_x
    if "model_family" in table.columns:  # baselines have no size; the baseline check needs them
        kept = kept | (pl.col("model_family") != "transformer")
    return table.filter(kept)


def _fit_with_progress(table: pl.DataFrame, args: argparse.Namespace) -> list[PowerLawFit]:
    from tqdm import tqdm

    from scalelib.scaling import fit_groups

    known = args.group_by and set(args.group_by) <= set(table.columns)
    groups = table.select(args.group_by).n_unique() if known else 1  # fit_groups checks names
    with tqdm(total=groups * args.bootstrap, desc="bootstrap", unit="fit", file=sys.stderr,
              disable=args.bootstrap == 0 or not sys.stderr.isatty()) as bar:
        return fit_groups(table, x=args.x, y=args.y, by=args.group_by, methods=(args.method,),
                          n_bootstrap=args.bootstrap, seed=args.seed,
                          on_resample=lambda: bar.update())


def _json_object(fit: PowerLawFit, args: argparse.Namespace) -> dict:
    from scalelib.scaling import describe, verdict

    out = {"x": args.x, "y": args.y}
    out.update(fit.to_dict(with_bootstrap_params=False))
    out.update(verdict=verdict(out), summary=describe(out))
    if not args.group_by:
        out.pop("group")
    return out


def _summary(fits: list[PowerLawFit], args: argparse.Namespace) -> str:
    from scalelib.scaling import describe, verdict

    lines = [f"{args.y} = a * {args.x}^-alpha + c   ({args.method} fit of {args.table})"]
    for fit in fits:
        lines.append("")
        if fit.group:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in fit.group.items()))
        lines.append(f"    runs    {fit.n_runs} at {fit.n_x} distinct {args.x}")
        in_bits = args.y.endswith("_bits")  # a likelihood head's bits: c is already in bits
        for name in ("alpha", "a", "c") if in_bits else ("alpha", "a", "c", "bits"):
            value = getattr(fit, name)
            text = f"    {name:<7} {value:.4g}"
            if fit.ci and name in fit.ci:
                low, high = fit.ci[name]
                text += f"   {fit.ci_level:.0%} CI [{low:.4g}, {high:.4g}]"
            if name == "bits":
                text += "   per masked gene (Gaussian noise of variance c)"
            if name == "c" and in_bits:
                text += "   bits per masked gene (the floor of the fitted bits)"
            lines.append(text)
        lines.append(f"    r2      {fit.r2:.4f} (method's own)   r2_log {fit.r2_log:.4f}")
        if fit.n_bootstrap:
            lines.append(f"    bootstrap {fit.n_bootstrap} resamples, seed {fit.bootstrap_seed}, "
                         f"{fit.bootstrap_failures} skipped")
            usable = fit.n_bootstrap - fit.bootstrap_failures
            if usable < fit.n_bootstrap / 2:
                lines.append(f"    warning: intervals unreliable, only {usable} resamples kept "
                             "(the others had fewer than 3 distinct sizes or failed); add sizes or seeds")
        lines.append(f"    status  {fit.status}" + (f" (flags: {', '.join(fit.flags)})"
                                                     if len(fit.flags) > 1 else ""))
        as_dict = fit.to_dict(with_bootstrap_params=False)
        lines.append(f"    verdict {verdict(as_dict)}: {describe(as_dict)}")
        if fit.message:
            lines.append(f"    details {fit.message}")
    return "\n".join(lines)
