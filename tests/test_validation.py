"""Bad input of every kind: refused before any work, in one line naming the fix (exit 2)."""

import json
import math
import re
import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalelib.cli import main
from scalelib.cli.core import name_list, seed_list
from scalelib.config import TRAIN_PRESETS, Regime, TrainConfig
from scalelib.data.preprocess import simulate_dataset
from scalelib.data.store import load_dataset
from scalelib.errors import ScalelibError
from scalelib.explore import purefit
from scalelib.scaling import fit_groups, fit_joint_table, fit_power_law
from scalelib.scaling.validation import VALUE_RANGE

SWEEP = ["sweep", "--simulate", "rich", "--regime-preset", "smoke", "--ladder", "smoke",
         "--train-preset", "smoke", "--steps", "2"]


# ------------------------------------------------------------------------------ training options
@given(lr=st.floats(allow_nan=True, allow_infinity=True),
       dropout=st.floats(allow_nan=True, allow_infinity=True),
       patience=st.one_of(st.none(), st.integers(-5, 5)))
def test_train_config_accepts_exactly_the_valid_settings(lr, dropout, patience):
    valid = (math.isfinite(lr) and lr > 0 and 0 <= dropout < 1
             and (patience is None or patience >= 1))
    try:
        TrainConfig(lr=lr, dropout=dropout, patience=patience)
    except ScalelibError as error:
        assert not valid and "\n" not in str(error)
    else:
        assert valid


@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=5))
def test_seed_lists_take_only_seeds_numpy_accepts(seeds):
    import argparse

    text = ",".join(map(str, seeds))
    if all(0 <= seed < 2**32 for seed in seeds):
        assert seed_list(text) == seeds
        for seed in seeds:
            np.random.default_rng(seed)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            seed_list(text)


@given(st.text(alphabet=", ", max_size=6))
def test_a_list_of_nothing_is_refused(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        name_list(text)
    with pytest.raises(argparse.ArgumentTypeError):
        seed_list(text)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "-1"], "learning rate"), (["--lr", "nan"], "learning rate"),
    (["--lr", "0"], "learning rate"), (["--dropout", "1.5"], "dropout"),
    (["--patience", "0"], "patience"), (["--mask-rate", "nan"], "mask_rate"),
    (["--batch", "0"], "batch_size"),
])
def test_sweep_refuses_bad_training_options_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    assert main([*SWEEP, "--out", str(out), *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not out.exists()  # nothing simulated, nothing trained


@pytest.mark.parametrize("argv", [["--seeds", "-1"], ["--sizes", ","], ["--seeds", ","],
                                  ["--train-sizes", "0"]])
def test_sweep_refuses_bad_lists(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main([*SWEEP, "--out", str(tmp_path / "sweep"), *argv])
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_sweep_refuses_an_out_that_is_a_file_or_unwritable(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("mine")
    for out in (afile, afile / "below", "/proc/scalelib-sweep"):
        assert main([*SWEEP, "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "choose a writable folder" in error
    assert afile.read_text() == "mine"
    assert main(["demo", "--preset", "smoke", "--out", str(afile)]) == 2


# ------------------------------------------------------------------------------ datasets
@pytest.fixture()
def dataset_dir(tmp_path):
    return simulate_dataset(Regime("rich", n_genes=16, n_cells=200), seed=0).write(
        tmp_path / "data")


def test_a_dataset_changed_after_its_build_is_refused(dataset_dir, capsys):
    X = np.load(dataset_dir / "X.npy")
    load_dataset(dataset_dir)
    np.save(dataset_dir / "X.npy", np.zeros_like(X))  # same size, other values
    with pytest.raises(ScalelibError, match="changed since the dataset was built"):
        load_dataset(dataset_dir)
    assert main(["sweep", "--data", str(dataset_dir), "--out", str(dataset_dir.parent / "s"),
                 "--ladder", "smoke", "--train-preset", "smoke", "--steps", "2"]) == 2
    assert "changed since" in capsys.readouterr().err


def test_one_nan_in_the_matrix_is_refused(dataset_dir):
    X = np.load(dataset_dir / "X.npy")
    X[3, 4] = np.nan
    np.save(dataset_dir / "X.npy", X)
    with pytest.raises(ScalelibError, match="changed since"):
        load_dataset(dataset_dir)
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    del manifest["files"]  # a dataset built before hashes were recorded: values are checked
    (dataset_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ScalelibError, match="NaN or infinite"):
        load_dataset(dataset_dir)
    data = simulate_dataset(Regime("rich", n_genes=16, n_cells=200), seed=0)
    data.X[0, 0] = np.inf
    with pytest.raises(ScalelibError, match="NaN or infinite"):
        data.write(dataset_dir.parent / "other")


@pytest.mark.parametrize("damage", ["truncate X", "break manifest", "truncate obs"])
def test_damaged_dataset_files_give_one_line(dataset_dir, damage):
    if damage == "truncate X":
        path = dataset_dir / "X.npy"
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "break manifest":
        (dataset_dir / "manifest.json").write_text('{"fingerprint": ')
    else:
        path = dataset_dir / "obs.parquet"
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ScalelibError) as error:
        load_dataset(dataset_dir)
    assert "\n" not in str(error.value) and "scalelib data build" in str(error.value)


def test_zero_gene_input_says_there_are_no_genes():
    import anndata as ad
    from scipy import sparse

    from scalelib.data.preprocess import build_dataset

    counts = ad.AnnData(X=sparse.csr_matrix((50, 10), dtype=np.float32))
    with pytest.raises(ScalelibError, match="none of the 10 genes has counts"):
        build_dataset(counts, n_genes=5)


# ------------------------------------------------------------------------------ fits
sizes = st.floats(1.0, 1e12, allow_nan=False)
losses = st.floats(1e-6, 1e6, allow_nan=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(sizes, losses), min_size=3, max_size=8),
       st.sampled_from(["grid", "huber"]))
def test_a_fit_of_any_positive_points_returns_or_says_why(points, method):
    xs, ys = (np.array(values) for values in zip(*points, strict=True))
    try:
        fit = fit_power_law(xs, ys, method)
    except ScalelibError as error:
        assert "distinct" in str(error)
    else:
        assert fit.status and fit.n_runs == len(points)


@given(st.floats(min_value=VALUE_RANGE[1], exclude_min=True, allow_infinity=False))
def test_a_fit_of_values_beyond_float_range_says_rescale(huge):
    with pytest.raises(ScalelibError, match="rescale the column"):
        fit_power_law([1e2, 1e3, 1e4], [huge, 1.0, 0.5])


@pytest.mark.parametrize("method", ["grid", "huber"])
def test_a_fit_at_the_edges_of_the_accepted_range_returns_a_result(method):
    fit = fit_power_law([1e2, 1e3, 1e4, 1e5], [1e99, 1e99, 1e98, 1e97], method)
    assert fit.status  # no OverflowError: a status says what the fit could tell


def test_fit_of_a_header_only_csv_says_the_table_is_empty(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("params,best_val_mse\n")
    assert main(["fit", str(path)]) == 2
    assert "the table has no rows;" in capsys.readouterr().err


def test_fits_never_mix_budgets():
    """One rule for the fit in P, the joint fit and the explorer's fit: a group of several
    budgets is refused with the fix; grouping by budget_steps (or one budget) fits."""
    rows = pl.DataFrame({
        "run_id": [str(i) for i in range(6)], "dataset_fingerprint": "f", "status": "ok",
        "regime": "rich", "n_train_cells": [100, 100, 100, 50, 50, 50],
        "budget_steps": [10, 10, 10, 20, 20, 20],
        "params": [10, 100, 1000] * 2, "best_val_mse": [1.0, 0.8, 0.7, 0.9, 0.7, 0.6]})
    refusal = ("regime=rich holds runs of 2 training budgets (10, 20 steps) and a fit takes "
               "one: fit them apart (scalelib fit --group-by regime budget_steps)")
    with pytest.raises(ScalelibError, match=re.escape(refusal)):
        fit_groups(rows, methods=("grid",))
    with pytest.raises(ScalelibError, match=re.escape(refusal)):
        fit_joint_table(rows, by=("regime",))
    with pytest.raises(ScalelibError, match=re.escape(refusal)):
        purefit.fit_rows(rows.to_dicts(), methods=("grid",))
    apart = fit_groups(rows, by=("regime", "budget_steps"), methods=("grid",))
    assert [fit.group["budget_steps"] for fit in apart] == [10, 20]
    assert [fit.n_runs for fit in apart] == [3, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_groups(rows.filter(pl.col("budget_steps") == 10), by=(), methods=("grid",))


def test_cli_fit_of_mixed_budgets_exits_2_naming_the_grouping(tmp_path, capsys):
    path = tmp_path / "mixed.csv"
    pl.DataFrame({"params": [10, 100, 1000] * 2, "best_val_mse": [1.0, 0.8, 0.7, 0.9, 0.7, 0.6],
                  "budget_steps": [10] * 3 + [20] * 3}).write_csv(path)
    assert main(["fit", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "the table holds runs of 2 training budgets" in error
    assert "--group-by budget_steps)," in error and "(--min-x)" in error
    assert main(["fit", str(path), "--group-by", "budget_steps"]) == 0


def test_smoke_preset_is_valid():
    assert TRAIN_PRESETS["smoke"].lr > 0
