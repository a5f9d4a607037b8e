"""Tests of scalelib.scaling: planted-parameter recovery, soft problems, bootstrap, JSON, L(N, D)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalelib.errors import ScalelibError
from scalelib.scaling import (
    METHODS,
    PowerLawFit,
    bootstrap_power_law,
    entropy_bits,
    fit_groups,
    fit_joint,
    fit_joint_table,
    fit_power_law,
    fits_frame,
    read_fits,
    write_fits,
)

CHINCHILLA = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chinchilla"
              / "svg_extracted_data.csv")

# A demo-like ladder: seven sizes over more than three orders of magnitude.
SIZES = np.array([2.3e2, 1.1e3, 4.5e3, 1.8e4, 7.0e4, 2.2e5, 6.0e5])
TRUE = {"a": 4.0, "alpha": 0.4, "c": 0.25}


def planted(seeds: int = 1, sigma: float = 0.0, rng_seed: int = 0,
            truth: dict = TRUE) -> tuple[np.ndarray, np.ndarray]:
    """Points of a planted curve, ``seeds`` per size, with multiplicative log-normal noise."""
    x = np.repeat(SIZES, seeds)
    y = truth["a"] * x ** -truth["alpha"] + truth["c"]
    noise = np.random.default_rng(rng_seed).normal(0.0, sigma, x.size)
    return x, y * np.exp(noise)


def test_bits_of_the_papers_floor():
    # The reference study's floor c = 1.44 is "about 2.3 bits": 0.5 log2(2 pi e 1.44) = 2.310.
    assert round(entropy_bits(1.44), 1) == 2.3
    assert entropy_bits(1.44) == pytest.approx(2.310, abs=1e-3)
    assert entropy_bits(1.0) == pytest.approx(0.5 * math.log2(2 * math.pi * math.e))
    vector = entropy_bits(np.array([1.44, 0.0, -1.0]))
    assert vector[0] == pytest.approx(entropy_bits(1.44))
    assert np.isnan(vector[1:]).all()


def test_huber_recovers_noise_free_parameters_exactly():
    fit = fit_power_law(*planted(), "huber")
    assert fit.status == "ok", fit.message
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=1e-4)
    assert fit.a == pytest.approx(TRUE["a"], rel=1e-3)
    assert fit.c == pytest.approx(TRUE["c"], rel=1e-4)
    assert fit.r2 == fit.r2_log == pytest.approx(1.0, abs=1e-9)
    assert fit.bits == pytest.approx(entropy_bits(TRUE["c"]), rel=1e-4)


def test_grid_recovers_noise_free_parameters_within_its_c_step():
    # c moves in steps of 0.99 * min(y) / 199 ~ 1.3e-3, which bounds the accuracy.
    fit = fit_power_law(*planted(), "grid")
    assert fit.status == "ok", fit.message
    assert fit.c == pytest.approx(TRUE["c"], abs=1.5e-3)
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=0.02)
    assert fit.a == pytest.approx(TRUE["a"], rel=0.05)
    assert fit.r2 == pytest.approx(1.0, abs=1e-4)
    assert fit.r2_log == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_noisy_fit_is_close_and_its_bootstrap_interval_covers_the_truth(method):
    x, y = planted(seeds=4, sigma=0.02, rng_seed=3)
    fit = fit_power_law(x, y, method, n_bootstrap=200, seed=1)
    assert fit.status == "ok", fit.message
    assert fit.alpha == pytest.approx(TRUE["alpha"], abs=0.06)
    assert fit.c == pytest.approx(TRUE["c"], abs=0.02)
    assert fit.r2_log > 0.95
    for name in ("alpha", "a", "c"):
        low, high = fit.ci[name]
        assert low <= TRUE[name] <= high, (name, fit.ci[name])
    low, high = fit.ci["bits"]
    assert low <= entropy_bits(TRUE["c"]) <= high
    assert len(fit.bootstrap_params) == 200 - fit.bootstrap_failures
    assert fit.n_bootstrap == 200 and fit.bootstrap_seed == 1


def grid_regression(x: np.ndarray, y: np.ndarray, c: float) -> tuple[float, float]:
    """alpha and R^2 of the OLS of ``log(y - c)`` on ``log x``, as the reference study fits."""
    target = np.log(y - c)
    slope, intercept = np.polyfit(np.log(x), target, 1)
    residual = target - (slope * np.log(x) + intercept)
    return -slope, 1 - np.sum(residual**2) / np.sum((target - target.mean()) ** 2)


def test_huber_r2_is_r2_log_and_grid_r2_is_its_regression():
    x, y = planted(seeds=2, sigma=0.03, rng_seed=5)
    huber, grid = fit_power_law(x, y, "huber"), fit_power_law(x, y, "grid")
    assert huber.r2 == huber.r2_log
    # The grid's own R^2 is that of log(y - c) on log x, not of log y on log yhat.
    alpha, r2 = grid_regression(x, y, grid.c)
    assert grid.r2 == pytest.approx(r2, rel=1e-9)
    assert grid.alpha == pytest.approx(alpha, rel=1e-9)


def flat_points(sigma: float, rng_seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Three seeds per size around y = 0.5, with multiplicative log-normal noise."""
    x = np.repeat(SIZES, 3)
    return x, 0.5 * np.exp(np.random.default_rng(rng_seed).normal(0.0, sigma, x.size))


@pytest.mark.parametrize("sigma", [0.0, 0.01])
def test_flat_huber_fit_is_reported_as_the_constant(sigma):
    x, y = flat_points(sigma)
    fit = fit_power_law(x, y, "huber", n_bootstrap=20)
    assert fit.status == "flat", fit.message
    assert "not identifiable" in fit.message and "L = c" in fit.message
    assert fit.a == fit.alpha == fit.r2 == fit.r2_log == 0.0
    assert fit.c == pytest.approx(np.exp(np.mean(np.log(y))), rel=1e-12)
    assert fit.c == pytest.approx(0.5, rel=0.02)
    assert np.isfinite(fit.bits)


@pytest.mark.parametrize("rng_seed", [2, 3, 4])
def test_flat_grid_fit_keeps_its_small_alpha_and_r2(rng_seed):
    # Like the reference study's flat regime (alpha = 0.009, R^2 = 0.017): the numbers the
    # grid fitted are reported, not zeroed; only the status says the curve is flat.
    x, y = flat_points(0.01, rng_seed)
    fit = fit_power_law(x, y, "grid", n_bootstrap=20)
    assert fit.status == "flat", fit.message
    assert "reported as fitted" in fit.message
    alpha, r2 = grid_regression(x, y, fit.c)
    assert fit.alpha == pytest.approx(max(alpha, 0.0), rel=1e-9, abs=1e-12)  # alpha >= 0 bound
    if alpha > 0:
        assert fit.r2 == pytest.approx(r2, rel=1e-9) and 0.0 < fit.r2 < 0.1
    assert 0.0 <= fit.alpha < 0.05 and fit.r2_log < 0.1
    assert fit.a > 0.0 and 0.0 <= fit.c < 0.5
    assert fit.predict(SIZES) == pytest.approx(0.5, rel=0.02)
    assert fit.bits == pytest.approx(entropy_bits(fit.c), nan_ok=True)


def test_flat_grid_fit_of_a_constant_keeps_the_regression_at_c_zero():
    # Constant y: every c of the grid regresses equally badly (R^2 = 0), so the first, c = 0,
    # is kept: L = a with a = y, alpha = 0, and no floor for bits.
    x, y = flat_points(0.0)
    fit = fit_power_law(x, y, "grid")
    assert fit.status == "flat" and "no irreducible floor" in fit.message, fit.message
    assert (fit.a, fit.alpha, fit.c, fit.r2, fit.r2_log) == (pytest.approx(0.5), 0.0, 0.0, 0.0,
                                                             0.0)
    assert math.isnan(fit.bits)


@pytest.mark.parametrize("method", ["grid", "huber"])
@pytest.mark.parametrize("x, y", [([1e3, 1e4, 1e5], [1.41, 1.50, 1.59]),  # a smoke sweep's
                                  (SIZES, 0.5 * SIZES ** 0.05)])
def test_a_rising_curve_is_increasing_with_no_floor(method, x, y):
    fit = fit_power_law(np.asarray(x, dtype=float), np.asarray(y, dtype=float), method)
    assert fit.status == "increasing", fit.message
    assert math.isnan(fit.bits) and "no power-law decline" in fit.message


def test_flat_message_gives_the_degrees_of_freedom():
    x, y = flat_points(0.01, 2)
    assert "with 18 residual degrees of freedom" in fit_power_law(x, y, "grid").message


def test_pure_power_law_grid_picks_c_zero_and_reports_nan_bits():
    x = SIZES
    fit = fit_power_law(x, 2.0 * x**-0.3, "grid")
    assert fit.c == 0.0
    assert math.isnan(fit.bits)
    assert fit.status == "no_floor" and "bits" in fit.message
    assert fit.alpha == pytest.approx(0.3, rel=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_fewer_than_three_distinct_x_is_a_clear_error(method):
    with pytest.raises(ScalelibError, match="at least 3 distinct"):
        fit_power_law([10, 10, 100, 100], [1.0, 1.1, 0.5, 0.6], method)


@pytest.mark.parametrize("x, y, match", [
    ([10, 100, 1000], [1.0, float("nan"), 0.5], "NaN"),
    ([10, 100, 1000], [1.0, 0.0, 0.5], "positive"),
    ([10, -100, 1000], [1.0, 0.7, 0.5], "positive"),
    ([10, 100, 1000], [1.0, 0.7], "length"),
])
def test_bad_values_are_clear_errors(x, y, match):
    with pytest.raises(ScalelibError, match=match):
        fit_power_law(x, y)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ScalelibError, match="grid, huber"):
        fit_power_law(*planted(), "ols")


@pytest.mark.parametrize("method", METHODS)
def test_bootstrap_is_reproducible_for_a_seed(method):
    x, y = planted(seeds=2, sigma=0.02, rng_seed=7)
    first = bootstrap_power_law(x, y, method, n_resamples=40, seed=11)
    again = bootstrap_power_law(x, y, method, n_resamples=40, seed=11)
    other = bootstrap_power_law(x, y, method, n_resamples=40, seed=12)
    assert first.bootstrap_params == again.bootstrap_params
    assert first.ci == again.ci
    assert first.bootstrap_params != other.bootstrap_params


def test_bootstrap_skips_and_counts_resamples_with_too_few_x():
    x, y = np.array([10.0, 100.0, 1000.0, 10000.0]), np.array([1.0, 0.6, 0.45, 0.41])
    calls = []
    fit = bootstrap_power_law(x, y, "grid", n_resamples=100, seed=0,
                              on_resample=lambda: calls.append(1))
    assert len(calls) == 100
    assert 0 < fit.bootstrap_failures < 100
    assert len(fit.bootstrap_params) == 100 - fit.bootstrap_failures


def test_band_brackets_the_fitted_curve():
    x, y = planted(seeds=3, sigma=0.02, rng_seed=1)
    fit = fit_power_law(x, y, "huber", n_bootstrap=100)
    low, high = fit.band(SIZES)
    assert np.all(low <= high)
    assert np.mean((low <= fit.predict(SIZES)) & (fit.predict(SIZES) <= high)) >= 6 / 7
    no_samples = fit_power_law(x, y, "huber").band(SIZES)
    assert np.isnan(no_samples[0]).all()


def results_like_table() -> pl.DataFrame:
    """Two regimes, three seeds per size, a failed run and a group too small to fit."""
    frames = []
    for regime, truth in (("rich", TRUE), ("limited", {"a": 2.0, "alpha": 0.3, "c": 0.4})):
        x, y = planted(seeds=3, sigma=0.01, rng_seed=len(regime), truth=truth)
        frames.append(pl.DataFrame({"regime": regime, "params": x.astype(np.int64),
                                    "best_val_mse": y, "status": "ok"}))
    frames.append(pl.DataFrame({"regime": ["rich", "tiny", "tiny"], "params": [500, 10, 20],
                                "best_val_mse": [None, 1.0, 0.9],
                                "status": ["failed: out of memory", "ok", "ok"]}))
    return pl.concat(frames, how="vertical_relaxed")


def test_fit_groups_fits_each_group_and_reports_unfittable_ones():
    fits = fit_groups(results_like_table(), by=["regime"], methods=["grid", "huber"])
    by_key = {(f.group["regime"], f.method): f for f in fits}
    assert set(by_key) == {(r, m) for r in ("limited", "rich", "tiny") for m in METHODS}
    assert by_key["rich", "huber"].n_runs == 21  # the failed run is left out
    assert by_key["rich", "huber"].alpha == pytest.approx(0.4, abs=0.05)
    assert by_key["limited", "huber"].alpha == pytest.approx(0.3, abs=0.05)
    tiny = by_key["tiny", "huber"]
    assert tiny.status == "error" and "3 distinct" in tiny.message and math.isnan(tiny.alpha)
    frame = fits_frame(fits)
    assert frame.height == 6
    assert {"regime", "method", "alpha", "alpha_low", "bits_high", "status"} <= set(frame.columns)


def test_fit_groups_unknown_column_names_the_available_ones():
    with pytest.raises(ScalelibError, match="best_val_mse"):
        fit_groups(results_like_table(), y="val_loss")


def test_fits_json_round_trip_is_strict_json(tmp_path):
    table = results_like_table()
    fits = fit_groups(table, by=["regime"], methods=["grid", "huber"], n_bootstrap=30, seed=4)
    nan_fit = PowerLawFit(method="grid", a=2.0, alpha=0.3, c=0.0, r2=1.0, r2_log=1.0,
                          bits=float("nan"), n_runs=7, n_x=7, status="no_floor")
    joint = fit_joint_table(pl.DataFrame(joint_points()), n="N", d="D", y="loss")
    path = write_fits([*fits, nan_fit], tmp_path / "fits" / "fits.json", joint_fits=joint)
    text = path.read_text()
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON {name}"))
    assert document["x"] == "params" and document["y"] == "best_val_mse"
    assert document["fits"][-1]["bits"] is None
    assert {"created", "scalelib_version", "fits", "joint_fits"} <= set(document)
    first = document["fits"][0]
    assert len(first["bootstrap_params"]) == 30 - first["bootstrap_failures"]
    assert set(first["ci"]) == {"alpha", "a", "c", "bits", "r2_log"}
    back = read_fits(path)
    assert back.x == "params" and len(back.fits) == len(fits) + 1
    for written, read in zip([*fits, nan_fit], back.fits):
        assert json.dumps(written.to_dict(), default=str) == json.dumps(read.to_dict(),
                                                                        default=str)
    assert back.joint_fits[0].alpha == pytest.approx(joint[0].alpha)
    assert not list(tmp_path.joinpath("fits").glob(".*"))  # no temporary file left


def test_read_fits_errors_name_the_fix(tmp_path):
    with pytest.raises(ScalelibError, match="scalelib fit"):
        read_fits(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ScalelibError, match="not a scalelib fits file"):
        read_fits(tmp_path / "bad.json")


def joint_points() -> dict[str, np.ndarray]:
    """A planted L(N, D) on a 6 x 5 grid with 1% noise."""
    n, d = np.meshgrid(np.geomspace(1e4, 1e7, 6), np.geomspace(1e5, 1e8, 5))
    n, d = n.ravel(), d.ravel()
    loss = 1.5 + 300 * n**-0.35 + 900 * d**-0.3
    loss *= np.exp(np.random.default_rng(0).normal(0, 0.002, n.size))
    return {"N": n, "D": d, "loss": loss}


def test_joint_fit_recovers_planted_parameters():
    points = joint_points()
    fit = fit_joint(points["N"], points["D"], points["loss"])
    assert fit.status == "ok", fit.message
    assert fit.E == pytest.approx(1.5, abs=0.05)
    assert fit.alpha == pytest.approx(0.35, abs=0.03)
    assert fit.beta == pytest.approx(0.3, abs=0.03)
    assert fit.r2_log > 0.99


@pytest.mark.skipif(not CHINCHILLA.is_file(), reason=f"Chinchilla points not at {CHINCHILLA}")
def test_joint_fit_reproduces_epochs_chinchilla_replication():
    """Besiroglu et al. 2024: E 1.82, A 482, B 2085, alpha 0.35, beta 0.37.

    Like their replication, the five highest-loss points are left out.
    """
    table = pl.read_csv(CHINCHILLA)
    n, flop, loss = (table[c].to_numpy() for c in ("Model Size", "Training FLOP", "loss"))
    keep = loss < np.sort(loss)[-5]
    fit = fit_joint(n[keep], (flop / (6 * n))[keep], loss[keep])
    assert fit.status == "ok", fit.message
    assert fit.alpha == pytest.approx(0.35, abs=0.05)
    assert fit.beta == pytest.approx(0.37, abs=0.05)
    assert fit.E == pytest.approx(1.82, abs=0.1)
    assert fit.A == pytest.approx(482, rel=0.25)
    assert fit.B == pytest.approx(2085, rel=0.25)


def test_fit_groups_orders_numeric_groups_numerically():
    x, y = planted(seeds=1)
    table = pl.concat([pl.DataFrame({"n_train_cells": cells, "params": x, "best_val_mse": y})
                       for cells in (10_000, 200, 1_000)])
    fits = fit_groups(table, by=["n_train_cells"], methods=["grid"])
    assert [f.group["n_train_cells"] for f in fits] == [200, 1_000, 10_000]


def test_scaling_and_plots_never_import_torch():
    code = ("import sys, scalelib.scaling, scalelib.plots, scalelib.cli.fit_cmd; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
