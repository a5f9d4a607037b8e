"""Resumable runs: a run killed mid-way (by an exception or a real SIGKILL) goes on from its
last evaluation and ends exactly where an uninterrupted run ends."""

import json
import os
import subprocess
import sys

import polars as pl
import pytest
import torch

from scalelib.cli import main
from scalelib.config import ModelSize, Regime, TrainConfig
from scalelib.data.preprocess import simulate_dataset
from scalelib.data.store import load_dataset
from scalelib.results import read_results
from scalelib.resume import RESUME_NAME, ResumeWarning
from scalelib.sweep import SweepCallbacks, plan_runs, run_sweep
from scalelib.train import train

# 32 cells x 64 genes x width 16 reaches cpu_dropout's own masks (32,768 elements), and
# attention dropout takes its tiled path: every random stream a run draws from is in play.
SIZE = ModelSize("R", 16, 2, 2, 2)
CONFIG = TrainConfig(max_steps=30, batch_size=32, lr=3e-3, eval_every=5, dropout=0.1,
                     attention_dropout=0.1, dtype="fp32", device="cpu")


class Killed(Exception):
    """Stands for the process dying after a step."""


@pytest.fixture(scope="module")
def dataset():
    return simulate_dataset(Regime("rich", n_genes=64, n_cells=400), seed=3)


def _kill_at(step: int):
    def on_step(info):
        if info.step == step:
            raise Killed

    return on_step


def _first_step_taken(steps: list):
    return lambda info: steps.append(info.step)


def _same_outcome(a, b) -> None:
    """Every metric and curve value equal, bit for bit, except wall times."""
    assert {**a.metrics(), "wall_time_s": 0, "checkpoint": 0} == {
        **b.metrics(), "wall_time_s": 0, "checkpoint": 0}
    assert a.curve.drop("elapsed_s").equals(b.curve.drop("elapsed_s"), null_equal=True)
    weights_a = torch.load(a.checkpoint, weights_only=True)["state_dict"]
    weights_b = torch.load(b.checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_a_run_killed_mid_way_resumes_at_its_last_evaluation_and_ends_identically(dataset,
                                                                                   tmp_path):
    whole = train(dataset, SIZE, CONFIG, seed=4, out_dir=tmp_path / "whole", progress=False)
    with pytest.raises(Killed):
        train(dataset, SIZE, CONFIG, seed=4, out_dir=tmp_path / "killed", progress=False,
              on_step=_kill_at(18))
    assert (tmp_path / "killed" / RESUME_NAME).is_file()
    steps = []
    resumed = train(dataset, SIZE, CONFIG, seed=4, out_dir=tmp_path / "killed", progress=False,
                    on_step=_first_step_taken(steps))
    assert steps[0] == 16 and steps[-1] == 30  # saved at step 15, the last evaluation
    _same_outcome(resumed, whole)
    assert not (tmp_path / "killed" / RESUME_NAME).exists()  # removed once finished
    assert not list((tmp_path / "whole").glob(f"*{RESUME_NAME}*"))


def test_converge_mode_and_patience_resume_their_rule_state(dataset, one_factor_dataset,
                                                           tmp_path):
    """Kills inside the last cool-down and just after a cool-down was put aside (converge
    mode), and one mid-patience (fixed mode)."""
    converge = CONFIG.with_(max_steps=1000, eval_every=5, budget_mode="converge",
                            converge_tol=0.05, lr=1e-2)
    whole = train(one_factor_dataset, SIZE, converge, seed=1, out_dir=tmp_path / "a",
                  progress=False)
    assert whole.converged and whole.steps < 1000
    cooldowns = whole.curve.filter(pl.col("cooldown") > 0).group_by("cooldown").agg(
        first=pl.col("step").min(), last=pl.col("step").max()).sort("cooldown")
    assert cooldowns.height >= 2
    put_aside = cooldowns["last"][0]  # saved there, with the stable run's weights
    last_branch = cooldowns["first"][-1] - 1  # saved there, before the cool-down's first step
    for kill_at, resumes_at in ((put_aside + 1, put_aside + 1),
                                (whole.steps - 1, last_branch + 1)):
        out = tmp_path / f"killed-{kill_at}"
        with pytest.raises(Killed):
            train(one_factor_dataset, SIZE, converge, seed=1, out_dir=out, progress=False,
                  on_step=_kill_at(kill_at))
        steps = []
        resumed = train(one_factor_dataset, SIZE, converge, seed=1, out_dir=out,
                        progress=False, on_step=_first_step_taken(steps))
        assert steps[0] == resumes_at
        _same_outcome(resumed, whole)
    patient = CONFIG.with_(max_steps=300, eval_every=5, patience=2, lr=3e-2)
    whole = train(dataset, SIZE, patient, seed=2, out_dir=tmp_path / "c", progress=False)
    assert whole.stopped_early
    with pytest.raises(Killed):
        train(dataset, SIZE, patient, seed=2, out_dir=tmp_path / "d", progress=False,
              on_step=_kill_at(whole.steps - 3))
    _same_outcome(train(dataset, SIZE, patient, seed=2, out_dir=tmp_path / "d",
                        progress=False), whole)


def test_a_damaged_resume_file_is_reported_and_the_run_starts_from_step_1(dataset, tmp_path):
    whole = train(dataset, SIZE, CONFIG, seed=0, out_dir=tmp_path / "whole", progress=False)
    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        train(dataset, SIZE, CONFIG, seed=0, out_dir=run_dir, progress=False,
              on_step=_kill_at(12))
    saved = run_dir / RESUME_NAME
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    steps = []
    with pytest.warns(ResumeWarning, match="is damaged .*training this run from step 1"):
        again = train(dataset, SIZE, CONFIG, seed=0, out_dir=run_dir, progress=False,
                      on_step=_first_step_taken(steps))
    assert steps[0] == 1
    _same_outcome(again, whole)


def test_a_resume_file_of_another_run_is_not_used(dataset, tmp_path):
    with pytest.raises(Killed):
        train(dataset, SIZE, CONFIG, seed=0, out_dir=tmp_path, progress=False,
              on_step=_kill_at(12))
    steps = []
    with pytest.warns(ResumeWarning, match="written for another run"):
        train(dataset, SIZE, CONFIG, seed=1, out_dir=tmp_path, progress=False,
              on_step=_first_step_taken(steps))
    assert steps[0] == 1 and not (tmp_path / RESUME_NAME).exists()


_KILLED_SWEEP = """
import os, signal, sys
from scalelib.config import ModelSize, Regime, TrainConfig
from scalelib.data.store import load_dataset
from scalelib.sweep import SweepCallbacks, plan_runs, run_sweep

data, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = TrainConfig(**{CONFIG})
runs = plan_runs(load_dataset(data), [ModelSize(*{SIZE})], config, seeds=[0, 1])

def die(run, info):
    if run.seed == 1 and info.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

run_sweep(runs, out, callbacks=SweepCallbacks(on_step=die), progress=False, baselines=False)
"""


def test_a_sweep_killed_by_sigkill_resumes_its_run_and_writes_the_same_row(dataset, tmp_path):
    """A real SIGKILL mid-run (the worker kills itself at step 23 of seed 1's run), then the
    same sweep again: seed 0 is not retrained, seed 1 resumes at step 21, and the rows equal
    those of an uninterrupted sweep in every column but times and code version."""
    data = dataset.write(tmp_path / "data")
    script = _KILLED_SWEEP.replace("{CONFIG}", repr(CONFIG.to_dict())).replace(
        "{SIZE}", repr(tuple(SIZE.to_dict().values())))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = subprocess.run([sys.executable, "-c", script, str(data), str(tmp_path / "sweep"),
                             "23"], env=environment, capture_output=True, text=True, timeout=300,
                            check=False)
    assert worker.returncode == -9, worker.stderr
    table = read_results(tmp_path / "sweep" / "results.parquet")
    assert table["seed"].to_list() == [0]
    run_dirs = {json.loads(p.read_text())["seed"]: p.parent
                for p in (tmp_path / "sweep" / "runs").glob("*/row.json")}
    assert list(run_dirs) == [0]
    assert len(list((tmp_path / "sweep" / "runs").glob(f"*/{RESUME_NAME}"))) == 1

    runs = plan_runs(load_dataset(data), [SIZE], CONFIG, seeds=[0, 1])
    steps, started = [], []
    callbacks = SweepCallbacks(on_run_start=lambda i, n, run: started.append(run.seed),
                               on_step=lambda run, info: steps.append(info.step))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed worker computed
    try:
        resumed = run_sweep(runs, tmp_path / "sweep", callbacks=callbacks, progress=False,
                            baselines=False)
        whole = run_sweep(runs, tmp_path / "whole", progress=False, baselines=False)
    finally:
        torch.set_num_threads(threads)
    assert started == [1] and steps[0] == 21 and steps[-1] == CONFIG.max_steps
    varying = ["finished_at", "wall_time_s", "checkpoint", "code_version"]
    assert resumed.sort("seed").drop(varying).equals(whole.sort("seed").drop(varying),
                                                     null_equal=True)
    assert not list((tmp_path / "sweep" / "runs").glob(f"*/{RESUME_NAME}"))


def test_a_finished_run_whose_row_missed_the_table_is_appended_not_retrained(dataset, tmp_path,
                                                                             monkeypatch, capsys):
    """Killed between a run's row.json and its append to the table: the next `scalelib sweep`
    appends the row from row.json and trains nothing."""
    from scalelib import sweep

    data = dataset.write(tmp_path / "data")
    command = ["sweep", "--data", str(data), "--ladder", "smoke", "--sizes", "T0",
               "--train-preset", "smoke", "--steps", "4", "--seeds", "0,1", "--out",
               str(tmp_path / "sweep"), "--no-baselines"]
    appended = sweep.append_results

    def die_on_seed_1(rows, path):
        if rows[0]["seed"] == 1:
            raise Killed
        appended(rows, path)

    monkeypatch.setattr(sweep, "append_results", die_on_seed_1)
    with pytest.raises(Killed):
        main(command)
    assert read_results(tmp_path / "sweep" / "results.parquet")["seed"].to_list() == [0]
    monkeypatch.setattr(sweep, "append_results", appended)
    capsys.readouterr()
    assert main(command) == 0
    assert "trained 0 of the 2 planned runs here" in capsys.readouterr().out
    table = read_results(tmp_path / "sweep" / "results.parquet")
    assert sorted(table["seed"].to_list()) == [0, 1]
    assert table.filter(pl.col("seed") == 1)["status"].to_list() == ["ok"]
