"""Load the prepared folder that the report's cells read (see :mod:`scalelib.report.prepare`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from scalelib.errors import ScalelibError
from scalelib.report.numbers import NUMBERS_SCHEMA
from scalelib.results import read_results
from scalelib.scaling import FitsFile, data_size_rows, read_fits, scaling_rows

DATA_ENV = "SCALELIB_REPORT_DATA"
DEFAULT_DATA = "_data"


def resolve_data_dir(data: str | Path | None = None) -> Path:
    """The prepared folder: ``data`` (a Quarto parameter), else ``$SCALELIB_REPORT_DATA``, else
    ``_data`` beside the document (Quarto runs cells in the document's folder).

    Parameters
    ----------
    data
        The prepared folder (the ``--out`` of ``scalelib report``); None or empty falls back
        to the environment variable, then ``_data`` relative to the working directory.

    Raises
    ------
    ScalelibError
        The chosen folder has no ``numbers.json``.
    """
    chosen = data or os.environ.get(DATA_ENV) or DEFAULT_DATA
    path = Path(chosen)
    if not (path / "numbers.json").is_file():
        raise ScalelibError(
            f"no prepared report data at {path.resolve()} (numbers.json missing); run "
            "`scalelib report --results DIR` first, or set SCALELIB_REPORT_DATA to its --out"
        )
    return path


@dataclass(frozen=True)
class ReportData:
    """Everything the report's cells read: the results table, the fits, manifests, numbers.

    Parameters
    ----------
    data_dir
        The prepared folder.
    numbers
        ``numbers.json`` (layout: :func:`scalelib.report.numbers.compute_numbers`).
    results
        The results table (every run, failed ones included).
    fits
        ``fits.json``: power-law fits per regime and method, joint fits of data sweeps.
    manifests
        Dataset manifests by fingerprint.
    """

    data_dir: Path
    numbers: dict[str, Any]
    results: pl.DataFrame
    fits: FitsFile
    manifests: dict[str, dict] = field(default_factory=dict)

    @property
    def regimes(self) -> list[str]:
        """Regimes in report order."""
        return [entry["regime"] for entry in self.numbers["regimes"]]

    @property
    def scaling(self) -> pl.DataFrame:
        """The runs the fits against P use (each dataset at its largest training set)."""
        return scaling_rows(self.results)

    @property
    def data_size(self) -> pl.DataFrame:
        """The runs of data-size sweeps (empty when there is none)."""
        return data_size_rows(self.results)

    @property
    def probes(self) -> pl.DataFrame:
        """The downstream probes of the numbers' label (empty when none were prepared)."""
        from scalelib.report.probes import probes_of

        entry = self.numbers.get("probes")
        table = probes_of(self.data_dir)
        return table.filter(pl.col("label") == entry["label"]) if entry else table.clear()

    @property
    def pergene(self) -> pl.DataFrame | None:
        """The per-gene table of the results directory (None when it had none)."""
        path = self.data_dir / "pergene.parquet"
        return pl.read_parquet(path) if path.is_file() else None

    @property
    def figures_dir(self) -> Path:
        """Where figures are saved as PNG and SVG."""
        return self.data_dir / "figures"

    @property
    def quotes(self) -> dict[str, Any]:
        """Formatted numbers for inline expressions (see :func:`scalelib.report.formatting.quotes`)."""
        from scalelib.report.formatting import quotes

        return quotes(self.numbers)


def load_report(data: str | Path | None = None) -> ReportData:
    """Read the prepared folder (resolved as in :func:`resolve_data_dir`).

    Parameters
    ----------
    data
        The prepared folder, or None to resolve it from the environment.

    Raises
    ------
    ScalelibError
        No prepared folder, a ``numbers.json`` of another schema, or an unreadable results
        table or fits file.
    """
    data_dir = resolve_data_dir(data)
    numbers = json.loads((data_dir / "numbers.json").read_text())
    if numbers.get("schema") != NUMBERS_SCHEMA:
        raise ScalelibError(f"{data_dir / 'numbers.json'} was written by another scalelib "
                            "version; run `scalelib report --results DIR` again")
    manifests = {}
    for path in sorted((data_dir / "manifests").glob("*.json")):
        manifest = json.loads(path.read_text())
        manifests[manifest.get("fingerprint", path.stem)] = manifest
    return ReportData(data_dir=data_dir, numbers=numbers,
                      results=read_results(data_dir / "results.parquet"),
                      fits=read_fits(data_dir / "fits.json"), manifests=manifests)
