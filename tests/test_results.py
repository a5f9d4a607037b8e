"""The results table under stress: damaged files, concurrent writers, rebuilds from run dirs."""

import json
import os
import random
import re
import subprocess
import sys

import polars as pl
import pytest

from scalelib.cli import main
from scalelib.config import SMOKE_LADDER, TRAIN_PRESETS, Regime
from scalelib.data.preprocess import simulate_dataset
from scalelib.errors import ScalelibError
from scalelib.results import (
    RESULTS_SCHEMA,
    append_results,
    read_results,
    rows_to_frame,
    write_results,
)
from scalelib.sweep import SweepCallbacks, plan_runs, rebuild_results, run_sweep

CONFIG = TRAIN_PRESETS["smoke"].with_(max_steps=2, eval_every=2)


def _rows(n: int, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        row = dict.fromkeys(RESULTS_SCHEMA)
        row.update(run_id=f"{i:016x}", regime="rich", size="T0", params=100 * i + 1, seed=i,
                   best_val_mse=0.5 / (i + 1), dataset_fingerprint="f" * 16, status="ok",
                   stopped_early=False)
        rows.append(row)
    return rows


def _same_rows(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Equal rows, NaN equal to NaN (JSON writes both as NaN)."""
    return (json.dumps(a.sort("run_id").rows(), default=str)
            == json.dumps(b.sort("run_id").rows(), default=str))


@pytest.fixture(scope="module")
def dataset():
    return simulate_dataset(Regime("rich", n_genes=16, n_cells=300), seed=2)


def test_single_byte_flips_never_read_back_changed_values(tmp_path):
    path = tmp_path / "results.parquet"
    write_results(rows_to_frame(_rows(30)), path)
    good, data = read_results(path).rows(), path.read_bytes()
    rng = random.Random(0)
    outcomes = {"refused": 0, "unchanged": 0}
    for _ in range(300):
        damaged = bytearray(data)
        damaged[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        try:
            rows = read_results(path).rows()
        except ScalelibError as error:  # Rust panics included: never a traceback
            assert "\n" not in str(error) and "restore it from a copy" in str(error)
            outcomes["refused"] += 1
            continue
        assert rows == good  # a flip the reader tolerates (padding, statistics) changes nothing
        outcomes["unchanged"] += 1
    assert outcomes["refused"] > 100


def test_an_edited_value_fails_its_row_checksum(tmp_path):
    path = tmp_path / "results.parquet"
    write_results(rows_to_frame(_rows(3)), path)
    raw = pl.read_parquet(path).with_columns(best_val_mse=pl.lit(0.001))
    raw.write_parquet(path)
    with pytest.raises(ScalelibError, match="3 row.s. do not match their checksum"):
        read_results(path)


def test_a_table_with_a_wrong_column_type_is_refused(tmp_path):
    path = tmp_path / "results.parquet"
    rows_to_frame(_rows(2)).with_columns(pl.col("params").cast(pl.Utf8)).write_parquet(path)
    with pytest.raises(ScalelibError, match="params of the wrong type"):
        read_results(path)


def test_two_processes_on_one_directory_split_the_plan_and_keep_every_row(dataset, tmp_path):
    """Overlapping plans (seeds 0-11 and 6-17) as two `scalelib sweep` processes at once: 18
    runs planned, each trained once, 18 rows; each process reports every row of its plan."""
    data = dataset.write(tmp_path / "data")
    out = tmp_path / "sweep"
    commands = [[sys.executable, "-m", "scalelib", "sweep", "--data", str(data), "--ladder",
                 "smoke", "--sizes", "T0", "--train-preset", "smoke", "--steps", "2",
                 "--seeds", seeds, "--out", str(out)]
                for seeds in (",".join(map(str, range(12))), ",".join(map(str, range(6, 18))))]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=environment) for command in commands]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    trained = [int(re.search(r"trained (\d+) of the 12 planned runs", out).group(1))
               for out, _ in outputs]
    everything = read_results(out / "results.parquet")
    table = everything.filter(pl.col("model_family") == "transformer")
    assert sum(trained) == 18  # no run trained twice
    assert table.height == table["run_id"].n_unique() == 18  # no row lost, none duplicated
    assert everything.height == everything["run_id"].n_unique() == 18 + 4  # and 4 baselines
    assert set(table["seed"].to_list()) == set(range(18))


def test_a_run_whose_row_missed_the_table_is_picked_up_not_retrained(dataset, tmp_path):
    runs = plan_runs(dataset, SMOKE_LADDER[:1], CONFIG, seeds=[0, 1])
    first = run_sweep(runs, tmp_path, progress=False)
    (tmp_path / "results.parquet").unlink()  # as if killed between row.json and the table
    started = []
    again = run_sweep(runs, tmp_path, progress=False, callbacks=SweepCallbacks(
        on_run_start=lambda i, n, run: started.append(run)))
    assert started == []
    assert _same_rows(again, first)


def test_rebuild_table_moves_a_damaged_table_aside_and_restores_every_row(dataset, tmp_path,
                                                                          capsys):
    runs = plan_runs(dataset, SMOKE_LADDER[:1], CONFIG, seeds=[0, 1, 2])
    first = run_sweep(runs, tmp_path, progress=False)
    table_path = tmp_path / "results.parquet"
    table_path.write_bytes(table_path.read_bytes()[:-20])
    with pytest.raises(ScalelibError, match="--rebuild-table"):
        read_results(table_path)
    assert main(["sweep", "--rebuild-table", "--out", str(tmp_path)]) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert _same_rows(read_results(table_path), first)
    assert len(list(tmp_path.glob("results.parquet.damaged-*"))) == 1
    table, moved = rebuild_results(tmp_path)  # a readable table is merged, not moved
    assert moved is None and table.height == 3


def test_rebuild_table_without_runs_says_so(tmp_path, capsys):
    assert main(["sweep", "--rebuild-table", "--out", str(tmp_path)]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_append_keeps_rows_of_other_runs(tmp_path):
    path = tmp_path / "results.parquet"
    append_results(_rows(2), path)
    append_results(_rows(2, start=1), path)
    assert sorted(read_results(path)["seed"].to_list()) == [0, 1, 2]
    assert json.loads(json.dumps(read_results(path).rows(), default=str))
