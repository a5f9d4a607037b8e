"""``scalelib fit TABLE --data COLUMN``: the joint fit ``L(N, D) = E + A N^-alpha + B D^-beta``,
the data-to-parameter ratio below which more parameters stop paying, and compute-optimal
allocations for FLOP budgets (:mod:`scalelib.scaling.allocation`).

Examples::

    scalelib fit data/sweeps/kang8/results.parquet --x params --data n_train_cells \\
        --group-by subsample --bootstrap 200 --flops 1e13
    scalelib fit chinchilla.csv --x "Model Size" --data-from-flops "Training FLOP" \\
        --flops-per-item 6 --y loss --flops 5.76e23 --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from scalelib.errors import ScalelibError

if TYPE_CHECKING:
    import polars as pl

    from scalelib.scaling import JointFit
    from scalelib.scaling.allocation import FlopsPerItem

DERIVED_D = "D"  # name of the data column derived by --data-from-flops
DEFAULT_FLOPS_COLUMN = "flops_per_cell"


def add_joint_options(parser: argparse.ArgumentParser) -> None:
    """The options of the joint fit (``--data`` switches ``scalelib fit`` to it)."""
    group = parser.add_argument_group(
        "joint fit L(N, D) = E + A N^-alpha + B D^-beta (given --data or --data-from-flops; "
        "--x is N)")
    data = group.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="D_COLUMN",
                      help="column of data sizes D (e.g. n_train_cells)")
    data.add_argument("--data-from-flops", metavar="C_COLUMN",
                      help="column of training FLOPs C; D = C / (FLOPs per item at N), e.g. "
                      "tokens = C / 6N with --flops-per-item 6")
    group.add_argument("--flops", type=_flop_list, metavar="BUDGETS",
                       help="training-FLOP budgets (comma-separated, e.g. 1e13,1e15): print the "
                       "compute-optimal N and D of each")
    group.add_argument("--flops-per-item", metavar="K|COLUMN",
                       help="FLOPs per training item: a number K (C = K N D; 6 for language-"
                       "model tokens) or a column of FLOPs per item interpolated in N "
                       f"(default: {DEFAULT_FLOPS_COLUMN}, as the model counts them)")
    group.add_argument("--tolerance", type=float, default=0.1,
                       help="more parameters stop paying where doubling N gains less than this "
                       "share of what doubling D gains (default 0.1)")


def is_joint(args: argparse.Namespace) -> bool:
    """Whether the command asks for the joint fit."""
    return bool(args.data or args.data_from_flops)


def run_joint(args: argparse.Namespace, table: pl.DataFrame) -> int:
    """Fit L(N, D) per group, print the fit, the stop-paying ratio and allocations."""
    from scalelib.scaling import fit_joint_table

    _check_options(args, table)
    table, d_column = _with_data_column(table, args)
    with _progress(args, table) as bar:
        fits = fit_joint_table(table, n=args.x, d=d_column, y=args.y, by=args.group_by,
                               n_bootstrap=args.bootstrap, seed=args.seed,
                               on_resample=lambda: bar.update(), errors="report")
    if not args.group_by and fits[0].status == "error":
        raise ScalelibError(fits[0].message)
    reports = [_report(fit, _group_rows(table, fit, args.group_by), args) for fit in fits]
    if args.out:
        from scalelib.scaling import write_fits

        write_fits([], args.out, x=args.x, y=args.y, joint_fits=fits)
    if args.json:
        from scalelib.scaling import json_ready

        print(json.dumps(json_ready(reports if args.group_by else reports[0]), indent=1,
                         allow_nan=False))
    else:
        print(_summary(fits, reports, args, d_column))
    return 0


def _flop_list(text: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"FLOP budgets must be positive numbers, got {text!r}")
    return values


def _check_options(args: argparse.Namespace, table: pl.DataFrame) -> None:
    """Refuse what cannot work before any fitting starts."""
    if args.method != "huber":
        raise ScalelibError("the joint fit has one method (huber); drop --method grid")
    if not args.tolerance > 0:
        raise ScalelibError(f"--tolerance must be positive, got {args.tolerance}")
    if args.data_from_flops and args.flops_per_item is None and \
            DEFAULT_FLOPS_COLUMN not in table.columns:
        raise ScalelibError("--data-from-flops needs the FLOPs per item: pass --flops-per-item "
                            "K (6 for language-model tokens) or a column")
    named = [args.x, args.y, args.data or args.data_from_flops, *args.group_by]
    if _flops_column(args) is not None and (args.flops or args.data_from_flops):
        named.append(_flops_column(args))
    missing = [name for name in named if name not in table.columns]
    if missing:
        raise ScalelibError(f"no column {', '.join(map(repr, missing))} in the table; choose "
                            f"among {', '.join(map(repr, table.columns))}")


def _flops_column(args: argparse.Namespace) -> str | None:
    """The column of FLOPs per item, or None when --flops-per-item is a number."""
    if args.flops_per_item is None:
        return DEFAULT_FLOPS_COLUMN
    try:
        float(args.flops_per_item)
    except ValueError:
        return args.flops_per_item
    return None


def _cost(args: argparse.Namespace, rows: pl.DataFrame) -> FlopsPerItem:
    from scalelib.scaling.allocation import FlopsPerItem

    column = _flops_column(args)
    if column is None:
        multiple = float(args.flops_per_item)
        if not (math.isfinite(multiple) and multiple > 0):
            raise ScalelibError(f"--flops-per-item must be positive, got {args.flops_per_item}")
        return FlopsPerItem(multiple=multiple)
    if column not in rows.columns:
        raise ScalelibError(f"no column {column!r} of FLOPs per item in the table; pass "
                            "--flops-per-item K (6 for language-model tokens) or a column")
    pairs = rows.select(args.x, column).drop_nulls().unique()
    return FlopsPerItem.from_points(pairs[args.x].cast(float).to_list(),
                                    pairs[column].cast(float).to_list())


def _with_data_column(table: pl.DataFrame, args: argparse.Namespace) -> tuple[pl.DataFrame, str]:
    """The table with ``D`` derived from the FLOPs column when asked (--data-from-flops)."""
    import polars as pl

    if args.data:
        return table, args.data
    cost = _cost(args, table)
    n = table[args.x].cast(pl.Float64).to_numpy()
    flops = table[args.data_from_flops].cast(pl.Float64).to_numpy()
    return table.with_columns(pl.Series(DERIVED_D, flops / cost(n))), DERIVED_D


def _group_rows(table: pl.DataFrame, fit: JointFit, by: list[str]) -> pl.DataFrame:
    import polars as pl

    from scalelib.scaling import ok_rows, transformer_rows

    rows = transformer_rows(ok_rows(table))
    for name, value in fit.group.items():
        rows = rows.filter(pl.col(name).is_null() if value is None else pl.col(name) == value)
    return rows


def _report(fit: JointFit, rows: pl.DataFrame, args: argparse.Namespace) -> dict[str, Any]:
    """The fit as a dictionary with its stop-paying ratios and allocations."""
    out = {"x": args.x, "y": args.y, **fit.to_dict(with_bootstrap_params=False)}
    if not args.group_by:
        out.pop("group")
    from scalelib.scaling.allocation import (
        allocatable,
        beyond_words,
        stop_paying_data,
        stop_paying_intervals,
    )

    if not allocatable(fit):
        return out

    sizes = _display_sizes(rows[args.x].cast(float).to_list())
    d_star = stop_paying_data(fit, sizes, args.tolerance)
    intervals = stop_paying_intervals(fit, sizes, args.tolerance) or [None] * len(sizes)
    d_values = rows[fit.d].cast(float) if fit.d in rows.columns else None
    measured = (d_values.min(), d_values.max()) if d_values is not None else (0, math.inf)
    out["tolerance"] = args.tolerance
    out["stop_paying"] = [{"n": n, "d": float(d), "ratio": float(d / n),
                           "d_ci": list(ci) if ci else None,
                           "ratio_ci": [ci[0] / n, ci[1] / n] if ci else None,
                           "extrapolated": not measured[0] <= d <= measured[1],
                           "beyond": beyond_words(d, low="more parameters pay at every D",
                                                  high="more parameters stop paying at every D")}
                          for n, d, ci in zip(sizes, d_star, intervals)]
    if args.flops:
        out["allocations"] = _allocations(fit, rows, args)
    return out


def _display_sizes(values: list[float], most: int = 8) -> list[float]:
    """The distinct model sizes, or five log-spaced sizes across their range when many."""
    import numpy as np

    sizes = sorted(set(values))
    if len(sizes) <= most:
        return sizes
    return np.geomspace(sizes[0], sizes[-1], 5).tolist()


def _allocations(fit: JointFit, rows: pl.DataFrame, args: argparse.Namespace) -> list[dict]:
    from scalelib.scaling.allocation import allocation_intervals, optimal_allocation

    cost = _cost(args, rows)
    d_column = fit.d
    n_range = (float(rows[args.x].min()), float(rows[args.x].max()))
    d_range = (float(rows[d_column].min()), float(rows[d_column].max())) \
        if d_column in rows.columns else None
    out = []
    for budget in args.flops:
        best = optimal_allocation(fit, budget, cost, n_range=n_range, d_range=d_range)
        ci = allocation_intervals(fit, budget, cost, n_range=n_range)
        out.append({**best.to_dict(), "cost": cost.describe(),
                    "ci": {k: list(v) for k, v in ci.items()} if ci else None})
    return out


def _progress(args: argparse.Namespace, table: pl.DataFrame):
    from tqdm import tqdm

    known = args.group_by and set(args.group_by) <= set(table.columns)
    groups = table.select(args.group_by).n_unique() if known else 1
    return tqdm(total=groups * args.bootstrap, desc="bootstrap", unit="fit", file=sys.stderr,
                disable=args.bootstrap == 0 or not sys.stderr.isatty())


def _summary(fits: list[JointFit], reports: list[dict], args: argparse.Namespace,
             d_column: str) -> str:
    d_name = d_column if args.data else f"{args.data_from_flops} / FLOPs per item"
    lines = [(f"{args.y} = E + A * {args.x}^-alpha + B * D^-beta   with D = {d_name}   "
             f"(huber joint fit of {args.table})")]
    for fit, report in zip(fits, reports):
        lines.append("")
        if fit.group:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in fit.group.items()))
        lines.append(f"    runs    {fit.n_runs} at {fit.n_n} distinct {args.x} x {fit.n_d} "
                     f"distinct D")
        for name in ("E", "A", "B", "alpha", "beta", "r2_log"):
            lines.append(f"    {name:<7} {getattr(fit, name):.4g}" + _ci_text(fit, name))
        if fit.n_bootstrap:
            lines.append(f"    bootstrap {fit.n_bootstrap} resamples, seed {fit.bootstrap_seed}, "
                         f"{fit.bootstrap_failures} skipped")
        lines.append(f"    status  {fit.status}" + (f" (flags: {', '.join(fit.flags)})"
                                                     if len(fit.flags) > 1 else ""))
        if fit.message:
            lines.append(f"    details {fit.message}")
        lines.extend(_allocation_lines(report, args))
    return "\n".join(lines)


def _ci_text(fit: JointFit, name: str) -> str:
    """A parameter's bootstrap interval for the summary ('' without one). E of a fit without
    a floor gets none: each resample starts from the full fit, where E ~0 has no gradient, so
    every resample returns the same E and the interval would look exact."""
    if not fit.ci or name not in fit.ci:
        return ""
    if name == "E" and "no_floor" in fit.flags:
        return "   no interval (E ~0 has no gradient: resamples started from this fit keep it)"
    low, high = fit.ci[name]
    return f"   {fit.ci_level:.0%} CI [{low:.4g}, {high:.4g}]"


def _allocation_lines(report: dict, args: argparse.Namespace) -> list[str]:
    if report["status"] != "error" and "stop_paying" not in report:
        flat = " or ".join(name for name, exponent in ((args.x, report["alpha"]),
                                                       ("D", report["beta"])) if not exponent > 0)
        return [(f"    no stop-paying ratio or compute-optimal allocation: the fitted {args.y} "
                 f"does not fall with {flat} (exponent 0), so nothing trades {args.x} against D")]
    lines = []
    if "unidentified" in report.get("flags", ()) and ("stop_paying" in report
                                                      or "allocations" in report):
        lines.append("    the fit is unidentified (see details): the data do not pin the "
                     "numbers below")
    if "stop_paying" in report:
        lines.append(f"    more parameters stop paying below D/N (doubling {args.x} gains less "
                     f"than {report['tolerance']:g} x what doubling D gains)"
                     + (f", {report['ci_level']:.0%} CI:" if report.get("n_bootstrap") else ":"))
        for entry in report["stop_paying"]:
            numbers = (f"D* {_with_ci(entry['d'], entry['d_ci'])}   "
                       f"D*/N {_with_ci(entry['ratio'], entry['ratio_ci'])}")
            where = " (outside the fitted D)" if entry["extrapolated"] else ""
            lines.append(f"      {args.x} {entry['n']:<10.4g} {entry['beyond'] or numbers + where}")
    for entry in report.get("allocations", []):
        head = f"    compute-optimal at {entry['flops']:.3g} FLOPs ({entry['cost']}): "
        if entry["edge"]:
            side = "smaller" if entry["edge"] == "below" else "larger"
            lines.append(f"{head}beyond the measured range: the fitted {args.y} still falls "
                         f"toward {side} {args.x} at the end of the search ({entry['n']:.3g})")
            continue
        ci = entry["ci"] or {}
        where = " (extrapolated beyond the fitted N or D)" if entry["extrapolated"] else ""
        lines.append(f"{head}{args.x} {_with_ci(entry['n'], ci.get('n'))}, "
                     f"D {_with_ci(entry['d'], ci.get('d'))} "
                     f"({_with_ci(entry['ratio'], ci.get('ratio'))} per parameter), "
                     f"{args.y} {entry['loss']:.4g}{where}")
    return lines


def _with_ci(value: float, ci: list[float] | None) -> str:
    """A number with its interval; an interval end that is 0 or infinite is put in words."""
    if not ci:
        return f"{value:.4g}"
    ends = [f"{end:.3g}" if 0 < end < math.inf else "undefined" if math.isnan(end) else
            "beyond the measured range" for end in ci]
    return f"{value:.4g} [{ends[0]}, {ends[1]}]"
