"""``scalelib report``: prepare the Quarto report's data from a results directory and render it.

Examples::

    scalelib report --results data/demo                 # prepare report/_data, render if quarto
    scalelib report --results data/sweeps/x --no-render # prepare only
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from scalelib.errors import ScalelibError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="prepare the Quarto report from a results directory and render it",
        description="Copy the results table, fits and dataset manifests of a results directory "
        "into the report's data folder, write numbers.json with every number the report "
        "quotes, and render report/ to HTML and PDF (Typst) when quarto is on PATH.",
    )
    parser.add_argument("--results", type=Path, default=Path("data/demo"), metavar="DIR",
                        help="output of `scalelib demo` or `scalelib sweep` (default data/demo)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="prepared data folder (default PROJECT/_data)")
    parser.add_argument("--project", type=Path, default=Path("report"), metavar="DIR",
                        help="the Quarto project (default report)")
    parser.add_argument("--no-render", action="store_true",
                        help="prepare the data only; do not run quarto")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples when the fits must be computed (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Prepare the data, then render or say how; return the exit status."""
    from scalelib.report import install_message, prepare_report, quarto_executable, render_report
    from scalelib.report.render import check_project, render_command

    if args.bootstrap < 0:
        raise ScalelibError("--bootstrap must be 0 or a positive number of resamples")
    out = args.out or args.project / "_data"
    prepared = prepare_report(args.results, out, n_bootstrap=args.bootstrap, seed=args.seed)
    numbers = prepared.numbers
    print(f"prepared {out}: {numbers['runs']['total']} runs, "
          f"{len(numbers['regimes'])} regime(s); fits: {prepared.fits_source}")
    if args.no_render:
        check_project(args.project)
        print(f"render with: SCALELIB_REPORT_DATA={out.resolve()} "
              f"{' '.join(render_command(args.project))}")
        return 0
    if quarto_executable() is None:
        print(install_message(out, args.project, _rerun_command(args)))
        return 0
    output = render_report(args.project, out)
    print(f"rendered the report into {output} (index.html, index.pdf)")
    return 0


def _rerun_command(args: argparse.Namespace) -> str:
    """The ``scalelib report`` command line that repeats this one."""
    program = "scalelib" if shutil.which("scalelib") else f"{sys.executable} -m scalelib"
    words = [f"{program} report", f"--results {args.results}"]
    if args.out:
        words.append(f"--out {args.out}")
    if args.project != Path("report"):
        words.append(f"--project {args.project}")
    return " ".join(words)
