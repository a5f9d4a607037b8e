"""Sweeps split between local processes (scalelib.workers, --workers)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from scalelib.cli import main
from scalelib.config import TRAIN_PRESETS, get_ladder
from scalelib.data.preprocess import load_or_simulate
from scalelib.data.store import ExpressionDataset
from scalelib.errors import ScalelibError
from scalelib.launch import RunRecipe
from scalelib.results import read_results
from scalelib.scaling import transformer_rows
from scalelib.sweep import plan_runs, run_sweep
from scalelib.workers import estimated_cost, run_with_workers, work

CONFIG = TRAIN_PRESETS["smoke"].with_(max_steps=12, eval_every=4, device="cpu", dtype="fp32")


@pytest.fixture
def smoke_runs(tmp_path):
    dataset = load_or_simulate("rich", "smoke", tmp_path / "datasets")
    return plan_runs(dataset, get_ladder("smoke"), CONFIG, seeds=(0, 1))


def test_two_workers_train_each_run_once_with_one_process_results(smoke_runs, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two workers on two cores
    try:
        alone = run_sweep(smoke_runs, tmp_path / "one", progress=False, baselines=False)
    finally:
        torch.set_num_threads(threads)
    shared = run_with_workers(smoke_runs, tmp_path / "two", 2, progress=False, baselines=False)
    table = transformer_rows(read_results(tmp_path / "two" / "results.parquet"))
    assert table.height == len(smoke_runs) == table["run_id"].n_unique()
    assert (table["status"] == "ok").all()
    assert torch.get_num_threads() == threads  # restored
    alone, shared = alone.sort("run_id"), shared.sort("run_id")
    assert alone["run_id"].to_list() == shared["run_id"].to_list()
    for column in ("best_val_mse", "test_mse"):
        np.testing.assert_allclose(shared[column], alone[column], rtol=1e-5)


def test_a_worker_plans_the_same_runs_from_dataset_directories(smoke_runs, tmp_path):
    recipes = [RunRecipe.of(run) for run in smoke_runs[:2]]
    assert recipes[0].subsample == smoke_runs[0].dataset.subsample
    work(recipes, str(tmp_path / "w"), 1, True)
    rows = read_results(tmp_path / "w" / "results.parquet")
    assert sorted(rows["run_id"]) == sorted(run.run_id for run in smoke_runs[:2])


def test_runs_are_offered_longest_first(smoke_runs):
    costs = [estimated_cost(run) for run in smoke_runs]
    assert costs[-1] > costs[0]  # planned smallest first
    assert estimated_cost(smoke_runs[0]) == estimated_cost(smoke_runs[1])  # seeds cost alike


def test_bad_worker_settings_are_refused_before_training(smoke_runs, tmp_path):
    with pytest.raises(ScalelibError, match="at least 1"):
        run_with_workers(smoke_runs, tmp_path / "x", 0)
    with pytest.raises(ScalelibError, match="--workers 1"):
        run_with_workers(smoke_runs, tmp_path / "x", 2, rerun=True)
    on_disk = smoke_runs[0].dataset
    in_memory = ExpressionDataset(X=on_disk.X, obs=on_disk.obs, var=on_disk.var, manifest={})
    with pytest.raises(ScalelibError, match="dataset directory"):
        RunRecipe.of(dataclasses.replace(smoke_runs[0], dataset=in_memory))
    assert not (tmp_path / "x" / "results.parquet").exists()
    data = smoke_runs[0].dataset.manifest["path"]
    code = main(["sweep", "--data", data, "--ladder", "smoke", "--out", str(tmp_path / "s"),
                 "--workers", "2", "--launcher", "local"])
    assert code == 2
