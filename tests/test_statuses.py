"""Fit statuses on planted cases: one vocabulary for both methods, flags, verdicts in words."""

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from scalelib.cli import main
from scalelib.convergence import plateaued
from scalelib.explore import purefit
from scalelib.scaling import describe, fit_groups, fit_power_law, most_serious, verdict
from scalelib.scaling.powerlaw import interval_issues
from scalelib.statuses import (
    COMPUTE_RAN_OUT,
    DATA_RAN_OUT,
    LOSES_TO_BASELINE,
    STATUS_ORDER,
    UNDETERMINED,
    fields_of,
    interval_share,
)

SIZES = np.array([150, 700, 1_700, 5_400, 30_000, 63_000, 158_000], dtype=float)
METHODS = ("grid", "huber")


def planted_table(*, converged=True, baseline_mse=None, seeds=2, sigma=0.01) -> pl.DataFrame:
    """A results-like table from y = 3 P^-0.4 + 1.5, plus optional baseline rows."""
    rng = np.random.default_rng(0)
    x = np.repeat(SIZES, seeds)
    y = (3.0 * x**-0.4 + 1.5) * np.exp(rng.normal(0.0, sigma, x.size))
    converged_column = np.full(x.size, True) if converged is True else np.asarray(converged)
    rows = pl.DataFrame({
        "params": x, "best_val_mse": y, "status": "ok", "regime": "rich",
        "dataset_fingerprint": "f", "n_train_cells": 1000, "model_family": "transformer",
        "converged": converged_column,
    })
    if baseline_mse is not None:
        baseline = pl.DataFrame({
            "params": [None, None], "best_val_mse": [baseline_mse, 5.0], "status": "ok",
            "regime": "rich", "dataset_fingerprint": "f", "n_train_cells": 1000,
            "model_family": ["ridge", "mean"], "converged": [None, None],
        }, schema_overrides={"params": pl.Float64, "converged": pl.Boolean})
        rows = pl.concat([rows, baseline])
    return rows


@pytest.mark.parametrize("method", METHODS)
def test_converged_runs_beating_the_baselines_are_a_floor_of_the_data(method):
    fit = fit_groups(planted_table(baseline_mse=2.5), methods=(method,), n_bootstrap=50)[0]
    assert fit.status == "ok", fit.message
    assert fit.baseline == {"family": "ridge", "val_mse": 2.5} and fit.unconverged == 0
    assert fit.n_runs == 14  # baseline rows are never fitted
    assert verdict(fit.to_dict()) == DATA_RAN_OUT
    assert "floor of the data" in describe(fit.to_dict())


@pytest.mark.parametrize("method", METHODS)
def test_unconverged_carrying_runs_make_the_fit_budget_limited(method):
    converged = np.repeat(SIZES < 30_000, 2)  # the three largest sizes did not converge
    fit = fit_groups(planted_table(converged=converged, baseline_mse=2.5),
                     methods=(method,))[0]
    assert fit.status == "budget_limited" and fit.unconverged == 6
    assert verdict(fit.to_dict()) == COMPUTE_RAN_OUT
    assert "floor at this budget, not of the data" in describe(fit.to_dict())


@pytest.mark.parametrize("method", METHODS)
def test_a_baseline_as_good_as_the_best_model_makes_it_above_baseline(method):
    table = planted_table(converged=np.repeat(SIZES < 30_000, 2), baseline_mse=1.0)
    fit = fit_groups(table, methods=(method,))[0]
    assert fit.status == "above_baseline"  # the most serious of its flags
    assert {"above_baseline", "budget_limited"} <= set(fit.flags)
    assert verdict(fit.to_dict()) == LOSES_TO_BASELINE
    words = describe(fit.to_dict())
    assert "no floor of the data" in words and "ridge reaches 1" in words


def test_min_x_keeps_the_baselines_for_the_baseline_check(tmp_path, capsys):
    path = tmp_path / "results.parquet"
    planted_table(baseline_mse=1.0).write_parquet(path)
    assert main(["fit", str(path), "--min-x", "4000", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["status"] == "above_baseline" and fit["baseline"]["family"] == "ridge"
    assert fit["n_runs"] == 2 * np.sum(SIZES >= 4000)  # baselines are never fitted


@pytest.mark.parametrize("table", [
    planted_table(baseline_mse=2.5),
    planted_table(converged=np.repeat(SIZES < 30_000, 2), baseline_mse=2.5),
    planted_table(converged=np.repeat(SIZES < 30_000, 2), baseline_mse=1.0),
], ids=["floor of the data", "budget limited", "above baseline"])
def test_the_offline_explorer_refit_checks_baselines_and_convergence_alike(table):
    transformers = table.filter(pl.col("model_family") == "transformer").to_dicts()
    baselines = table.filter(pl.col("model_family") != "transformer").to_dicts()
    (full,) = fit_groups(table, methods=("grid",))
    (lite,) = purefit.fit_rows(transformers, methods=("grid",), baselines=baselines)
    assert (lite.status, lite.flags) == (full.status, full.flags)
    assert (lite.baseline, lite.unconverged) == (full.baseline, full.unconverged)
    assert verdict(fields_of(lite)) == verdict(full.to_dict())


@pytest.mark.parametrize("method", METHODS)
def test_a_four_point_fit_is_unidentified(method):
    x = SIZES[3:]
    fit = fit_power_law(x, 3.0 * x**-0.4 + 1.5, method)
    assert fit.status == "unidentified" and "residual degree" in fit.message


@pytest.mark.parametrize("method", METHODS)
def test_a_table_without_run_information_is_undetermined(method):
    x = np.repeat(SIZES, 2)
    table = pl.DataFrame({"params": x, "loss": 3.0 * x**-0.4 + 1.5})
    fit = fit_groups(table, y="loss", by=(), methods=(method,))[0]
    assert fit.baseline is None and fit.unconverged is None
    assert verdict(fit.to_dict()) == UNDETERMINED
    assert "not checked against baselines or convergence" in describe(fit.to_dict())


@pytest.mark.parametrize("method", METHODS)
def test_intervals_respect_the_parameter_bounds(method):
    rng = np.random.default_rng(3)
    x = np.repeat(SIZES, 2)
    y = 2.0 * np.exp(rng.normal(0.0, 0.02, x.size))  # flat and noisy: slopes of both signs
    fit = fit_power_law(x, y, method, n_bootstrap=200)
    samples = fit.bootstrap_array()
    assert (samples[:, 1] >= 0.0).all() and (samples[:, 1] <= 5.0).all()
    assert fit.ci["alpha"][0] >= 0.0


def test_wide_bootstrap_interval_of_c_makes_the_fit_unidentified():
    x = SIZES
    fit = fit_power_law(x, 3.0 * x**-0.4 + 1.5, "huber")
    assert fit.status == "ok"
    wide = replace(fit, ci={"alpha": (0.3, 0.5), "c": (0.01, 1.55)})
    narrow = replace(fit, ci={"alpha": (0.3, 0.5), "c": (1.4, 1.55)})
    flagged = wide.with_issues(interval_issues(wide, 1.6))
    assert flagged.status == "unidentified" and "c's interval" in flagged.message
    assert interval_issues(narrow, 1.6) == []
    assert interval_share(0.01, 1.55, 0.0, 1.6) == pytest.approx(1.54 / 1.6)


def test_status_is_the_most_serious_flag():
    assert most_serious([]) == "ok"
    assert most_serious(["flat", "budget_limited", "c_at_bound"]) == "budget_limited"
    assert STATUS_ORDER[0] == "error" and STATUS_ORDER[-1] == "ok"


def test_convergence_rule_tells_a_plateau_from_a_falling_curve():
    falling = [2.0 * 0.97**i for i in range(20)]  # still 3% better per evaluation
    plateau = [2.0 * 0.7**i for i in range(8)] + [0.115] * 12
    assert not plateaued(falling).converged and plateaued(falling).improvement > 0.1
    assert plateaued(plateau).converged and plateaued(plateau).improvement == 0.0
    assert not plateaued(plateau[:3]).converged  # too few evaluations to tell


def test_convergence_rule_waits_for_a_run_to_leave_the_mean_predictor():
    """A delayed drop (the calibration mixture's curves): flat at the mean predictor, then
    falling. The window rule alone fires on the flat start; with the mean predictor's MSE the
    rule waits until the run is below it by more than the tolerance, and then for a plateau."""
    delayed = [6.50, 6.47, 6.49, 6.46, 6.45, 6.0, 5.2, 4.6, 4.4, 4.35] + [4.34] * 10
    mean_mse = 6.46
    assert plateaued(delayed[:5]).converged  # the flaw: "converged" before learning
    waiting = plateaued(delayed[:5], best_mse=min(delayed[:5]), mean_predictor_mse=mean_mse)
    assert not waiting.converged and not waiting.left_mean_predictor
    falling = plateaued(delayed[:9], best_mse=min(delayed[:9]), mean_predictor_mse=mean_mse)
    assert falling.left_mean_predictor and not falling.converged
    done = plateaued(delayed, best_mse=min(delayed), mean_predictor_mse=mean_mse)
    assert done.converged and done.left_mean_predictor


@pytest.mark.parametrize("exponent", [0.3, 0.5, 1.0, 2.0])
def test_a_run_the_rule_calls_converged_gains_less_than_the_tolerance_from_twice_the_budget(
        exponent):
    """On a power-law learning curve L(t) = 1.5 + t^-g evaluated every 10 steps, the first
    evaluation at which the rule holds is one where doubling the steps buys less than tol."""
    def loss(step: float) -> float:
        return 1.5 + step**-exponent

    steps = np.arange(10, 200_001, 10)
    scores = [loss(s) for s in steps]
    first = next(n for n in range(4, len(scores) + 1) if plateaued(scores[:n]).converged)
    step = steps[first - 1]
    assert (loss(step) - loss(2 * step)) / loss(step) < 0.01
