"""Tests of ``scalelib fit``: CSV and parquet tables, JSON output, groups, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalelib.cli import main
from scalelib.scaling import read_fits

CHINCHILLA = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chinchilla"
              / "svg_extracted_data.csv")
SIZES = np.array([2.3e2, 1.1e3, 4.5e3, 1.8e4, 7.0e4, 2.2e5, 6.0e5])


def planted_table(seeds: int = 2) -> pl.DataFrame:
    """A small results-like table: two regimes, a failed run, planted curves with 1% noise."""
    rng = np.random.default_rng(0)
    frames = []
    for regime, (a, alpha, c) in {"rich": (4.0, 0.4, 0.25), "limited": (2.0, 0.3, 0.4)}.items():
        params = np.repeat(SIZES, seeds)
        loss = (a * params**-alpha + c) * np.exp(rng.normal(0, 0.01, params.size))
        frames.append(pl.DataFrame({"regime": regime, "params": params.astype(np.int64),
                                    "best_val_mse": loss, "status": "ok"}))
    failed = pl.DataFrame({"regime": ["rich"], "params": [999], "best_val_mse": [None],
                           "status": ["failed: diverged"]})
    return pl.concat([*frames, failed], how="vertical_relaxed")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_fit_csv_prints_json_with_the_fit(tmp_path, capsys):
    path = tmp_path / "points.csv"
    table = planted_table().filter(pl.col("regime") == "rich")
    table.rename({"params": "Model Size", "best_val_mse": "loss"}).drop("status").drop_nulls(
    ).write_csv(path)
    status, out, err = run(capsys, "fit", path, "--x", "Model Size", "--y", "loss", "--json")
    assert status == 0, err
    fit = json.loads(out)
    assert {"alpha", "a", "c", "r2", "r2_log", "bits", "status", "method", "n_runs"} <= set(fit)
    assert fit["alpha"] == pytest.approx(0.4, abs=0.05)
    assert fit["method"] == "huber" and fit["n_runs"] == 14 and fit["ci"] is None
    assert fit["x"] == "Model Size" and fit["y"] == "loss"


def test_fit_parquet_by_group_with_bootstrap(tmp_path, capsys):
    path = tmp_path / "results.parquet"
    planted_table().write_parquet(path)
    status, out, err = run(capsys, "fit", path, "--group-by", "regime", "--bootstrap", "30",
                           "--seed", "3", "--method", "grid", "--json")
    assert status == 0, err
    fits = json.loads(out)
    assert [fit["group"] for fit in fits] == [{"regime": "limited"}, {"regime": "rich"}]
    for fit in fits:
        assert fit["method"] == "grid" and fit["n_bootstrap"] == 30
        assert fit["bootstrap_seed"] == 3
        assert set(fit["ci"]) == {"alpha", "a", "c", "bits", "r2_log"}
        low, high = fit["ci"]["alpha"]
        assert low <= fit["alpha"] <= high
        assert "bootstrap_params" not in fit
    assert fits[1]["n_runs"] == 14  # the failed run is left out


def test_min_x_leaves_out_the_smallest_models(tmp_path, capsys):
    path = tmp_path / "results.parquet"
    planted_table().write_parquet(path)
    status, out, err = run(capsys, "fit", path, "--group-by", "regime", "--min-x", "4000",
                           "--json")
    assert status == 0, err
    assert [fit["n_runs"] for fit in json.loads(out)] == [10, 10]  # 5 sizes x 2 seeds each


def test_fit_prints_a_readable_summary_and_writes_the_fits_file(tmp_path, capsys):
    path, out_path = tmp_path / "results.parquet", tmp_path / "fits.json"
    planted_table().write_parquet(path)
    status, out, err = run(capsys, "fit", path, "--group-by", "regime", "--bootstrap", "20",
                           "--out", out_path)
    assert status == 0, err
    assert "regime=rich" in out and "alpha" in out and "95% CI" in out and "bits" in out
    assert "status  ok" in out
    written = read_fits(out_path)
    assert written.x == "params" and len(written.fits) == 2
    assert all(len(fit.bootstrap_params) == 20 - fit.bootstrap_failures for fit in written.fits)


@pytest.mark.skipif(not CHINCHILLA.is_file(), reason=f"Chinchilla points not at {CHINCHILLA}")
def test_fit_reads_the_chinchilla_csv(capsys):
    status, out, err = run(capsys, "fit", CHINCHILLA, "--x", "Model Size", "--y", "loss",
                           "--json")
    assert status == 0, err
    fit = json.loads(out)
    assert fit["n_runs"] == 245 and np.isfinite(fit["alpha"])


@pytest.mark.parametrize("argv, message", [
    (["--y", "val_loss"], "available|the table has"),
    (["--x", "missing_column"], "best_val_mse"),
    (["--group-by", "nope"], "regime"),
    (["--bootstrap", "-1"], "--bootstrap"),
    (["--x", "size", "--min-x", "10"], "choose --x"),
])
def test_fit_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    path = tmp_path / "results.parquet"
    planted_table().write_parquet(path)
    status, out, err = run(capsys, "fit", path, *argv)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("scalelib fit: error:")
    assert re.search(message, err), err


def test_fit_missing_file_and_bad_extension_exit_2(tmp_path, capsys):
    status, _, err = run(capsys, "fit", tmp_path / "absent.parquet")
    assert status == 2 and "no table at" in err and err.count("\n") == 1
    (tmp_path / "table.xlsx").write_text("x")
    status, _, err = run(capsys, "fit", tmp_path / "table.xlsx")
    assert status == 2 and ".csv" in err and ".parquet" in err


def test_fit_with_too_few_sizes_exits_2(tmp_path, capsys):
    path = tmp_path / "two.csv"
    pl.DataFrame({"params": [10, 10, 100], "best_val_mse": [1.0, 0.9, 0.5]}).write_csv(path)
    status, _, err = run(capsys, "fit", path)
    assert status == 2 and "3 distinct params" in err and err.count("\n") == 1


def test_fit_out_never_replaces_its_input_or_a_foreign_file(tmp_path, capsys):
    path = tmp_path / "results.parquet"
    planted_table().write_parquet(path)
    before = path.read_bytes()
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"mine": 1}')
    for out, message in ((path, "is an input"), (tmp_path, "is a folder"),
                         (foreign, "not a file this command writes"),
                         (Path("/proc/fits.json"), "cannot be written")):
        status, _, err = run(capsys, "fit", path, "--out", out)
        assert status == 2 and message in err and err.count("\n") == 1, err
    assert path.read_bytes() == before and foreign.read_text() == '{"mine": 1}'
    fits = tmp_path / "fits.json"
    assert run(capsys, "fit", path, "--out", fits)[0] == 0
    assert run(capsys, "fit", path, "--out", fits)[0] == 0  # a fits file may be replaced
