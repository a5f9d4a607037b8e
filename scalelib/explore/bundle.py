"""The results explorer's data file: a sweep's results rows and fits in one JSON document.

``scalelib export notebooks`` writes it as ``public/explorer-data.json`` next to the exported
explorer, which fetches it relative to its own URL (``mo.notebook_location()``), so the HTML,
its data and the Pyodide runtime travel together as one folder. Layout::

    {
      "format": "scalelib-explorer", "version": 1,
      "created": "2026-02-20T10:00:00+00:00", "scalelib_version": "0.1.0",
      "source": "data/demo",                    # the sweep directory it was made from
      "x": "params", "y": "best_val_mse",       # columns of the stored fits
      "fits_source": "fits.json",               # or "fitted on export (<why>)"
      "rows": [{"run_id": ..., "regime": "rich", "size": "D3", "params": 6337, ...}],
      "fits": [...], "joint_fits": [...],       # as in a fits JSON file (scalelib.scaling)
      "allocations": [{...}],                   # per joint fit of a data sweep: the rows of
                                                # chartspec.frontier_spec (scalelib.chartrows)
      "probes": {"label": "cell_type", "split": [...], "charts": {name: {...}},
                 "saturation": [...]}           # from probes.parquet, when the sweep has one
    }

The allocation and probe rows are computed on export (they need numpy and scipy); the explorer
draws them as they are.

Reading (:func:`load_bundle`) needs only the standard library, so it works in the browser;
writing (:func:`bundle_document`, :func:`write_bundle`) reads the results table with polars.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalelib.atomic import json_ready
from scalelib.chartspec import size_order
from scalelib.errors import ScalelibError
from scalelib.explore.purefit import LiteFit
from scalelib.fitrules import TRANSFORMER, dataset_key, scaling_row_mask

if TYPE_CHECKING:
    import polars as pl

BUNDLE_NAME = "explorer-data.json"
BUNDLE_FORMAT = "scalelib-explorer"
BUNDLE_VERSION = 1
ROW_COLUMNS = (
    "run_id", "regime", "source", "dataset", "dataset_fingerprint", "n_genes", "n_train_cells", "size", "d_model",
    "n_layers", "params", "seed", "batch_size", "lr", "budget_steps", "steps", "cells_seen",
    "train_flops", "best_step", "best_val_mse", "test_mse", "baseline_val_mse",
    "baseline_test_mse", "wall_time_s", "status", "model_family", "setting", "mask_rate",
    "budget_mode", "converged",
)
DEFAULT_BOOTSTRAP = 200


@dataclass(frozen=True)
class Bundle:
    """Results rows and stored fits of one sweep (see the module docstring)."""

    rows: list[dict[str, Any]]
    fits: list[LiteFit] = field(default_factory=list)
    joint_fits: list[dict[str, Any]] = field(default_factory=list)
    allocations: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok_rows(self) -> list[dict[str, Any]]:
        """Rows of trained models that finished with status ``ok`` (no baselines)."""
        return [row for row in self.rows if row.get("status", "ok") == "ok"
                and (row.get("model_family") or TRANSFORMER) == TRANSFORMER]

    @property
    def baseline_rows(self) -> list[dict[str, Any]]:
        """Finished baseline rows (``model_family`` mean, pca, ridge or knn)."""
        return [row for row in self.rows if row.get("status", "ok") == "ok"
                and (row.get("model_family") or TRANSFORMER) != TRANSFORMER]

    @property
    def scaling_rows(self) -> list[dict[str, Any]]:
        """Runs that fits against P use (:func:`scalelib.fitrules.scaling_row_mask`, the rule
        of :func:`scalelib.scaling.scaling_rows`): per dataset, those at its largest training
        set."""
        return [row for row, kept in zip(self.rows, scaling_row_mask(self.rows)) if kept]

    def values(self, column: str) -> list[Any]:
        """Distinct values of a column over the finished runs, in order of appearance."""
        return list(dict.fromkeys(row.get(column) for row in self.ok_rows
                                  if row.get(column) is not None))

    @property
    def sizes(self) -> list[str]:
        """Size names ordered by parameter count."""
        return size_order((row.get("size"), row.get("params")) for row in self.ok_rows)

    @property
    def has_data_sweep(self) -> bool:
        """True when one dataset was trained at several training-set sizes."""
        seen: dict[Any, set] = {}
        for row in self.ok_rows:
            seen.setdefault(dataset_key(row), set()).add(row.get("n_train_cells"))
        return any(len(sizes) > 1 for sizes in seen.values())


def load_bundle(source: str | Path | Any) -> Bundle:
    """Read an explorer data file (a path, or a URL in the browser) or a sweep directory.

    Parameters
    ----------
    source
        ``explorer-data.json`` (path or ``http(s)`` URL, e.g. ``mo.notebook_location() /
        "public" / BUNDLE_NAME``), or a sweep directory with ``results.parquet`` (and
        ``fits.json`` when present), which is read with polars.
    """
    text = str(source)
    if text.startswith(("http://", "https://")):
        return parse_bundle(json.loads(_fetch_text(text)))
    path = Path(text)
    if path.is_dir():
        return parse_bundle(bundle_document(path))
    if not path.is_file():
        raise ScalelibError(f"no explorer data at {path}; pass a sweep directory (with "
                            "results.parquet) or an explorer-data.json file")
    return parse_bundle(json.loads(path.read_text()))


def parse_bundle(document: dict[str, Any]) -> Bundle:
    """Build a :class:`Bundle` from the JSON document of the module docstring."""
    if document.get("format") != BUNDLE_FORMAT:
        raise ScalelibError("not a scalelib explorer data file (format field missing); "
                            "write one with `scalelib export notebooks`")
    data = ("rows", "fits", "joint_fits", "allocations", "probes")
    meta = {k: v for k, v in document.items() if k not in data}
    return Bundle(rows=[dict(row) for row in document.get("rows", [])],
                  fits=[LiteFit.from_dict(fit) for fit in document.get("fits", [])],
                  joint_fits=list(document.get("joint_fits", [])),
                  allocations=list(document.get("allocations", [])),
                  probes=dict(document.get("probes") or {}), meta=meta)


def bundle_document(sweep_dir: str | Path, *, n_bootstrap: int = DEFAULT_BOOTSTRAP) -> dict[str, Any]:
    """The explorer document of a sweep directory (fits from ``fits.json`` while it matches the
    runs, else fitted here: :func:`scalelib.scaling.stored_or_fitted`).

    Parameters
    ----------
    sweep_dir
        Directory with ``results.parquet`` (from ``scalelib demo``, ``scalelib sweep`` or the
        scaling notebook).
    n_bootstrap
        Bootstrap resamples when the fits have to be computed (no ``fits.json``).
    """
    from scalelib import __version__
    from scalelib.results import read_results
    from scalelib.scaling import baseline_rows, fits_document, scaling_rows, stored_or_fitted

    sweep_dir = Path(sweep_dir)
    results = read_results(sweep_dir / "results.parquet")
    if results.height == 0:
        raise ScalelibError(f"{sweep_dir} has no finished runs (no results.parquet rows); run "
                            "`scalelib demo` or the scaling notebook first")
    stored, reason = stored_or_fitted(sweep_dir, scaling_rows(results), n_bootstrap=n_bootstrap,
                                      baselines=baseline_rows(results))
    fits = fits_document(stored.fits, x=stored.x, y=stored.y, joint_fits=stored.joint_fits)
    rows = results.select([c for c in ROW_COLUMNS if c in results.columns]).to_dicts()
    return json_ready({
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scalelib_version": __version__, "source": str(sweep_dir),
        "fits_source": "fits.json" if reason is None else f"fitted on export ({reason})",
        "x": fits["x"], "y": fits["y"], "rows": rows, "fits": fits["fits"],
        "joint_fits": fits["joint_fits"], "allocations": allocation_charts(results),
        "probes": probe_charts(sweep_dir),
    })


def allocation_charts(results: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows of the allocation chart of each regime's (and strategy's) joint fit of its
    data-size runs (:func:`scalelib.chartrows.allocation_rows`, titled by the regime and
    strategy); fits that allow no allocation are left out.

    Parameters
    ----------
    results
        A results table.
    """
    from scalelib.chartrows import allocation_rows
    from scalelib.report.prepare import joint_fits
    from scalelib.scaling import data_size_rows
    from scalelib.scaling.allocation import allocatable

    rows = data_size_rows(results)
    if not rows.height:
        return []
    return [{**allocation_rows(rows, fit),
             "title": f"{', '.join(map(str, fit.group.values()))}: data, model size and compute"}
            for fit in joint_fits(rows) if allocatable(fit)]


def probe_charts(sweep_dir: str | Path) -> dict[str, Any]:
    """The probe charts' rows of a sweep directory's ``probes.parquet`` (of its most frequent
    label; :func:`scalelib.chartrows.probe_chart_rows`), its split and saturation points;
    empty without probes.

    Parameters
    ----------
    sweep_dir
        A sweep directory.
    """
    from scalelib.chartrows import probe_chart_rows
    from scalelib.report.probes import SATURATION_BOOTSTRAP, SATURATION_SEED, probes_of
    from scalelib.scaling.saturation import saturation_points

    probes = probes_of(sweep_dir)
    if not probes.height:
        return {}
    label = probes["label"].mode().sort()[0]
    probes = probes.filter(probes["label"] == label)
    saturation = saturation_points(probes, n_bootstrap=SATURATION_BOOTSTRAP, seed=SATURATION_SEED)
    return {"label": label, "split": probes["split"].unique().sort().to_list(),
            "charts": probe_chart_rows(probes, saturation),
            "saturation": saturation.drop("dataset_fingerprint").to_dicts()}


def write_bundle(sweep_dir: str | Path, path: str | Path, *,
                 n_bootstrap: int = DEFAULT_BOOTSTRAP) -> Path:
    """Write :func:`bundle_document` of ``sweep_dir`` to ``path`` (atomically)."""
    from scalelib.atomic import atomic_path

    path = Path(path)
    text = json.dumps(bundle_document(sweep_dir, n_bootstrap=n_bootstrap), allow_nan=False)
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path


def _fetch_text(url: str) -> str:
    try:  # in Pyodide: a synchronous request from the notebook's worker
        from pyodide.http import open_url
    except ImportError:
        from urllib.request import urlopen

        with urlopen(url, timeout=30) as response:
            return response.read().decode()
    return open_url(url).read()
