"""Training subsets that differ in diversity: random, rebalanced and geosketch orders."""

import re

import numpy as np
import polars as pl
import pytest

from scalelib.cli import main
from scalelib.config import TRAIN_PRESETS, Regime, get_ladder
from scalelib.data import load_dataset
from scalelib.data.preprocess import build_dataset, simulate_dataset
from scalelib.data.subsample import checkpoints, rank_column, rebalanced_order
from scalelib.errors import ScalelibError
from scalelib.launch import RunRecipe
from scalelib.sweep import plan_runs, run_sweep

STRATEGIES = ["random", "rebalanced", "geosketch"]


@pytest.fixture(scope="module")
def pbmc(pbmc3k_counts, tmp_path_factory):
    """pbmc3k, 128 genes, with all three orders, written and read back."""
    path = tmp_path_factory.mktemp("pbmc") / "data"
    build_dataset(pbmc3k_counts, 128, n_cells=[300, 1200, 2700], seed=0,
                  subsample=STRATEGIES).write(path)
    return load_dataset(path)


def _subset_labels(dataset, strategy, n):
    view = dataset.subsampled(strategy)
    return dataset.obs["cell_type"].to_numpy()[view.split_indices("train", n)]


def test_diverse_subsets_raise_the_rarest_cell_type_share_on_pbmc3k(pbmc):
    train_types = pbmc.obs.filter(pbmc.obs["split"] == "train")["cell_type"].to_numpy()
    types, counts = np.unique(train_types, return_counts=True)
    rarest = types[np.argmin(counts)]
    n = pbmc.manifest["train_sizes"][0]
    share = {s: np.mean(_subset_labels(pbmc, s, n) == rarest) for s in STRATEGIES}
    assert share["rebalanced"] > 2 * share["random"]
    assert share["geosketch"] > share["random"]
    # rebalanced fills every type up to its equal share, all of the rarest
    assert np.sum(_subset_labels(pbmc, "rebalanced", n) == rarest) == counts.min()


def test_orders_are_nested_and_share_val_test_and_genes(pbmc):
    assert pbmc.subsamples == STRATEGIES
    assert pbmc.manifest["subsample"]["strategies"] == STRATEGIES
    assert pbmc.manifest["subsample"]["balance_by"] == "cell_type"
    n_train = pbmc.n_cells("train")
    for strategy in STRATEGIES:
        view = pbmc.subsampled(strategy)
        ranks = pbmc.obs[rank_column(strategy)].to_numpy()
        train = pbmc.obs["split"].to_numpy() == "train"
        assert sorted(ranks[train]) == list(range(n_train)) and (ranks[~train] == -1).all()
        small, large = (set(view.split_indices("train", n)) for n in (100, 900))
        assert small < large
        assert np.array_equal(view.split_indices("val"), pbmc.split_indices("val"))
        assert view.genes == pbmc.genes
    fingerprints = {pbmc.subsampled(s).fingerprint for s in STRATEGIES}
    assert len(fingerprints) == 3 and pbmc.subsampled("random").fingerprint == pbmc.fingerprint


def test_random_order_and_fingerprint_do_not_change_when_strategies_are_added(pbmc3k_counts):
    plain = build_dataset(pbmc3k_counts, 64, n_cells=[500, 2000], seed=3)
    more = build_dataset(pbmc3k_counts, 64, n_cells=[500, 2000], seed=3,
                         subsample=["random", "rebalanced"])
    assert np.array_equal(plain.obs["train_rank"].to_numpy(), more.obs["train_rank"].to_numpy())
    assert plain.fingerprint == more.fingerprint


def test_geosketch_prefix_is_a_sketch_at_every_checkpoint(pbmc):
    sketch = pbmc.manifest["subsample"]["geosketch"]
    assert sketch["checkpoints"] == checkpoints(pbmc.manifest["train_sizes"], pbmc.n_cells("train"))
    assert set(pbmc.manifest["train_sizes"][:-1]) <= set(sketch["checkpoints"])


def test_rebalanced_order_fills_groups_evenly():
    labels = np.array(["a"] * 100 + ["b"] * 10 + ["c"] * 40)
    ranks = rebalanced_order(labels, np.random.default_rng(0))
    first = labels[np.argsort(ranks)[:60]]
    assert {g: int(np.sum(first == g)) for g in "abc"} == {"a": 25, "b": 10, "c": 25}


def test_plan_runs_crosses_strategies_and_rows_record_them(pbmc):
    sizes = get_ladder("smoke")[:1]
    runs = plan_runs(pbmc, sizes, TRAIN_PRESETS["smoke"], train_sizes=[200, 800],
                     subsamples=["random", "geosketch"])
    assert len(runs) == 4 and len({run.run_id for run in runs}) == 4
    assert [run.dataset.subsample for run in runs] == ["random"] * 2 + ["geosketch"] * 2


def test_a_run_sent_to_another_process_keeps_its_strategy(pbmc):
    """Cluster jobs and --workers reopen the dataset from disk: the strategy must travel."""
    run = plan_runs(pbmc, get_ladder("smoke")[:1], TRAIN_PRESETS["smoke"], train_sizes=[200],
                    subsamples=["geosketch"])[0]
    again = RunRecipe.of(run).plan()
    assert again.dataset.subsample == "geosketch" and again.run_id == run.run_id
    assert np.array_equal(again.dataset.split_indices("train", 200),
                          run.dataset.split_indices("train", 200))


def test_runs_on_the_whole_training_set_are_trained_once_for_all_strategies(pbmc, tmp_path):
    """At the whole training set the geosketch run repeats the random one: its row is the
    random run's under its own ID and strategy, and it trains no model of its own."""
    whole = pbmc.n_cells("train")
    config = TRAIN_PRESETS["smoke"].with_(max_steps=4, eval_every=2)
    runs = plan_runs(pbmc, get_ladder("smoke")[:1], config, train_sizes=[200, whole],
                     subsamples=["geosketch", "random"])
    table = run_sweep(runs, tmp_path, progress=False, baselines=False)
    at_whole = table.filter(pl.col("n_train_cells") == whole).sort("subsample")
    assert at_whole["subsample"].to_list() == ["geosketch", "random"]
    assert at_whole["run_id"].n_unique() == 2 and at_whole["best_val_mse"].n_unique() == 1
    assert at_whole["checkpoint"].n_unique() == 1
    copied = at_whole.row(0, named=True)
    assert copied["dataset_fingerprint"] == pbmc.subsampled("geosketch").fingerprint
    assert not (tmp_path / "runs" / copied["run_id"] / "best.pt").exists()
    assert (tmp_path / "runs" / copied["run_id"] / "row.json").exists()
    assert table.filter(pl.col("n_train_cells") == 200)["best_val_mse"].n_unique() == 2


def test_cli_sweep_says_what_it_copied_and_what_converged(pbmc, tmp_path, capsys):
    whole = pbmc.n_cells("train")
    assert main(["sweep", "--data", pbmc.manifest["path"], "--ladder", "smoke", "--sizes", "T0",
                 "--train-preset", "smoke", "--steps", "4", "--eval-every", "2",
                 "--budget", "converge", "--train-sizes", f"200,{whole}",
                 "--subsample", "random,geosketch", "--no-baselines",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "trained 3 of the 4 planned runs" in printed and "repeat the random run" in printed
    assert re.search(r"converged: \d of 4 runs", printed)


def test_bad_strategy_or_balance_column_is_refused_before_work(pbmc3k_counts):
    with pytest.raises(ScalelibError, match="choose among random, rebalanced, geosketch"):
        build_dataset(pbmc3k_counts, 64, subsample=["diverse"])
    with pytest.raises(ScalelibError, match="pass --balance-by with one of them"):
        build_dataset(pbmc3k_counts, 64, subsample=["rebalanced"], balance_by="donor")
    dataset = simulate_dataset(Regime("tiny", 32, 300), n_total_genes=200)
    with pytest.raises(ScalelibError, match="--subsample geosketch"):
        dataset.subsampled("geosketch")
