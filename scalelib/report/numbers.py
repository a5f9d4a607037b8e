"""Every number the report quotes, computed from the results, fits and manifests.

:func:`compute_numbers` returns the dictionary written as ``numbers.json``; the selection
helpers say which runs each part of the report uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from scalelib import __version__
from scalelib.chartspec import size_order
from scalelib.config import PAPER_LADDER, PAPER_REGIMES
from scalelib.report.published import published
from scalelib.scaling import (
    CI_LEVEL,
    FLAT_P_VALUE,
    GRID_POINTS,
    GRID_TOP,
    HUBER_DELTA,
    JointFit,
    PowerLawFit,
    baseline_rows,
    data_size_rows,
    describe,
    entropy_bits,
    json_ready,
    matching_baselines,
    ok_rows,
    scaling_rows,
    transformer_rows,
    verdict,
)
from scalelib.scaling.allocation import (
    FlopsPerItem,
    allocatable,
    optimal_allocation,
    stop_paying_data,
)

REGIME_ORDER = ("rich", "limited")  # the reference study's order; other regimes follow by name
NUMBERS_SCHEMA = 1
STOP_TOLERANCE = 0.1  # more parameters stop paying where doubling N gains < this x doubling D


# --------------------------------------------------------------------------------------------
# Which runs each part of the report uses


def regime_order(names: Sequence[str]) -> list[str]:
    """Regimes in report order: rich, limited, then the others by name.

    Parameters
    ----------
    names
        Regime names (duplicates allowed; each appears once in the result).
    """
    known = [name for name in REGIME_ORDER if name in names]
    return known + sorted(name for name in set(names) if name not in REGIME_ORDER)


# --------------------------------------------------------------------------------------------
# Numbers


def _span(values: pl.Series) -> dict[str, float | int | None]:
    values = values.drop_nulls()
    if not len(values):
        return {"min": None, "max": None}
    return {"min": values.min(), "max": values.max()}


def _distinct(values: pl.Series) -> list:
    return sorted(values.drop_nulls().unique().to_list())


def _size_order(rows: pl.DataFrame) -> list[str]:
    return size_order(rows.select("size", "params").iter_rows())


def _test_vs_val(rows: pl.DataFrame) -> dict[str, Any]:
    rows = rows.filter(pl.col("test_mse").is_not_null() & pl.col("best_val_mse").is_not_null())
    val, test = rows["best_val_mse"].to_numpy(), rows["test_mse"].to_numpy()
    if not val.size:
        return {"n": 0}
    relative = (test - val) / val
    r = math.nan
    if val.size >= 3 and val.std() > 0 and test.std() > 0:
        r = float(np.corrcoef(val, test)[0, 1])
    return {"n": int(val.size), "median_rel_diff": float(np.median(relative)),
            "max_abs_rel_diff": float(np.abs(relative).max()), "pearson_r": r}


def _manifest_summary(manifest: dict | None) -> dict[str, Any]:
    """What the methods section says about a dataset, from its manifest."""
    if manifest is None:
        return {"found": False}
    preprocessing = manifest.get("preprocessing") or {}
    hvg = preprocessing.get("highly_variable_genes") or {}
    split = manifest.get("split") or {}
    provenance = manifest.get("provenance") or {}
    return {
        "found": True,
        "source": manifest.get("source"),
        "provenance": provenance,
        "census_version": manifest.get("census_version") or provenance.get("census_version"),
        "obs_filter": manifest.get("obs_filter") or provenance.get("obs_value_filter"),
        "seed": manifest.get("seed"),
        "n_genes": manifest.get("n_genes"),
        "n_cells": manifest.get("n_cells") or split.get("n_cells") or {},
        "cells_drawn": manifest.get("cells_drawn"),
        "train_sizes": manifest.get("train_sizes"),
        "split": {k: split.get(k) for k in ("method", "stratify", "holdout", "key", "note",
                                            "fractions") if split.get(k) is not None},
        "hvg_flavor": hvg.get("flavor"),
        "hvg_input": hvg.get("input"),
        "target_sum": (preprocessing.get("normalize_total") or {}).get("target_sum"),
        "steps": preprocessing.get("steps"),
        "versions": manifest.get("versions") or {},
    }


def _known_floor(manifest: dict | None) -> dict[str, Any] | None:
    """The true floor of a simulated dataset with a known one (``bayes_floor`` of
    :mod:`scalelib.data.floor_dataset`): on the validation masks, with its Gaussian reading,
    and the population value; None for other data."""
    floor = (manifest or {}).get("bayes_floor")
    if not floor:
        return None
    val = floor["val"]
    return {"mse": val["mse"], "mse_se": val["mse_se"], "bits": val["bits"],
            "bits_se": val["bits_se"], "gaussian_bits": entropy_bits(val["mse"]),
            "mask_rate": floor["mask_rate"], "expected": floor["expected"]}


def _estimates_of_truth(regime: dict[str, Any], likelihood: list[dict[str, Any]]) -> list[dict]:
    """Each estimate of bits per masked gene that needs no knowledge of the truth, against the
    known true bits of a simulated regime, closest first: ``0.5 log2(2 pi e c)`` of each MSE
    fit, and the Gaussian likelihood head's best validation bits and fitted floors in bits.
    ``error`` is the estimate minus the true bits (positive: it overstates them)."""
    truth = regime["known_floor"]["bits"]
    found = [(f"½ log₂(2πe c) of the {method} fit", fit["bits"])
             for method, fit in regime["fits"].items()]
    for head in likelihood:
        if (head["regime"], head["objective"]) == (regime["regime"], "gaussian"):
            found.append((f"the Gaussian head's best validation bits ({head['best_size']})",
                          head["best_bits"]))
            found += [(f"the Gaussian head's fitted {method} floor ({fit['status']})", fit["c"])
                      for method, fit in head["fits"].items() if fit["status"] != "error"]
    estimates = [{"estimate": name, "bits": bits, "error": bits - truth}
                 for name, bits in found if bits is not None and math.isfinite(bits)]
    return sorted(estimates, key=lambda e: abs(e["error"]))


def _fit_numbers(fit: PowerLawFit) -> dict[str, Any]:
    """A fit's dictionary with its verdict and its description in words
    (:mod:`scalelib.statuses`)."""
    out = fit.to_dict(with_bootstrap_params=False)
    return {**out, "verdict": verdict(out), "summary": describe(out)}


def _baseline_numbers(rows: pl.DataFrame, baselines: pl.DataFrame) -> list[dict[str, Any]]:
    """Per baseline family scored on the data of ``rows``, best first: validation and test
    MSE (means over its rows) and its setting where the table records one."""
    own = matching_baselines(rows, baselines)
    if not own.height:
        return []
    extra = [pl.col("setting").drop_nulls().first()] if "setting" in own.columns else []
    return (own.group_by("model_family", maintain_order=True)
            .agg(pl.col("best_val_mse").mean().alias("val_mse"),
                 pl.col("test_mse").mean().alias("test_mse"), *extra)
            .rename({"model_family": "family"}).sort("val_mse").to_dicts())


def _convergence(rows: pl.DataFrame) -> dict[str, int]:
    """How many runs converged (the rule, or the converge mode's cool-down test), did not, or
    were not checked."""
    if "converged" not in rows.columns:
        return {"converged": 0, "not_converged": 0, "unknown": rows.height}
    flags = rows["converged"]
    return {"converged": int(flags.fill_null(False).sum()),
            "not_converged": int(flags.not_().fill_null(False).sum()),
            "unknown": flags.null_count()}


def _regime_numbers(regime: str, scaling: pl.DataFrame, ok: pl.DataFrame,
                    baselines: pl.DataFrame, fits: Sequence[PowerLawFit],
                    manifests: dict[str, dict]) -> dict[str, Any]:
    rows = scaling.filter(pl.col("regime") == regime)
    fingerprints = _distinct(rows["dataset_fingerprint"])
    manifest = manifests.get(fingerprints[0]) if fingerprints else None
    baseline = rows["baseline_val_mse"].drop_nulls()
    best = rows["best_val_mse"].min()
    sizes = _size_order(rows)
    params = [int(rows.filter(pl.col("size") == s)["params"].min()) for s in sizes]
    return {
        "regime": regime,
        "fingerprints": fingerprints,
        "manifest": f"manifests/{fingerprints[0]}.json" if manifest is not None else None,
        "dataset": _manifest_summary(manifest),
        "source": rows["source"][0],
        "n_genes": int(rows["n_genes"][0]),
        "n_train_cells": int(rows["n_train_cells"].max()),
        "n_val_cells": int(rows["n_val_cells"][0]),
        "n_test_cells": int(rows["n_test_cells"][0]),
        "n_runs": rows.height,
        "sizes": sizes,
        "params": params,
        "seeds": _distinct(rows["seed"]),
        "steps": _span(rows["steps"]),
        "budget_steps": _span(rows["budget_steps"]),
        "cells_seen": _span(rows["cells_seen"]),
        "train_flops": _span(rows["train_flops"]),
        "stopped_early": int(rows["stopped_early"].fill_null(False).sum()),
        "best_val_mse": _span(rows["best_val_mse"]),
        "baseline_val_mse": float(baseline.mean()) if len(baseline) else None,
        "best_over_baseline": float(best / baseline.mean()) if len(baseline) else None,
        "convergence": _convergence(rows),
        "baselines": _baseline_numbers(rows, baselines),
        "fits": {fit.method: _fit_numbers(fit) for fit in fits
                 if fit.group.get("regime") == regime},
        "known_floor": _known_floor(manifest),
        "test_vs_val": _test_vs_val(ok.filter(pl.col("regime") == regime)),
    }


def likelihood_rows(results: pl.DataFrame) -> pl.DataFrame:
    """Finished runs of likelihood objectives with validation bits, each dataset at its
    largest training set (the runs the fits of bits against P use).

    Parameters
    ----------
    results
        Results table.
    """
    rows = transformer_rows(ok_rows(results)).filter(
        (pl.col("objective").fill_null("mse") != "mse") & pl.col("best_val_bits").is_not_null())
    return rows.filter(pl.col("n_train_cells") == pl.col("n_train_cells").max()
                       .over("dataset_fingerprint"))


def _likelihood_numbers(rows: pl.DataFrame, fits: Sequence[PowerLawFit]) -> list[dict[str, Any]]:
    """Per regime and likelihood objective: the best validation bits of each size, the best
    run, and the fits of bits against P per method."""
    out = []
    for (regime, objective), part in sorted(rows.group_by("regime", "objective"),
                                            key=lambda item: item[0]):
        sizes = _size_order(part)
        best = part.sort("best_val_bits").row(0, named=True)
        out.append({
            "regime": regime, "objective": objective, "n_runs": part.height,
            "sizes": sizes,
            "bits": [float(part.filter(pl.col("size") == s)["best_val_bits"].min()) for s in sizes],
            "mse": [float(part.filter(pl.col("size") == s)["best_val_mse"].min()) for s in sizes],
            "best_bits": best["best_val_bits"], "best_size": best["size"],
            "best_mse": best["best_val_mse"],
            "fits": {fit.method: _fit_numbers(fit) for fit in fits
                     if fit.group == {"regime": regime, "objective": objective}},
        })
    return out


def _pergene_numbers(pergene: pl.DataFrame | None) -> list[dict[str, Any]]:
    """Per run of the per-gene table: the spread of the error across genes (see
    :func:`scalelib.pergene.pergene_summary`)."""
    if pergene is None or not pergene.height:
        return []
    from scalelib.pergene import pergene_summary

    return pergene_summary(pergene).to_dicts()


def _ladder(results: pl.DataFrame, regimes: Sequence[str]) -> list[dict[str, Any]]:
    rows = results.filter(pl.col("params").is_not_null())
    ladder = []
    for size in _size_order(rows):
        part = rows.filter(pl.col("size") == size)
        first = part.row(0, named=True)
        params = {regime: int(p["params"].min()) for regime in regimes
                  if (p := part.filter(pl.col("regime") == regime)).height}
        ladder.append({"size": size, **{k: first[k] for k in ("d_model", "n_layers", "n_heads",
                                                               "ff_mult")}, "params": params})
    return ladder


def _training(results: pl.DataFrame) -> dict[str, Any]:
    return {
        "batch_size": _distinct(results["batch_size"]),
        "lr": _span(results["lr"]),
        "schedule": _distinct(results["schedule"]),
        "mask_rate": _distinct(results["mask_rate"]),
        "seeds": _distinct(results["seed"]),
        "device": _distinct(results["device"]),
        "dtype": _distinct(results["dtype"]),
        "torch_version": _distinct(results["torch_version"]),
        "code_version": _distinct(results["code_version"]),
        "wall_time_s": {"total": float(results["wall_time_s"].fill_null(0).sum()),
                        "max": results["wall_time_s"].max()},
        "finished_at": _span(results["finished_at"]),
    }


def _data_size(rows: pl.DataFrame, fits: Sequence[JointFit]) -> list[dict[str, Any]]:
    sections = []
    for fit in fits:
        part = rows
        for column, value in fit.group.items():
            part = part.filter(pl.col(column) == value)
        sections.append({
            "regime": fit.group["regime"],
            "subsample": fit.group.get("subsample"),
            "group": dict(fit.group),
            "fingerprints": _distinct(part["dataset_fingerprint"]),
            "train_sizes": _distinct(part["n_train_cells"]),
            "sizes": _size_order(part),
            "n_runs": part.height,
            "joint": fit.to_dict(with_bootstrap_params=False),
            "allocation": _allocation(part, fit),
        })
    return sections


def _allocation(part: pl.DataFrame, fit: JointFit) -> dict[str, Any] | None:
    """Where more parameters stop paying at each size, and the compute-optimal N and D at the
    training budget of the largest model's runs (None when the fit allows neither)."""
    if not (allocatable(fit) and part.height):
        return None
    sizes = part.group_by("size").agg(pl.col("params").first(), pl.col("flops_per_cell").first(),
                                      pl.col("train_flops").median()).sort("params")
    d_star = stop_paying_data(fit, sizes["params"].cast(pl.Float64).to_numpy(), STOP_TOLERANCE)
    cost = FlopsPerItem.from_points(sizes["params"].cast(pl.Float64), sizes["flops_per_cell"])
    budget = float(sizes["train_flops"][-1])
    best = optimal_allocation(fit, budget, cost, n_range=(float(sizes["params"].min()),
                                                          float(sizes["params"].max())),
                              d_range=(float(part["n_train_cells"].min()),
                                       float(part["n_train_cells"].max())))
    return {
        "tolerance": STOP_TOLERANCE,
        "stop_paying": [{"size": size, "params": n, "d": float(d), "ratio": float(d / n)}
                        for (size, n), d in zip(sizes.select("size", "params").iter_rows(),
                                                d_star)],
        "compute_optimal": {**best.to_dict(), "budget_of": str(sizes["size"][-1])},
    }


def _reference_setup() -> dict[str, Any]:
    """The reference study's regimes and ladder as scalelib's config records them."""
    return {
        "regimes": {name: {"n_genes": r.n_genes, "n_cells": r.n_cells}
                    for name, r in PAPER_REGIMES.items()},
        "ladder": [size.to_dict() for size in PAPER_LADDER],
    }


def compute_numbers(results: pl.DataFrame, fits: Sequence[PowerLawFit],
                    joint: Sequence[JointFit], manifests: dict[str, dict], *,
                    results_dir: str | Path = "", fits_source: str = "",
                    digest: str = "", likelihood_fits: Sequence[PowerLawFit] = (),
                    pergene: pl.DataFrame | None = None) -> dict[str, Any]:
    """Every number the report quotes, as one JSON-ready dictionary.

    Top-level keys: ``schema``, ``created``, ``scalelib_version``, ``results_dir``,
    ``digest`` (SHA-256 of the results file), ``fits_source``; ``runs`` (counts and failed
    runs); ``fitting`` (methods, grid and Huber settings, bootstrap count and seed, CI level);
    ``regimes`` (one entry per regime in report order: dataset from its manifest, the runs the
    fits use, budgets, convergence counts, the per-gene-mean baseline column, the baseline
    families scored on the same data, fits per method with their verdict and summary in
    words, test against validation); ``ladder`` (sizes
    with parameter counts per regime); ``training`` (settings and versions from the rows);
    ``data_size`` (one entry per regime, and subsample strategy, with a data-size sweep, with
    its joint fit and ``allocation``: where more parameters stop paying at each size, and the
    compute-optimal N and D at the training budget of the largest model's runs);
    ``reference`` (the reference study's regimes and ladder from scalelib.config),
    ``published`` (:mod:`scalelib.report.published`, plus ``bits_check``), ``likelihood``
    (per regime and likelihood objective: validation bits per size and fits of bits against
    P) and ``pergene`` (per run of the per-gene table: the spread across genes).

    Parameters
    ----------
    results
        The whole results table (failed runs included; they are listed under ``runs``).
    fits
        Power-law fits grouped by ``regime`` (a fit's ``group["regime"]`` picks its regime).
    joint
        Joint ``L(N, D)`` fits, one per regime with a data-size sweep, grouped by ``regime``.
    manifests
        Dataset manifests by dataset fingerprint.
    results_dir
        Folder of the results, recorded as given.
    fits_source
        Where the fits came from (a fits file, or fitted here), recorded as given.
    digest
        SHA-256 of the results file, recorded as given.
    likelihood_fits
        Fits of ``best_val_bits`` against P grouped by ``regime`` and ``objective``.
    pergene
        The per-gene table of the results directory (:mod:`scalelib.pergene`), if any.

    Returns
    -------
    dict
        The ``numbers.json`` document, strict-JSON-ready (non-finite floats as None).
    """
    baselines = baseline_rows(results)
    results = transformer_rows(results)  # baselines are not runs
    ok = ok_rows(results)
    scaling, sized = scaling_rows(results), data_size_rows(results)
    regimes = regime_order(scaling["regime"].unique().to_list())
    failed = results.filter(pl.col("status") != "ok").select(
        "regime", "size", "seed", "n_train_cells", "status").to_dicts()
    boot = [fit for fit in fits if fit.n_bootstrap]
    reference = published()
    floor = next(e for e in reference["entries"] if "c" in e)
    reference["bits_check"] = entropy_bits(floor["c"])
    numbers = {
        "schema": NUMBERS_SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scalelib_version": __version__,
        "results_dir": str(results_dir),
        "digest": digest,
        "fits_source": fits_source,
        "runs": {"total": results.height, "ok": ok.height, "failed": failed,
                 "scaling": scaling.height, "data_size": sized.height},
        "fitting": {
            "methods": sorted({fit.method for fit in fits}),
            "grid_points": GRID_POINTS, "grid_top": GRID_TOP, "huber_delta": HUBER_DELTA,
            "flat_p_value": FLAT_P_VALUE,
            "ci_level": boot[0].ci_level if boot else CI_LEVEL,
            "n_bootstrap": max((fit.n_bootstrap for fit in fits), default=0),
            "bootstrap_seed": boot[0].bootstrap_seed if boot else None,
        },
        "regimes": [_regime_numbers(r, scaling, ok, baselines, fits, manifests)
                    for r in regimes],
        "ladder": _ladder(results, regimes),
        "training": _training(ok if ok.height else results),
        "data_size": _data_size(sized, joint),
        "reference": _reference_setup(),
        "published": reference,
        "likelihood": _likelihood_numbers(likelihood_rows(results), likelihood_fits),
        "pergene": _pergene_numbers(pergene),
    }
    for regime in numbers["regimes"]:
        if regime["known_floor"]:
            regime["known_floor"]["estimates"] = _estimates_of_truth(regime, numbers["likelihood"])
    return json_ready(numbers)
