"""Joint fits L(N, D) with intervals, compute-optimal allocation, the stop-paying ratio, and
``scalelib fit --data``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalelib import chartspec
from scalelib.cli import main
from scalelib.errors import ScalelibError
from scalelib.explore import vegalite
from scalelib.fitrules import LOG_FLOOR, NO_FLOOR_SHARE
from scalelib.scaling import fit_joint, fit_joint_table, read_fits
from scalelib.scaling.allocation import (
    FlopsPerItem,
    allocation_intervals,
    optimal_allocation,
    stop_paying_data,
    stop_paying_intervals,
    stop_paying_ratio,
)
from scalelib.scaling.joint import JointFit

CHINCHILLA = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chinchilla"
              / "svg_extracted_data.csv")
TRUTH = {"E": 1.5, "A": 30.0, "B": 20.0, "alpha": 0.35, "beta": 0.3}


def planted(noise: float = 0.01, seeds: int = 2) -> pl.DataFrame:
    """L(N, D) = 1.5 + 30 N^-0.35 + 20 D^-0.3 on a 6 x 5 grid, ``seeds`` noisy copies."""
    n, d = np.meshgrid(np.geomspace(1e3, 1e6, 6), np.geomspace(1e3, 1e6, 5))
    n, d = np.tile(n.ravel(), seeds), np.tile(d.ravel(), seeds)
    loss = TRUTH["E"] + TRUTH["A"] * n ** -TRUTH["alpha"] + TRUTH["B"] * d ** -TRUTH["beta"]
    loss *= np.exp(np.random.default_rng(1).normal(0, noise, n.size))
    return pl.DataFrame({"params": n, "n_train_cells": d, "best_val_mse": loss,
                         "flops_per_cell": 6.0 * n, "status": "ok"})


def run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def bootstrapped() -> JointFit:
    points = planted()
    return fit_joint(points["params"], points["n_train_cells"], points["best_val_mse"],
                     n_bootstrap=40, seed=0)


def test_planted_surface_is_recovered_with_intervals_covering_the_truth(bootstrapped):
    fit = bootstrapped
    assert fit.status == "ok", fit.message
    assert fit.n_n == 6 and fit.n_d == 5 and len(fit.bootstrap_params) == 40
    for name, truth in TRUTH.items():
        low, high = fit.ci[name]
        assert low <= truth <= high, (name, low, high)
    assert fit.alpha == pytest.approx(0.35, abs=0.05) and fit.beta == pytest.approx(0.3, abs=0.05)
    back = JointFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back.ci["beta"] == pytest.approx(fit.ci["beta"]) and back.flags == fit.flags


def test_allocation_intervals_cover_the_planted_optimum_and_stop_paying_point(bootstrapped):
    truth = JointFit(**TRUTH, r2_log=1.0, bits=math.nan, n_runs=30)
    sizes = [1e4, 1e5]  # with tolerance 1, D* lies inside the fitted D (1e3 to 1e6)
    for (low, high), d in zip(stop_paying_intervals(bootstrapped, sizes, tolerance=1.0),
                              stop_paying_data(truth, sizes, tolerance=1.0)):
        assert low <= d <= high < 2 * low
    cost = FlopsPerItem(multiple=6.0)
    best = optimal_allocation(truth, 1e12, cost, n_range=(1e3, 1e6))  # N*, D* ~ 4e5
    ci = allocation_intervals(bootstrapped, 1e12, cost, n_range=(1e3, 1e6))
    for name in ("n", "d", "ratio"):
        assert ci[name][0] <= getattr(best, name) <= ci[name][1], name


def test_resamples_with_a_zero_exponent_put_interval_ends_beyond_the_measured_range():
    params = [tuple(TRUTH.values())] * 16
    no_n_gain = (TRUTH["E"], TRUTH["A"], TRUTH["B"], 0.0, TRUTH["beta"])
    no_d_gain = (TRUTH["E"], TRUTH["A"], TRUTH["B"], TRUTH["alpha"], 0.0)
    fit = JointFit(**TRUTH, r2_log=1.0, bits=math.nan, n_runs=30,
                   bootstrap_params=tuple(params + [no_n_gain] * 2 + [no_d_gain] * 2))
    [(low, high)] = stop_paying_intervals(fit, [1e4])
    assert low == 0 and high == math.inf  # 10% of resamples beyond on each side
    ci = allocation_intervals(fit, 1e14, FlopsPerItem(multiple=6.0), n_range=(1e3, 1e6))
    assert ci["n"][0] == 0 and ci["d"][1] == math.inf  # alpha = 0: the smallest model wins
    alone = JointFit(**TRUTH, r2_log=1.0, bits=math.nan, n_runs=30,
                     bootstrap_params=tuple(params))
    assert np.isfinite(stop_paying_intervals(alone, [1e4])).all()


def test_cli_puts_zero_and_infinite_interval_ends_in_words(tmp_path, capsys):
    points = planted()
    flat_in_d = (TRUTH["E"] + TRUTH["A"] * points["params"] ** -TRUTH["alpha"]) * np.exp(
        np.random.default_rng(2).normal(0, 0.01, points.height))
    points.with_columns(best_val_mse=flat_in_d).write_parquet(tmp_path / "r.parquet")
    status, out, err = run(capsys, "fit", tmp_path / "r.parquet", "--data", "n_train_cells",
                           "--bootstrap", "20", "--flops", "1e12")
    assert status == 0, err
    stop_lines = [line for line in out.splitlines() if " D* " in line]
    assert stop_lines and all("[beyond the measured range, " in line for line in stop_lines)
    assert "unidentified" in out and "the data do not pin the numbers below" in out
    assert not re.search(r"\b(inf|nan)\b", out)
    status, out, err = run(capsys, "fit", tmp_path / "r.parquet", "--data", "n_train_cells",
                           "--bootstrap", "20", "--flops", "1e12", "--json")
    report = json.loads(out)
    assert report["stop_paying"][0]["d_ci"][0] == 0 and report["allocations"][0]["ci"]["n"]


def test_cli_says_why_a_fit_flat_in_d_has_no_allocation(tmp_path, capsys):
    points = planted()
    rising_in_d = (TRUTH["E"] + TRUTH["A"] * points["params"] ** -TRUTH["alpha"]) * (
        1 + 0.01 * np.log10(points["n_train_cells"]))
    points.with_columns(best_val_mse=rising_in_d).write_parquet(tmp_path / "r.parquet")
    status, out, err = run(capsys, "fit", tmp_path / "r.parquet", "--data", "n_train_cells",
                           "--flops", "1e12")
    assert status == 0, err
    assert "no stop-paying ratio or compute-optimal allocation: the fitted best_val_mse does " \
           "not fall with D (exponent 0)" in out and "D*" not in out


def test_a_joint_fit_without_a_floor_is_flagged_even_above_the_bound():
    points = planted()
    no_floor = (TRUTH["A"] * points["params"] ** -TRUTH["alpha"]
                + TRUTH["B"] * points["n_train_cells"] ** -TRUTH["beta"])
    fit = fit_joint(points["params"], points["n_train_cells"], no_floor)
    assert "no_floor" in fit.flags
    assert math.exp(-LOG_FLOOR) < fit.E / no_floor.min() < NO_FLOOR_SHARE  # above its bound


def test_cli_gives_e_of_a_fit_without_a_floor_no_interval(tmp_path, capsys):
    """Resamples start from the full fit, where E ~0 cannot move: an interval would look exact."""
    points = planted()
    no_floor = (TRUTH["A"] * points["params"] ** -TRUTH["alpha"]
                + TRUTH["B"] * points["n_train_cells"] ** -TRUTH["beta"])
    points.with_columns(best_val_mse=no_floor).write_parquet(tmp_path / "r.parquet")
    status, out, err = run(capsys, "fit", tmp_path / "r.parquet", "--data", "n_train_cells",
                           "--bootstrap", "10")
    assert status == 0, err
    e_line = next(line for line in out.splitlines() if line.strip().startswith("E "))
    assert "no interval (E ~0" in e_line and "CI" not in e_line
    assert "no_floor" in out and re.search(r"alpha .*95% CI \[", out)


def test_an_exponent_at_its_bound_is_named():
    points = planted()
    flat_in_d = TRUTH["E"] + TRUTH["A"] * points["params"] ** -TRUTH["alpha"]
    fit = fit_joint(points["params"], points["n_train_cells"], flat_in_d)
    assert "alpha_at_bound" in fit.flags  # one flag for either exponent; the message says which
    assert re.search(r"\bbeta = [05] is at a bound of \(0\.0, 5\.0\)", fit.message)


def test_joint_fits_check_convergence_and_baselines_like_the_power_law_fits():
    points = planted().with_columns(converged=pl.col("params") < 1e5, model_family=pl.lit(
        "transformer"), dataset_fingerprint=pl.lit("f"))
    [fit] = fit_joint_table(points)
    assert fit.status == "budget_limited"
    assert "20 of the 30 runs at the largest sizes had not converged: E is a floor" in fit.message
    ridge = points.unique("n_train_cells").with_columns(
        model_family=pl.lit("ridge"), params=None, converged=None,
        best_val_mse=pl.lit(0.5 * points["best_val_mse"].min()))
    [fit] = fit_joint_table(pl.concat([points, ridge], how="diagonal_relaxed"))
    assert fit.flags[:2] == ("above_baseline", "budget_limited"), fit.flags
    assert "E is no floor of the data" in fit.message


def test_a_data_sweep_at_two_sizes_names_the_data_column_to_extend():
    points = planted().filter(pl.col("n_train_cells") > 1e5)  # 2 distinct D
    with pytest.raises(ScalelibError, match="3 distinct n_train_cells values, got 2; add runs "
                                            "at more values of n_train_cells"):
        fit_joint_table(points)


def test_too_few_points_for_five_parameters_is_unidentified():
    fit = fit_joint([1e3, 1e4, 1e5, 1e6, 1e3, 1e6], [1e3, 1e4, 1e5, 1e3, 1e6, 1e6],
                    [3.0, 2.5, 2.2, 2.6, 2.4, 1.9])
    assert "unidentified" in fit.flags


def test_allocation_matches_the_closed_form_for_c_proportional_to_n():
    fit = JointFit(**TRUTH, r2_log=1.0, bits=math.nan, n_runs=30)
    budget = 1e15
    found = optimal_allocation(fit, budget, FlopsPerItem(multiple=6.0), n_range=(1e3, 1e6))
    a, b = fit.beta / (fit.alpha + fit.beta), fit.alpha / (fit.alpha + fit.beta)
    g = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1 / (fit.alpha + fit.beta))
    assert found.n == pytest.approx(g * (budget / 6) ** a, rel=1e-4)
    assert found.d == pytest.approx((budget / 6) ** b / g, rel=1e-4)
    assert found.ratio == pytest.approx(found.d / found.n)


def test_interpolated_flops_pass_through_the_measured_sizes():
    cost = FlopsPerItem.from_points([100, 1000, 10_000], [5e3, 2e4, 3e5])
    assert cost(np.array([100, 1000, 10_000])) == pytest.approx([5e3, 2e4, 3e5])
    assert cost(316.2) == pytest.approx(1e4, rel=1e-3)  # a power law between points
    with pytest.raises(ScalelibError, match="several FLOP counts"):
        FlopsPerItem.from_points([100, 100, 1000], [1.0, 2.0, 3.0])


def test_doubling_n_gains_the_tolerance_share_of_doubling_d_at_the_stop_paying_point():
    fit = JointFit(**TRUTH, r2_log=1.0, bits=math.nan, n_runs=30)
    n = np.array([1e4, 1e6])
    d = stop_paying_data(fit, n, tolerance=0.1)
    gain_n = fit.predict(n, d) - fit.predict(2 * n, d)
    gain_d = fit.predict(n, d) - fit.predict(n, 2 * d)
    assert gain_n / gain_d == pytest.approx(0.1)
    assert stop_paying_ratio(fit, n, 0.1) == pytest.approx(d / n)


@pytest.mark.skipif(not CHINCHILLA.is_file(), reason=f"Chinchilla points not at {CHINCHILLA}")
def test_cli_on_chinchilla_gives_the_published_replication(tmp_path, capsys):
    """Besiroglu et al. 2024 (their Table 1): E 1.82, A 482.01, B 2085.43, alpha 0.3478,
    beta 0.3658, fitted on the extracted points without the five highest losses."""
    table = pl.read_csv(CHINCHILLA)
    table.filter(pl.col("loss") < table["loss"].sort()[-5]).write_csv(tmp_path / "c.csv")
    status, out, err = run(capsys, "fit", tmp_path / "c.csv", "--x", "Model Size",
                           "--data-from-flops", "Training FLOP", "--flops-per-item", "6",
                           "--y", "loss", "--flops", "5.76e23", "--json")
    assert status == 0, err
    fit = json.loads(out)
    assert fit["status"] == "ok" and fit["n_runs"] == 240
    assert fit["alpha"] == pytest.approx(0.3478, abs=0.03)
    assert fit["beta"] == pytest.approx(0.3658, abs=0.03)
    assert fit["E"] == pytest.approx(1.82, abs=0.05)
    assert fit["A"] == pytest.approx(482.01, rel=0.2) and fit["B"] == pytest.approx(2085.43, rel=0.2)
    chinchilla = fit["allocations"][0]  # Gopher's budget: Chinchilla trained 70B on 1.4T tokens
    assert 4e10 < chinchilla["n"] < 1.2e11 and 10 < chinchilla["ratio"] < 30


def test_cli_joint_fit_of_a_results_table_with_groups_and_flops(tmp_path, capsys):
    table = pl.concat([planted().with_columns(subsample=pl.lit(s)) for s in ("random", "geo")])
    table.write_parquet(tmp_path / "results.parquet")
    status, out, err = run(capsys, "fit", tmp_path / "results.parquet", "--data",
                           "n_train_cells", "--group-by", "subsample", "--flops", "1e12,1e14",
                           "--out", tmp_path / "fits.json")
    assert status == 0, err
    assert "subsample=geo" in out and "compute-optimal at 1e+14 FLOPs" in out
    assert "stop paying" in out
    joint = read_fits(tmp_path / "fits.json").joint_fits
    assert [f.group for f in joint] == [{"subsample": "geo"}, {"subsample": "random"}]


@pytest.mark.parametrize(("extra", "message"), [
    (["--data", "cells"], "no column 'cells'"),
    (["--data", "n_train_cells", "--y", "loss"], "no column 'loss'"),
    (["--data", "n_train_cells", "--method", "grid"], "drop --method grid"),
    (["--flops", "1e12"], "need the joint fit"),
    (["--data", "n_train_cells", "--flops", "1e12", "--flops-per-item", "cost"],
     "no column 'cost'"),
    (["--data-from-flops", "params"], "needs the FLOPs per item"),
])
def test_cli_joint_fit_errors_name_the_fix(tmp_path, capsys, extra, message):
    planted().drop("flops_per_cell").write_csv(tmp_path / "t.csv")
    status, out, err = run(capsys, "fit", tmp_path / "t.csv", *extra)
    assert status == 2 and message in err and not out


def test_fit_joint_table_reports_failed_groups_when_asked():
    table = planted().with_columns(group=pl.when(pl.col("params") < 2e3).then(pl.lit("few"))
                                   .otherwise(pl.lit("many")))
    fits = fit_joint_table(table, by=["group"], errors="report")
    assert [f.status for f in fits] == ["error", "ok"]
    with pytest.raises(ScalelibError, match="3 distinct"):
        fit_joint_table(table, by=["group"])


def test_allocation_chart_draws_sizes_stop_points_and_the_frontier():
    from scalelib.plots import allocation_chart

    table = planted().with_columns(size=pl.col("params").log10().round(1).cast(pl.Utf8))
    fit = fit_joint_table(table)[0]
    spec = allocation_chart(table, fit, budgets=[1e10, 1e12]).to_dict()
    curves, points, stops, frontier = (spec["datasets"][layer["data"]["name"]]
                                        for layer in spec["layer"])
    assert {row["size"] for row in curves} == set(table["size"].to_list())
    assert len(points) == table.height and len(frontier) == 2
    assert stops and all(row["best_val_mse"] > 0 for row in stops)
    assert frontier[1]["params"] > frontier[0]["params"]  # more compute, a larger model
    low, high = spec["layer"][0]["encoding"]["y"]["scale"]["domain"]
    losses = [row["best_val_mse"] for row in points + frontier]
    assert low == pytest.approx(min(losses) / 1.25) and high == pytest.approx(max(losses) * 1.25)
    assert max(row["best_val_mse"] for row in curves) > high  # clipped, not stretching the axis


def test_the_explorer_draws_the_allocation_chart_of_plots():
    """The explorer's data file holds the rows of each data sweep's allocation chart, drawn
    with the builder of plots.allocation_chart; a fit allowing no allocation is left out."""
    from scalelib.explore.bundle import allocation_charts
    from scalelib.plots import allocation_chart

    table = planted().with_columns(
        size=pl.col("params").log10().round(1).cast(pl.Utf8), regime=pl.lit("rich"),
        subsample=pl.lit("random"), dataset_fingerprint=pl.lit("f"),
        model_family=pl.lit("transformer"))
    flat = table.with_columns(regime=pl.lit("flat"), dataset_fingerprint=pl.lit("g"),
                              best_val_mse=1.0 + 0.01 * pl.col("params").log10().mod(2))
    [entry] = allocation_charts(pl.concat([table, flat]))
    fit = fit_joint_table(table, by=["regime"])[0]  # one strategy: fitted by regime
    altair = allocation_chart(table, fit, title=entry["title"]).to_dict()
    drawn = vegalite.VegaLite(chartspec.frontier_spec(**entry)).spec
    assert entry["title"] == "rich: data, model size and compute"
    for key in ("mark", "encoding"):
        assert [layer[key] for layer in drawn["layer"]] == [layer[key] for layer in altair["layer"]]
    assert drawn["title"] == altair["title"]
    assert len(drawn["layer"][2]["data"]["values"]) == len(entry["stops"]) > 0
