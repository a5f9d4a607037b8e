"""The ``scalelib`` command.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its sub-command(s) and sets ``handler`` on the parsed arguments. Errors a user can fix
(:class:`~scalelib.errors.ScalelibError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from scalelib import __version__
from scalelib.errors import ScalelibError

COMMAND_MODULES = (
    "scalelib.cli.core",
    "scalelib.cli.fit_cmd",
    "scalelib.cli.data_cmd",
    "scalelib.cli.report_cmd",
    "scalelib.cli.export_cmd",
    "scalelib.cli.baselines_cmd",
    "scalelib.cli.calibrate_cmd",
    "scalelib.cli.probe_cmd",
    "scalelib.cli.pergene_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="scalelib",
        description="Scaling laws of masked-reconstruction transformers on single-cell RNA-seq.",
    )
    parser.add_argument("--version", action="version", version=f"scalelib {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ScalelibError as error:
        print(f"scalelib {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept in the results table", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
