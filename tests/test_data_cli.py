"""``scalelib data build`` and ``data info``: every kind of source, nested sizes, errors, offline."""

import subprocess
import sys
import time
import urllib.error

import numpy as np
import polars as pl
import pytest

from scalelib.cli import main
from scalelib.data.preprocess import candidate_genes
from scalelib.data.simulate import simulate_counts
from scalelib.data.store import load_dataset


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["data", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def h5ad_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("h5ad") / "counts.h5ad"
    simulate_counts(1200, 300, seed=9).write_h5ad(path)
    return path


def test_kang8_limited_dataset_holds_out_donors_and_trains(tmp_path, capsys, kang8_dir):
    out = tmp_path / "limited"
    code, printed, _ = _run(capsys, "build", "--source", kang8_dir, "--regime", "limited",
                            "--holdout", "sample_id", "--out", out, "--quiet")
    assert code == 0 and f"wrote {out}" in printed
    dataset = load_dataset(out)
    assert dataset.n_genes == 1024 and dataset.X.shape[0] == 10_000
    assert dataset.regime == "limited" and dataset.manifest["source"] == "10x"
    donors = {s: set(dataset.obs.filter(pl.col("split") == s)["sample_id"])
              for s in ("train", "val", "test")}
    assert all(donors.values()) and not donors["train"] & (donors["val"] | donors["test"])
    assert candidate_genes(dataset)["selected"].sum() == 1024
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--data", str(out), "--ladder", "smoke", "--train-preset", "smoke",
                 "--sizes", "T0", "--steps", "2", "--batch", "8", "--eval-every", "2",
                 "--no-baselines", "--out", str(sweep)]) == 0
    row = pl.read_parquet(sweep / "results.parquet").row(0, named=True)
    assert row["status"] == "ok" and row["n_train_cells"] == dataset.n_cells("train")
    assert np.isfinite(row["test_mse"])


def test_soma_store_with_filters_holdout_and_nested_sizes(tmp_path, capsys, census_store):
    out = tmp_path / "nested"
    code, printed, _ = _run(
        capsys, "build", "--source", f"soma:{census_store.uri}", "--genes", "64",
        "--cells", "400,800,1600", "--holdout", "donor_id", "--tissue", "blood",
        "--disease", "normal", "--seed", "5", "--out", out, "--quiet")
    assert code == 0
    manifest = load_dataset(out).manifest
    assert manifest["cells_drawn"] == [400, 800, 1600]
    n_train = manifest["n_cells"]["train"]
    assert manifest["train_sizes"] == [round(n * n_train / 1600) for n in (400, 800, 1600)]
    assert manifest["obs_filter"] == ("(is_primary_data == True) and (tissue_general in "
                                      "['blood'] or tissue in ['blood']) and "
                                      "(disease in ['normal'])")
    assert manifest["split"]["method"] == "holdout" and manifest["seed"] == 5
    assert f"--train-sizes {','.join(map(str, manifest['train_sizes']))}" in printed
    code, printed, _ = _run(capsys, "info", out)
    assert code == 0 and "census version: 2025-11-08" in printed
    assert "holdout of donor_id" in printed and "hvg.parquet" in printed


def test_h5ad_and_simulated_sources(tmp_path, capsys, h5ad_path):
    code, _, _ = _run(capsys, "build", "--source", h5ad_path, "--genes", "32", "--out",
                      tmp_path / "file", "--quiet")
    assert code == 0
    dataset = load_dataset(tmp_path / "file")
    assert dataset.X.shape == (1200, 32) and dataset.manifest["source"] == "h5ad"
    assert dataset.regime == "custom"
    code, _, _ = _run(capsys, "build", "--source", "simulate", "--genes", "16", "--cells", "500",
                      "--holdout", "donor", "--out", tmp_path / "sim", "--quiet")
    assert code == 0
    assert load_dataset(tmp_path / "sim").manifest["split"]["holdout"] == "donor"


def _h5ad(tmp_path, name, change=None) -> str:
    counts = simulate_counts(200, 60, seed=1)
    counts.X = counts.X.toarray()
    if change is not None:
        change(counts)
    path = tmp_path / f"{name}.h5ad"
    counts.write_h5ad(path)
    return str(path)


def _set(row, column, value):
    def change(counts):
        counts.X[row, column] = value
    return change


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
@pytest.mark.parametrize(("case", "message"), [
    ("missing", "no file or directory"),
    ("csv", "unknown format"),
    ("fraction", "non-integer values"),
    ("negative", "negative values"),
    ("nan", "NaN"),
    ("too_many_cells", "asked for 5,000 cells but the source has only 200"),
    ("too_many_genes", "ask for between 1 and"),
    ("no_store", "no SOMA store at"),
    ("bad_filter", "was refused"),
    ("census_option_on_file", "only apply to --source census or soma:URI"),
    ("no_genes", "give --regime rich|limited or --genes V"),
])
def test_bad_sources_exit_2_with_one_line(tmp_path, capsys, census_store, case, message):
    out = tmp_path / "out"
    changes = {"fraction": _set(3, 5, 0.5), "negative": _set(3, 5, -1.0),
               "nan": _set(3, 5, np.nan)}
    source = _h5ad(tmp_path, case, changes.get(case))
    argv = {
        "missing": ["--source", tmp_path / "absent.h5ad", "--genes", "8"],
        "csv": ["--source", _write(tmp_path / "t.csv", "a,b\n1,2\n"), "--genes", "8"],
        "too_many_cells": ["--source", source, "--genes", "8", "--cells", "5000"],
        "too_many_genes": ["--source", source, "--genes", "500"],
        "no_store": ["--source", f"soma:{tmp_path / 'nowhere'}", "--regime", "limited"],
        "bad_filter": ["--source", f"soma:{census_store.uri}", "--genes", "8", "--cells",
                       "300", "--obs-filter", "tissue =="],
        "census_option_on_file": ["--source", source, "--genes", "8", "--tissue", "blood"],
        "no_genes": ["--source", source],
    }.get(case, ["--source", source, "--genes", "8"])
    code, _, error = _run(capsys, "build", *argv, "--out", out, "--quiet")
    assert code == 2
    assert error.startswith("scalelib data: error: ") and error.count("\n") == 1
    assert message in error and "Traceback" not in error
    assert not out.exists()


def _write(path, text):
    path.write_text(text)
    return path


def test_existing_output_needs_overwrite_and_only_replaces_datasets(tmp_path, capsys, h5ad_path):
    out = tmp_path / "ds"
    args = ("build", "--source", h5ad_path, "--genes", "8", "--out", out, "--quiet")
    assert _run(capsys, *args)[0] == 0
    code, _, error = _run(capsys, *args)
    assert code == 2 and "pass --overwrite" in error
    assert _run(capsys, *args, "--overwrite")[0] == 0
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    code, _, error = _run(capsys, "build", "--source", h5ad_path, "--genes", "8", "--out",
                          foreign, "--overwrite", "--quiet")
    assert code == 2 and "not a scalelib dataset" in error
    assert (foreign / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("failure", ["no_network", "hanging_network"])
def test_census_without_network_fails_fast_and_writes_nothing(tmp_path, capsys, monkeypatch,
                                                               failure):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def hanging_network(*args, **kwargs):
        time.sleep(120)
        raise TimeoutError("timed out")

    monkeypatch.setattr("urllib.request.urlopen",
                        no_network if failure == "no_network" else hanging_network)
    out = tmp_path / "datasets" / "rich"
    started = time.monotonic()
    code, _, error = _run(capsys, "build", "--regime", "rich", "--out", out)
    assert time.monotonic() - started < 30
    assert code == 2 and error.count("\n") == 1
    assert "cannot reach the CELLxGENE Census" in error
    assert "--source PATH" in error and "--source soma:URI" in error and "simulate" in error
    parent = tmp_path / "datasets"
    assert not out.exists() and (not parent.exists() or not any(parent.iterdir()))


def test_help_names_the_pinned_census_version(capsys):
    from scalelib.data.census import DEFAULT_CENSUS_VERSION

    with pytest.raises(SystemExit):
        main(["data", "build", "--help"])
    assert f"default {DEFAULT_CENSUS_VERSION}" in capsys.readouterr().out


def test_entry_point_prints_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "scalelib", "data", "build", "--source",
         str(tmp_path / "absent"), "--genes", "8", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no file or directory" in result.stderr
