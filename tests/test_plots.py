"""Tests of scalelib.plots: Vega-Lite specs of every chart, and PNG/SVG files written offline."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from scalelib import plots
from scalelib.plots import axis_title, curves_chart, data_size_chart, save_chart, scaling_chart
from scalelib.results import RESULTS_SCHEMA, rows_to_frame
from scalelib.scaling import fit_groups, fit_joint_table

# name, d_model, n_layers, params (a demo-like ladder)
SIZES = [("D0", 1, 1, 230), ("D1", 4, 1, 1_100), ("D2", 8, 1, 4_500), ("D3", 16, 1, 18_000),
         ("D4", 32, 2, 70_000)]
REGIMES = {"rich": (4.0, 0.4, 0.25, 0.9), "limited": (2.0, 0.3, 0.4, 0.8)}  # a, alpha, c, base


def result_row(regime: str, size: tuple, seed: int, n_train_cells: int = 18_000,
               status: str = "ok", **changes) -> dict:
    """One results row of a planted curve; every schema column filled."""
    name, d_model, n_layers, params = size
    a, alpha, c, baseline = REGIMES[regime]
    rng = np.random.default_rng(seed * 1000 + params)
    val = (a * params**-alpha + c) * (1 + 1e4 / n_train_cells * 0.01) * np.exp(
        rng.normal(0, 0.01))
    row = {column: None for column in RESULTS_SCHEMA}
    row.update(
        run_id=f"{regime}-{name}-{seed}-{n_train_cells}", regime=regime, source="simulator",
        dataset=f"sim-{regime}", n_genes=128, n_train_cells=n_train_cells, n_val_cells=1000,
        n_test_cells=1000, size=name, d_model=d_model, n_layers=n_layers, n_heads=1, ff_mult=4,
        params=params, seed=seed, best_val_mse=float(val),
        test_mse=float(val * np.exp(rng.normal(0, 0.01))), baseline_val_mse=baseline,
        baseline_test_mse=baseline, status=status,
    )
    row.update(changes)
    return row


def results_table(regimes=("rich", "limited"), seeds=(0, 1), **changes) -> pl.DataFrame:
    return rows_to_frame([result_row(r, s, seed, **changes) for r in regimes for s in SIZES
                          for seed in seeds])


def layer_marks(spec: dict) -> list[str]:
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
            for layer in spec["layer"]]


def test_axis_titles_are_readable():
    assert axis_title("params", log=True) == "Parameters P (log)"
    assert axis_title("best_val_mse") == "Validation MSE (masked genes)"
    assert axis_title("best_val_mse", log=True) == "Validation MSE (masked genes, log)"
    assert axis_title("some_column") == "some column"


def test_scaling_chart_has_points_band_curves_and_baseline():
    table = results_table()
    failed = rows_to_frame([result_row("rich", SIZES[0], 9, status="failed: nan loss",
                                       best_val_mse=None)])
    fits = fit_groups(pl.concat([table, failed]), by=["regime"], methods=["grid", "huber"],
                      n_bootstrap=30)
    spec = scaling_chart(pl.concat([table, failed]), fits).to_dict()
    assert layer_marks(spec) == ["circle", "area", "line", "rule", "text"]
    points, band, curves, rule, label = spec["layer"]
    assert points["encoding"]["x"]["field"] == "params"
    assert points["encoding"]["x"]["scale"]["type"] == "log"
    assert points["encoding"]["y"]["scale"]["type"] == "log"
    assert points["encoding"]["x"]["title"] == "Parameters P (log)"
    assert points["encoding"]["y"]["title"] == "Validation MSE (masked genes, log)"
    assert points["encoding"]["color"]["field"] == "series"
    assert band["encoding"]["y2"]["field"] == "high"
    assert rule["mark"]["strokeDash"] == [6, 4]
    assert label["encoding"]["text"]["field"] == "family"
    datasets = spec["datasets"]
    assert len(datasets[points["data"]["name"]]) == table.height  # the failed run is not drawn
    assert {row["series"] for row in datasets[curves["data"]["name"]]} == {"rich", "limited"}
    baselines = {row["series"]: row["baseline"] for row in datasets[rule["data"]["name"]]}
    assert baselines == pytest.approx({"rich": 0.9, "limited": 0.8})
    assert {row["family"] for row in datasets[rule["data"]["name"]]} == {"per-gene mean"}
    band_rows = datasets[band["data"]["name"]]
    assert all(row["low"] <= row["high"] for row in band_rows)
    subtitle = " ".join(spec["title"]["subtitle"])
    assert "rich: alpha" in subtitle and "bootstrap" in subtitle and "baseline" in subtitle
    assert "undetermined" in subtitle and "not checked against" in subtitle


def with_baselines(table: pl.DataFrame, values: dict[str, dict[str, float]],
                   converged: bool | None = None) -> pl.DataFrame:
    """The table's runs (transformers, ``converged`` set) and baseline rows per regime:
    ``values[regime][family]`` is the family's validation MSE on that regime's data."""
    runs = table.with_columns(pl.lit("transformer").alias("model_family"),
                              pl.lit(converged, pl.Boolean).alias("converged"),
                              ("fp-" + pl.col("regime")).alias("dataset_fingerprint"))
    first = {regime: runs.filter(pl.col("regime") == regime).row(0, named=True)
             for regime in values}
    rows = [{**first[regime], "run_id": f"{regime}-{family}", "model_family": family,
             "params": None, "size": None, "best_val_mse": mse, "test_mse": mse,
             "converged": None}
            for regime, families in values.items() for family, mse in families.items()]
    return pl.concat([runs, pl.DataFrame(rows, schema=runs.schema)])


def test_scaling_chart_draws_each_matching_baseline_family_and_the_verdict():
    table = with_baselines(results_table(seeds=(0,)),
                           {"rich": {"mean": 1.2, "ridge": 0.28}, "limited": {"mean": 5.0}},
                           converged=True)
    spec = scaling_chart(table, fit_groups(table, by=["regime"], methods=["huber"])).to_dict()
    assert layer_marks(spec) == ["circle", "line", "rule", "text"]
    points, _, rule, label = spec["layer"]
    assert len(spec["datasets"][points["data"]["name"]]) == 10  # baselines are not points
    lines = {(row["series"], row["family"]): row["baseline"]
             for row in spec["datasets"][rule["data"]["name"]]}
    assert lines == pytest.approx({("rich", "mean"): 1.2, ("rich", "ridge"): 0.28,
                                   ("limited", "mean"): 5.0})  # not the per-gene-mean column
    assert spec["datasets"][label["data"]["name"]] == spec["datasets"][rule["data"]["name"]]
    low, high = points["encoding"]["y"]["scale"]["domain"]
    assert low == pytest.approx(0.28 / 1.25) and high == pytest.approx(5.0 * 1.25)
    subtitle = spec["title"]["subtitle"]
    rich = next(line for line in subtitle if line.startswith("rich: alpha"))
    assert rich.endswith(": loses to a baseline")  # ridge (0.28) beats every rich run
    assert any(line.startswith("limited: alpha") and line.endswith(": data ran out")
               for line in subtitle)
    words = " ".join(subtitle)
    assert "beat the best baseline (ridge reaches 0.28)" in words
    assert "is a floor of the data for this model family" in words
    assert all(len(line) <= 90 for line in subtitle if ": alpha" not in line)


def test_a_wide_bootstrap_band_does_not_stretch_the_loss_axis():
    table = results_table(regimes=("rich",), seeds=(0,))
    fits = fit_groups(table, by=["regime"], methods=["huber"], n_bootstrap=30)
    # bands reaching far beyond the data, as with few sizes and one seed
    fits = [replace(fit, bootstrap_params=tuple((a * 1e6, alpha, c)
                                                for a, alpha, c in fit.bootstrap_params))
            for fit in fits]
    spec = scaling_chart(table, fits).to_dict()
    points, band = spec["layer"][:2]
    low, high = points["encoding"]["y"]["scale"]["domain"]
    losses = table["best_val_mse"]
    assert low < min(losses.min(), 0.9) and high == pytest.approx(max(losses.max(), 0.9) * 1.25)
    band_rows = spec["datasets"][band["data"]["name"]]
    assert max(row["high"] for row in band_rows) == pytest.approx(high)


def test_scaling_chart_with_one_regime_no_bootstrap_and_no_baseline():
    table = results_table(regimes=("rich",), baseline_val_mse=None)
    fits = fit_groups(table, by=["regime"], methods=["huber"])
    spec = scaling_chart(table, fits).to_dict()
    assert layer_marks(spec) == ["circle", "line"]
    assert spec["title"]["text"]


def test_scaling_chart_without_fits_or_colour_column():
    table = results_table(regimes=("rich",)).select("params", "best_val_mse")
    spec = scaling_chart(table, None, color=None, baseline=None).to_dict()
    assert layer_marks(spec) == ["circle"]


def test_scaling_chart_draws_whole_table_fits_and_test_mse():
    table = results_table()
    fits = fit_groups(table, y="test_mse", by=[], methods=["grid"])
    spec = scaling_chart(table, fits, y="test_mse", baseline="baseline_test_mse").to_dict()
    assert layer_marks(spec) == ["circle", "line", "rule", "text"]
    curves = spec["datasets"][spec["layer"][1]["data"]["name"]]
    assert {row["series"] for row in curves} == {"all"}
    assert spec["layer"][0]["encoding"]["y"]["title"] == "Test MSE (masked genes, log)"


def curve_frame() -> pl.DataFrame:
    rows = []
    for name, _, _, params in SIZES[:3]:
        for step in range(0, 101, 10):
            rows.append({"run_id": f"run-{name}", "size": name, "params": params, "step": step,
                         "cells_seen": step * 32, "train_loss": 1.0 / (1 + step / 50),
                         "val_mse": 1.1 / (1 + step / 60) if step % 50 == 0 else None,
                         "lr": 1e-3, "elapsed_s": step * 0.1})
    return pl.DataFrame(rows)


def test_curves_chart_has_training_and_validation_lines():
    spec = curves_chart(curve_frame()).to_dict()
    assert layer_marks(spec) == ["line", "point"]
    lines = spec["layer"][0]
    assert lines["encoding"]["strokeDash"]["field"] == "split"
    assert lines["encoding"]["color"]["sort"] == ["D0", "D1", "D2"]
    assert lines["encoding"]["x"]["title"] == "Optimiser step"
    rows = spec["datasets"][spec["data"]["name"]] if "data" in spec else spec["datasets"][
        lines["data"]["name"]]
    splits = [row["split"] for row in rows]
    assert splits.count("validation MSE") == 3 * 3 and splits.count("training loss") == 3 * 11
    by_cells = curves_chart(curve_frame(), x="cells_seen", log_x=True).to_dict()
    assert by_cells["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"


def test_curves_chart_draws_a_put_aside_cooldown_apart_from_the_stable_run():
    """Steps 40-50 of each run were a cool-down (validation 0.5 at its end) put aside: the
    stable run's validation line goes from step 0 to 100 without passing through it."""
    frame = curve_frame().with_columns(
        cooldown=pl.when(pl.col("step").is_between(40, 50)).then(1).otherwise(0))
    spec = curves_chart(frame).to_dict()
    lines = spec["layer"][0]
    assert lines["encoding"]["detail"]["field"] == "segment"
    rows = spec["datasets"][lines["data"]["name"]] if "data" in lines else next(
        iter(spec["datasets"].values()))
    validation = {(row["segment"], row["step"]) for row in rows
                  if row["split"] == "validation MSE" and row["run_id"] == "run-D0"}
    assert validation == {("run-D0/0", 0), ("run-D0/0", 100), ("run-D0/1", 50)}


def test_test_vs_val_chart_has_the_diagonal():
    spec = plots.test_vs_val_chart(results_table()).to_dict()
    assert layer_marks(spec) == ["line", "circle"]
    diagonal = spec["datasets"][spec["layer"][0]["data"]["name"]]
    assert [row["best_val_mse"] for row in diagonal] == [row["test_mse"] for row in diagonal]
    assert spec["layer"][1]["encoding"]["x"]["title"] == "Validation MSE (masked genes)"
    assert spec["layer"][1]["encoding"]["y"]["title"] == "Test MSE (masked genes)"


def data_sweep() -> pl.DataFrame:
    return pl.concat([results_table(regimes=("rich",), n_train_cells=cells)
                      for cells in (1_000, 4_000, 16_000, 64_000)])


def test_data_size_chart_lines_per_size_with_and_without_joint_fit():
    table = data_sweep()
    spec = data_size_chart(table).to_dict()
    assert layer_marks(spec) == ["circle", "line"]
    assert spec["layer"][0]["encoding"]["x"]["title"] == "Training cells D (log)"
    assert spec["layer"][1]["encoding"]["color"]["sort"] == [s[0] for s in SIZES]
    joint = fit_joint_table(table)
    with_fit = data_size_chart(table, joint).to_dict()
    assert layer_marks(with_fit) == ["circle", "line", "line"]
    assert with_fit["layer"][2]["mark"]["strokeDash"] == [6, 4]


def test_save_chart_writes_png_and_svg_offline(tmp_path):
    table = results_table(regimes=("rich",))
    chart = scaling_chart(table, fit_groups(table, methods=["grid"], n_bootstrap=10))
    paths = save_chart(chart, tmp_path / "figures" / "scaling")
    assert [p.name for p in paths] == ["scaling.png", "scaling.svg"]
    png, svg = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert b"<svg" in svg[:500] and b"Parameters P (log)" in svg
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["scaling.png",
                                                                       "scaling.svg"]
