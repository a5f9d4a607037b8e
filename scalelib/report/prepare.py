"""Gather what the report reads from a results directory into the folder the report reads.

:func:`prepare_report` reads a sweep's or the demo's output directory and writes the folder
the Quarto report reads (default ``report/_data``)::

    results.parquet          the results table, copied (scalelib.results schema)
    fits.json                power-law fits per regime and method (with bootstrap samples) and
                             joint L(N, D) fits of data-size sweeps (scalelib.scaling layout)
    manifests/<fp>.json      the manifest of each dataset, by fingerprint (hvg_candidates left out)
    numbers.json             every number the report quotes (:mod:`scalelib.report.numbers`;
                             its ``probes`` entry from :mod:`scalelib.report.probes`)
    probes.parquet           the downstream probes of ``scalelib probe``, copied, when the
                             results directory has them
    pergene.parquet          the directory's per-gene table (`scalelib pergene`), when it has one
    figures/                 PNG and SVG of each figure, written while the report executes

Fits come from the directory's ``fits.json`` when it fits the runs the report draws (same
regimes, methods and run counts); otherwise they are computed here with
:func:`scalelib.scaling.fit_groups`, and ``numbers["fits_source"]`` says which and why.
Nothing here trains or imports torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from scalelib.atomic import atomic_path
from scalelib.errors import ScalelibError
from scalelib.pergene import PERGENE_FILE
from scalelib.probes import PROBES_FILE
from scalelib.report.numbers import compute_numbers, likelihood_rows, regime_order
from scalelib.report.probes import probe_numbers, probes_of
from scalelib.results import read_results, write_results
from scalelib.scaling import (
    METHODS,
    JointFit,
    baseline_rows,
    data_size_rows,
    fit_groups,
    fit_joint_table,
    json_ready,
    ok_rows,
    scaling_rows,
    stored_or_fitted,
    transformer_rows,
    write_fits,
)

MANIFEST_PREFIX = "dataset-"
# What a prepared folder holds that scalelib wrote (replaced on the next prepare); anything
# else there is the user's and stays.
OWN_OUTPUTS = ("results.parquet", "fits.json", "numbers.json", "manifests/dataset-*.json",
               "manifests/" + "[0-9a-f]" * 16 + ".json", "figures/fig-*.png", "figures/fig-*.svg",
               PROBES_FILE, PERGENE_FILE)
DROPPED_MANIFEST_KEYS = ("hvg_candidates",)


@dataclass(frozen=True)
class PreparedReport:
    """What :func:`prepare_report` wrote: the folder, its files and the quoted numbers."""

    out_dir: Path
    files: dict[str, Path]
    numbers: dict[str, Any]

    @property
    def fits_source(self) -> str:
        """Where the power-law fits came from (``fits.json`` or computed, with the reason)."""
        return str(self.numbers["fits_source"])


# --------------------------------------------------------------------------------------------
# Fits


def joint_fits(rows: pl.DataFrame, *, n_bootstrap: int = 0, seed: int = 0) -> list[JointFit]:
    """``L(N, D)`` fits of each regime's data-size runs (status ``error`` when impossible),
    one per subsample strategy when the runs drew their subsets in several ways.

    Parameters
    ----------
    rows
        Data-size runs (:func:`scalelib.scaling.data_size_rows`) with ``regime``,
        ``subsample``, ``params``, ``n_train_cells`` and ``best_val_mse``.
    n_bootstrap
        Bootstrap resamples per fit (0: none).
    seed
        Seed of the bootstrap.

    Returns
    -------
    list of JointFit
        One fit per regime (and strategy), in report order, grouped by ``regime`` (and
        ``subsample``); ``n`` and ``d`` are ``params`` and ``n_train_cells``.
    """
    by_strategy = "subsample" in rows.columns and rows["subsample"].n_unique() > 1
    fits = []
    for regime in regime_order(rows["regime"].unique().to_list()):
        part = rows.filter(pl.col("regime") == regime)
        fits += fit_joint_table(part, by=["regime", "subsample"] if by_strategy else ["regime"],
                                n_bootstrap=n_bootstrap, seed=seed, errors="report")
    return fits


# --------------------------------------------------------------------------------------------
# Manifests


def find_manifests(results: pl.DataFrame, results_dir: Path) -> dict[str, dict]:
    """The manifest of each dataset fingerprint in the table, where one can be found.

    Looks at the ``dataset`` path of the rows (as written, and relative to ``results_dir``)
    and at ``results_dir/datasets/*``; a manifest counts only when its fingerprint matches.
    ``hvg_candidates`` (a per-gene table) is left out.

    Parameters
    ----------
    results
        Results table (``dataset`` and ``dataset_fingerprint`` columns are read).
    results_dir
        The results directory.

    Returns
    -------
    dict of str to dict
        Manifest by fingerprint; fingerprints with no manifest found are absent.
    """
    wanted = set(results["dataset_fingerprint"].drop_nulls().to_list())
    candidates = []
    for dataset in results["dataset"].drop_nulls().unique().to_list():
        candidates += [Path(dataset) / "manifest.json", results_dir / dataset / "manifest.json"]
    candidates += sorted(results_dir.glob("datasets/*/manifest.json"))
    found: dict[str, dict] = {}
    for path in candidates:
        if not wanted - set(found):
            break
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        fingerprint = manifest.get("fingerprint") if isinstance(manifest, dict) else None
        if fingerprint in wanted and fingerprint not in found:
            found[fingerprint] = {k: v for k, v in manifest.items()
                                  if k not in DROPPED_MANIFEST_KEYS}
    return found


# --------------------------------------------------------------------------------------------
# The prepare step


def check_report_out(out_dir: Path, results_dir: Path) -> None:
    """Refuse an ``--out`` where preparing the report would overwrite something else.

    ``out_dir`` may be missing, empty, or a folder prepared before (it holds ``numbers.json``);
    never the results directory, a file, or a folder holding a results
    table, run directories or datasets of its own (another sweep's output).

    Parameters
    ----------
    out_dir
        The folder the report's data would be written to.
    results_dir
        The results directory the report reads.
    """
    if out_dir.resolve() == results_dir.resolve():
        raise ScalelibError(f"--out {out_dir} is the results directory; choose another folder "
                            "(default report/_data)")
    if out_dir.exists() and not out_dir.is_dir():
        raise ScalelibError(f"--out {out_dir} is a file; choose a folder (default report/_data)")
    if not out_dir.is_dir() or (out_dir / "numbers.json").is_file():
        foreign = [name for name in ("runs", "datasets") if (out_dir / name).exists()]
    else:
        foreign = [name for name in ("results.parquet", "fits.json", "runs", "datasets")
                   if (out_dir / name).exists()]
    if foreign:
        raise ScalelibError(f"--out {out_dir} holds {', '.join(foreign)} that a report did not "
                            "write (another results directory?); choose an empty or new folder")


def _remove_earlier_outputs(out_dir: Path) -> None:
    for pattern in OWN_OUTPUTS[3:]:  # the files replaced one by one are left to their writers
        for path in out_dir.glob(pattern):
            if path.is_file():
                path.unlink()


def _write_json(document: dict, path: Path) -> Path:
    text = json.dumps(json_ready(document), indent=1, allow_nan=False, default=str)
    with atomic_path(path) as temporary:
        temporary.write_text(text + "\n")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_report(results_dir: str | Path, out_dir: str | Path = "report/_data", *,
                   methods: Sequence[str] = METHODS, n_bootstrap: int = 1000,
                   seed: int = 0) -> PreparedReport:
    """Write the folder the report reads (see the module docstring) from a results directory.

    Parameters
    ----------
    results_dir
        Output of ``scalelib demo`` or ``scalelib sweep``: ``results.parquet``, optionally
        ``fits.json`` and ``datasets/``.
    out_dir
        Folder to write (``report/_data`` by default); its ``manifests/`` and ``figures/``
        are replaced.
    methods
        Fit methods the report shows.
    n_bootstrap
        Bootstrap resamples per fit, used only when the fits are computed here.
    seed
        Seed of the bootstrap, used only when the fits are computed here.

    Returns
    -------
    PreparedReport
        The folder, the files written and the quoted numbers.

    Raises
    ------
    ScalelibError
        When ``results_dir`` holds no results table, or no finished run.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    source = results_dir / "results.parquet"
    if not source.is_file():
        raise ScalelibError(
            f"{results_dir} has no results.parquet; point --results at the output of "
            "`scalelib demo` or `scalelib sweep` (e.g. data/demo)"
        )
    check_report_out(out_dir, results_dir)
    results = read_results(source)
    if transformer_rows(ok_rows(results)).filter(pl.col("best_val_mse").is_not_null()).height == 0:
        raise ScalelibError(f"{source} has no finished run (status ok); run or repair the "
                            "sweep before making a report")
    scaling = scaling_rows(results)
    stored, reason = stored_or_fitted(results_dir, scaling, methods=methods,
                                      baselines=baseline_rows(results),
                                      n_bootstrap=n_bootstrap, seed=seed)
    fits = list(stored.fits)
    fits_source = ("fits.json of the results directory" if reason is None
                   else f"computed by scalelib report ({reason})")
    joint = joint_fits(data_size_rows(results), n_bootstrap=n_bootstrap, seed=seed)
    manifests = find_manifests(results, results_dir)
    heads = likelihood_rows(results)
    bits_fits = (fit_groups(heads, y="best_val_bits", by=["regime", "objective"],
                            methods=methods, n_bootstrap=n_bootstrap, seed=seed)
                 if heads.height else [])
    pergene_path = results_dir / PERGENE_FILE
    pergene = pl.read_parquet(pergene_path) if pergene_path.is_file() else None
    numbers = compute_numbers(results, fits, joint, manifests, results_dir=results_dir.resolve(),
                              fits_source=fits_source, digest=_sha256(source),
                              likelihood_fits=bits_fits, pergene=pergene)
    probes = probes_of(results_dir)
    numbers["probes"] = json_ready(probe_numbers(probes))

    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_earlier_outputs(out_dir)
    files = {
        "results": write_results(results, out_dir / "results.parquet"),
        "fits": write_fits(fits, out_dir / "fits.json", joint_fits=joint),
    }
    for index, (fingerprint, manifest) in enumerate(manifests.items()):  # no path from data
        files[f"manifest {fingerprint}"] = _write_json(
            manifest, out_dir / "manifests" / f"{MANIFEST_PREFIX}{index}.json")
    if probes.height:
        with atomic_path(out_dir / PROBES_FILE) as temporary:
            probes.write_parquet(temporary)
        files["probes"] = out_dir / PROBES_FILE
    if pergene is not None:
        pergene.write_parquet(out_dir / PERGENE_FILE)
        files["pergene"] = out_dir / PERGENE_FILE
    files["numbers"] = _write_json(numbers, out_dir / "numbers.json")
    return PreparedReport(out_dir, files, numbers)
