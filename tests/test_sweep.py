"""Sweeps: planning, resumable results, failure rows, reproducible rows; the core CLI."""

import json

import polars as pl
import pytest

from scalelib.cli import main
from scalelib.config import SMOKE_LADDER, TRAIN_PRESETS, Regime
from scalelib.data.preprocess import simulate_dataset
from scalelib.demo import plan_demo
from scalelib.errors import ScalelibError
from scalelib.results import RESULT_COLUMNS, read_results
from scalelib.scaling import transformer_rows
from scalelib.sweep import SweepCallbacks, plan_runs, run_sweep

# Columns that legitimately differ between two runs of the same seed.
NOT_REPRODUCIBLE = {"wall_time_s", "finished_at", "checkpoint", "dataset"}
CONFIG = TRAIN_PRESETS["smoke"].with_(max_steps=12, eval_every=4)


@pytest.fixture(scope="module")
def dataset():
    return simulate_dataset(Regime("rich", n_genes=24, n_cells=600), seed=1)


def test_plan_covers_sizes_seeds_and_data_sizes(dataset):
    runs = plan_runs(dataset, SMOKE_LADDER[:2], CONFIG, seeds=[0, 1], train_sizes=[100, 200])
    assert len(runs) == 2 * 2 * 2
    assert len({run.run_id for run in runs}) == 8
    with pytest.raises(ScalelibError, match="exceed"):
        plan_runs(dataset, SMOKE_LADDER, CONFIG, train_sizes=[10**6])


def test_sweep_writes_rows_and_skips_finished_runs(dataset, tmp_path):
    runs = plan_runs(dataset, SMOKE_LADDER[:2], CONFIG, seeds=[0], train_sizes=[100, 300])
    started = []
    table = run_sweep(runs, tmp_path, progress=False,
                      callbacks=SweepCallbacks(on_run_start=lambda i, n, run: started.append(i)))
    assert table.height == 4 and (table["status"] == "ok").all()
    assert table.columns == list(RESULT_COLUMNS)
    assert sorted(table["n_train_cells"].unique().to_list()) == [100, 300]
    assert (table["cells_seen"] == 12 * CONFIG.batch_size).all()
    assert (table["tokens_seen"] == table["cells_seen"] * 24).all()
    for run_id in table["run_id"]:
        assert (tmp_path / "runs" / run_id / "best.pt").exists()
        assert json.loads((tmp_path / "runs" / run_id / "row.json").read_text())["run_id"] == run_id
    again = run_sweep(runs, tmp_path, progress=False,
                      callbacks=SweepCallbacks(on_run_start=lambda i, n, run: started.append(i)))
    assert started == [0, 1, 2, 3]  # the second sweep trained nothing
    assert again.sort("run_id").equals(table.sort("run_id"))


def test_same_seed_gives_the_same_results_row(dataset, tmp_path):
    runs = plan_runs(dataset, SMOKE_LADDER[1:2], CONFIG, seeds=[3])
    first = run_sweep(runs, tmp_path / "a", progress=False)
    second = run_sweep(runs, tmp_path / "b", progress=False)
    columns = [c for c in RESULT_COLUMNS if c not in NOT_REPRODUCIBLE]
    assert first.select(columns).equals(second.select(columns))


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(dataset, tmp_path, monkeypatch):
    import scalelib.sweep as sweep_module

    real_train = sweep_module.train

    def flaky_train(data, size, *args, **kwargs):
        if size.name == "T0":
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_train(data, size, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "train", flaky_train)
    table = run_sweep(plan_runs(dataset, SMOKE_LADDER[:2], CONFIG), tmp_path, progress=False)
    status = dict(zip(table["size"], table["status"], strict=True))
    assert status["T1"] == "ok" and status["T0"].startswith("failed: RuntimeError")
    assert table.filter(pl.col("size") == "T0")["params"].item() > 0
    monkeypatch.setattr(sweep_module, "train", real_train)
    retried = run_sweep(plan_runs(dataset, SMOKE_LADDER[:2], CONFIG), tmp_path, progress=False)
    assert (retried["status"] == "ok").all()  # failed runs are retried, not skipped


def test_cli_ladder_json_lists_the_paper_ladder(capsys):
    assert main(["ladder", "--preset", "paper", "--genes", "512", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == ["XXS", "TINY", "XS", "S", "M", "L", "XL"]
    assert set(rows[0]) == {"name", "d_model", "n_layers", "n_heads", "ff_mult", "params"}
    assert rows[0]["params"] == 533 and rows[5]["params"] == 100_510_801


def test_cli_tiny_sweep_then_fit(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--simulate", "rich", "--regime-preset", "smoke", "--ladder", "smoke",
            "--train-preset", "smoke", "--steps", "10", "--out", str(out)]
    assert main(args) == 0
    table = read_results(out / "results.parquet")
    assert (table["status"] == "ok").all()
    assert table["model_family"].value_counts().sort("model_family").rows() == [
        ("knn", 1), ("mean", 1), ("pca", 1), ("ridge", 1), ("transformer", len(SMOKE_LADDER))]
    assert "baselines (fitted on the training cells" in capsys.readouterr().out
    assert main(["fit", str(out / "results.parquet"), "--x", "params", "--y", "best_val_mse",
                 "--method", "grid", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert {"alpha", "a", "c", "r2", "bits"} <= set(fit)


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    assert main(["sweep", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "scalelib data build" in error
    assert main(["ladder", "--preset", "huge"]) == 2
    assert "unknown ladder" in capsys.readouterr().err


def test_demo_smoke_preset_writes_every_artefact(tmp_path, capsys):
    assert main(["demo", "--preset", "smoke", "--out", str(tmp_path), "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    for name in ("results.parquet", "fits.json", "scaling.png", "scaling.svg"):
        assert (tmp_path / name).stat().st_size > 0
        assert name in printed
    table = read_results(tmp_path / "results.parquet")
    assert table["regime"].unique().sort().to_list() == ["limited", "rich"]
    planned = plan_demo(tmp_path, preset="smoke")  # no training option: the preset's runs
    assert set(transformer_rows(table)["run_id"]) == {run.on_this_machine().run_id for run in planned}


def test_demo_converge_budget_caps_each_regime_and_reports_the_last_doubling(tmp_path, capsys):
    args = ["demo", "--preset", "smoke", "--out", str(tmp_path), "--bootstrap", "0",
            "--budget", "converge", "--steps", "80"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "val_improvement" in printed and "converged" in printed
    runs = transformer_rows(read_results(tmp_path / "results.parquet"))
    assert runs.height == 2 * len(SMOKE_LADDER) and (runs["budget_mode"] == "converge").all()
    caps = dict(runs.group_by("regime").agg(pl.col("budget_steps").max()).iter_rows())
    assert caps == {"rich": 80, "limited": 40}  # the limited regime's half (REGIME_BUDGET_FRACTION)
    assert (runs["steps"] <= runs["budget_steps"]).all()
    trained = runs.filter(pl.col("size") != "T0")  # some cool-down finished in each
    assert trained["val_improvement"].is_not_nan().all()


def test_plan_demo_selects_sizes_and_regimes(tmp_path):
    config = TRAIN_PRESETS["smoke"].with_(budget_mode="converge", max_steps=50, batch_size=16)
    runs = plan_demo(tmp_path, preset="smoke", config=config, sizes=["T2"], regimes=["limited"])
    assert [(run.size.name, run.dataset.regime) for run in runs] == [("T2", "limited")]
    assert runs[0].config == config.with_(max_steps=25)
    with pytest.raises(ScalelibError, match="unknown demo regime"):
        plan_demo(tmp_path, preset="smoke", regimes=["huge"])
    with pytest.raises(ScalelibError, match="unknown size"):
        plan_demo(tmp_path, preset="smoke", sizes=["D6"])


def test_budget_check_reruns_the_largest_sizes_at_twice_the_budget(dataset, tmp_path):
    from scalelib.budget_check import CHECK_SUMMARY, CHECK_TABLE, check_budget

    runs = plan_runs(dataset, SMOKE_LADDER, CONFIG, seeds=[0])
    run_sweep(runs, tmp_path, progress=False)
    checks = check_budget(runs, tmp_path, n_sizes=2, n_bootstrap=20, progress=False)
    assert [c.size for c in checks] == [s.name for s in SMOKE_LADDER[1:]]
    for check in checks:
        assert check.cells_seen_doubled == 2 * check.cells_seen
        assert check.moved == (abs(check.val_mse_doubled - check.val_mse) > check.uncertainty)
    families = read_results(tmp_path / "results.parquet")["model_family"]
    assert (families == "transformer").sum() == 3  # fits never see the reruns
    assert read_results(tmp_path / CHECK_TABLE).height == 2
    summary = json.loads((tmp_path / CHECK_SUMMARY).read_text())
    assert summary["budget_matters"] == any(c.moved for c in checks)


def test_converge_budget_rows_record_convergence(dataset, tmp_path):
    """Rows record convergence; the live curves a notebook draws mark the cool-downs as the
    saved curve does."""
    from scalelib.explore.sweeps import SweepMonitor

    config = CONFIG.with_(budget_mode="converge", max_steps=60, eval_every=4)
    live = []
    monitor = SweepMonitor(on_curves=live.append)
    table = run_sweep(plan_runs(dataset, SMOKE_LADDER[:1], config), tmp_path, progress=False,
                      callbacks=monitor.callbacks())
    row = table.row(0, named=True)
    assert row["budget_mode"] == "converge" and row["converged"] in (True, False)
    assert row["steps"] <= 60 and row["cells_seen"] == row["steps"] * config.batch_size
    saved = pl.read_parquet(tmp_path / "runs" / row["run_id"] / "curve.parquet")
    assert saved["cooldown"].max() >= 1  # at least the cool-down to the cap
    assert live[-1]["cooldown"].to_list() == saved["cooldown"].to_list()


def test_baselines_are_stored_once_per_dataset_and_training_size(dataset, tmp_path, monkeypatch):
    from scalelib import sweep

    calls = []
    real_fit = sweep.fit_baselines
    monkeypatch.setattr(sweep, "fit_baselines",
                        lambda *a, **k: calls.append(k["n_train"]) or real_fit(*a, **k))
    runs = plan_runs(dataset, SMOKE_LADDER[:2], CONFIG, seeds=[0, 1], train_sizes=[100, 300])
    trained = run_sweep(runs, tmp_path, progress=False)
    table = read_results(tmp_path / "results.parquet")
    baselines = table.filter(pl.col("model_family") != "transformer")
    assert sorted(calls) == [100, 300]  # one fit of the four families per training size
    assert baselines.group_by("n_train_cells").len().sort("n_train_cells").rows() == [
        (100, 4), (300, 4)]
    assert baselines.select("size", "params", "d_model", "steps", "lr").null_count().row(0) == (
        8, 8, 8, 8, 8)
    assert (trained["model_family"] == "transformer").all()
    for n_train, part in trained.group_by("n_train_cells"):
        mean = baselines.filter((pl.col("n_train_cells") == n_train[0])
                                & (pl.col("model_family") == "mean"))
        assert (part["baseline_val_mse"] == mean["best_val_mse"][0]).all()  # the same masks
    run_sweep(runs, tmp_path, progress=False)
    assert sorted(calls) == [100, 300]  # resumed: nothing refitted
    assert read_results(tmp_path / "results.parquet").height == table.height
    bigger = plan_runs(dataset, SMOKE_LADDER[:1], CONFIG.with_(mask_rate=0.3), seeds=[0])
    run_sweep(bigger, tmp_path, progress=False, baselines=True)
    assert sorted(calls) == [100, 300, dataset.n_cells("train")]


def test_fits_and_tables_ignore_baseline_rows(dataset, tmp_path):
    from scalelib.explore.bundle import Bundle
    from scalelib.scaling import (
        baseline_rows,
        data_size_rows,
        fit_groups,
        fit_joint_table,
        matching_baselines,
        scaling_rows,
    )

    runs = plan_runs(dataset, SMOKE_LADDER, CONFIG, train_sizes=[100, 300, 500])
    run_sweep(runs, tmp_path, progress=False)
    table = read_results(tmp_path / "results.parquet")
    models = table.filter(pl.col("model_family") == "transformer")
    assert table.height == models.height + 12
    assert scaling_rows(table).equals(scaling_rows(models))
    assert data_size_rows(table).equals(data_size_rows(models))
    with_baselines = fit_groups(table, by=("n_train_cells",), methods=("grid",))
    alone = fit_groups(models, by=("n_train_cells",), methods=("grid",),
                       baselines=baseline_rows(table))
    assert [(f.c, f.alpha, f.n_runs) for f in with_baselines] == [
        (f.c, f.alpha, f.n_runs) for f in alone]
    joint_all, joint_models = fit_joint_table(table), fit_joint_table(models)
    fitted = ("E", "A", "B", "alpha", "beta", "n_runs")  # the baselines only judge the fit
    assert [getattr(joint_all[0], k) for k in fitted] == [
        getattr(joint_models[0], k) for k in fitted]
    largest = matching_baselines(scaling_rows(table), baseline_rows(table))
    assert sorted(largest["model_family"]) == ["knn", "mean", "pca", "ridge"]
    assert set(largest["n_train_cells"]) == {500}
    bundle = Bundle(rows=table.to_dicts())
    assert len(bundle.ok_rows) == models.height and len(bundle.baseline_rows) == 12


def test_tables_written_before_baselines_read_as_transformers(dataset, tmp_path):
    runs = plan_runs(dataset, SMOKE_LADDER[:1], CONFIG)
    run_sweep(runs, tmp_path, progress=False, baselines=False)
    path = tmp_path / "results.parquet"
    old_columns = [c for c in pl.read_parquet(path).columns
                   if c not in ("model_family", "setting", "row_sha256")]  # as written before
    pl.read_parquet(path).select(old_columns).write_parquet(path)
    old = read_results(path)
    assert old["model_family"].to_list() == ["transformer"] and old["setting"].is_null().all()
