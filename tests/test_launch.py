"""Sweeps launched as submitit jobs (the local executor: one process per job)."""

from __future__ import annotations

import shutil

import pytest

from scalelib.cli import main
from scalelib.data.preprocess import load_or_simulate
from scalelib.errors import ScalelibError
from scalelib.launch import LaunchOptions
from scalelib.results import read_results

pytest.importorskip("submitit")


def test_every_job_writes_its_row_to_the_one_table_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = load_or_simulate("rich", "smoke", tmp_path / "datasets").manifest["path"]
    sweep = ["sweep", "--data", data, "--ladder", "smoke", "--sizes", "T0", "--seeds", "0,1",
             "--train-preset", "smoke", "--steps", "6", "--out", str(tmp_path / "sweep")]
    assert main([*sweep, "--launcher", "local", "--time", "10"]) == 0
    assert "trained 2 of the 2 planned runs" in capsys.readouterr().out

    table = read_results(tmp_path / "sweep" / "results.parquet")
    assert table["run_id"].n_unique() == table.height == 2 + 4  # two runs, four baselines
    transformers = table.filter(table["model_family"] == "transformer")
    assert sorted(transformers["seed"].to_list()) == [0, 1]
    assert (table["status"] == "ok").all()
    assert len(list((tmp_path / "sweep" / "jobs").glob("*_log.out"))) == 3

    assert main(sweep) == 0  # the same sweep in this process finds everything finished
    assert "trained 0 of the 2 planned runs" in capsys.readouterr().out
    assert read_results(tmp_path / "sweep" / "results.parquet").height == table.height


def test_launch_options_are_checked_before_anything_is_submitted(tmp_path):
    with pytest.raises(ScalelibError, match="--launcher slurm"):
        LaunchOptions("local", partition="gpu")
    with pytest.raises(ScalelibError, match="--time"):
        LaunchOptions("slurm", time_min=0)
    data = load_or_simulate("rich", "smoke", tmp_path / "datasets").manifest["path"]
    code = main(["sweep", "--data", data, "--ladder", "smoke", "--out", str(tmp_path / "s"),
                 "--launcher", "local", "--partition", "gpu"])
    assert code == 2 and not (tmp_path / "s" / "jobs").exists()
    if shutil.which("sbatch") is None:
        code = main(["sweep", "--data", data, "--ladder", "smoke", "--out", str(tmp_path / "s"),
                     "--launcher", "slurm"])
        assert code == 2 and not (tmp_path / "s" / "jobs").exists()
