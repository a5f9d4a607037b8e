"""Data-parallel training under torchrun (gloo, two CPU processes) against one process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from scalelib.cli import main
from scalelib.data.preprocess import load_or_simulate
from scalelib.distributed import ProcessGroup, current
from scalelib.results import read_results

torch_distributed = pytest.importorskip("torch.distributed")


def test_shards_cover_a_batch_once_in_order():
    for n_rows in (0, 1, 7, 32):
        for world in (1, 2, 3):
            shards = [ProcessGroup(rank, world).shard(n_rows) for rank in range(world)]
            rows = [row for shard in shards for row in range(n_rows)[shard]]
            assert rows == list(range(n_rows))
            assert max(len(range(n_rows)[s]) for s in shards) - min(
                len(range(n_rows)[s]) for s in shards) <= 1


def test_one_process_is_its_own_group():
    group = current()
    assert (group.rank, group.world_size, group.is_main) == (0, 1, True)
    assert group.sum(1.5, 2) == (1.5, 2)
    assert group.from_main(lambda: {"a"}) == {"a"}


@pytest.mark.skipif(not torch_distributed.is_available(), reason="torch built without distributed")
def test_two_processes_at_half_the_batch_follow_one_process_at_the_whole_batch(tmp_path):
    data = load_or_simulate("rich", "smoke", tmp_path / "datasets").manifest["path"]
    sweep = ["sweep", "--data", data, "--ladder", "smoke", "--sizes", "T1", "--train-preset",
             "smoke", "--steps", "16", "--batch", "32", "--eval-every", "4", "--dropout", "0",
             "--attention-dropout", "0", "--no-baselines", "--device", "cpu", "--dtype", "fp32"]
    assert main([*sweep, "--out", str(tmp_path / "one")]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "-m", "scalelib"]
    done = subprocess.run([*torchrun, *sweep, "--out", str(tmp_path / "two")],
                          check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained 1 of the 1 planned runs") == 1  # rank 0 alone prints

    one, two = (read_results(tmp_path / name / "results.parquet") for name in ("one", "two"))
    assert two.height == 1 and two["world_size"].to_list() == [2]
    assert one["world_size"].to_list() == [1]
    assert one["run_id"].to_list() == two["run_id"].to_list()  # how, not what: same run
    for column in ("steps", "cells_seen", "masked_tokens_seen", "best_step"):
        assert one[column].to_list() == two[column].to_list()
    run_dirs = list((tmp_path / "two" / "runs").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "best.pt").exists()

    curves = [pl.read_parquet(tmp_path / name / "runs" / one["run_id"][0] / "curve.parquet")
              for name in ("one", "two")]
    for column in ("train_loss", "val_mse"):
        single, parallel = (curve[column].drop_nulls().to_numpy() for curve in curves)
        assert len(single) == len(parallel) > 0
        np.testing.assert_allclose(parallel, single, rtol=1e-5)
    np.testing.assert_allclose(two["test_mse"].to_numpy(), one["test_mse"].to_numpy(), rtol=1e-5)
