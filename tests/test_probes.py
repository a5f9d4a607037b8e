"""Downstream probes: planted labels, an end-to-end probe of a tiny sweep, the saturation point."""

import hashlib
import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score

from scalelib import chartspec
from scalelib.cli import main
from scalelib.config import SMOKE_LADDER, TRAIN_PRESETS, Regime
from scalelib.data.preprocess import build_dataset, simulate_dataset
from scalelib.data.store import load_dataset
from scalelib.errors import ScalelibError
from scalelib.explore import vegalite
from scalelib.explore.bundle import bundle_document, parse_bundle
from scalelib.plots import probe_chart, probe_charts
from scalelib.probes import (
    PROBES_FILE,
    ProbeSettings,
    ProbeTarget,
    classify,
    labelled_cells,
    pca_features,
    read_probes,
    run_probes,
)
from scalelib.results import read_results
from scalelib.scaling.probe_summary import against_baselines
from scalelib.scaling.saturation import macro_f1_resampled, saturation_points, saturation_size
from scalelib.sweep import plan_runs, run_sweep

CONFIG = TRAIN_PRESETS["smoke"].with_(max_steps=12, eval_every=4)


@pytest.fixture(scope="module")
def dataset():
    return simulate_dataset(Regime("rich", n_genes=32, n_cells=1200), seed=3,
                            holdout="donor", stratify=None)


def _with_label(dataset, values):
    return replace(dataset, obs=dataset.obs.with_columns(pl.Series("planted", values)))


def _pca_probe(dataset, label="planted"):
    settings = ProbeSettings(label=label)
    cells = labelled_cells(dataset, settings)
    fit, test = pca_features(dataset, dataset.n_cells("train"), cells, settings)
    predicted = classify(fit, cells.fit_labels, test, settings)
    return {name: f1_score(cells.test_labels, p, average="macro") for name, p in predicted.items()}


def test_a_linearly_separable_label_is_found_by_the_pca_probe(dataset):
    train = dataset.split_values("train")
    centred = dataset.X - train.mean(axis=0)
    direction = np.linalg.svd(train - train.mean(axis=0), full_matrices=False)[2][0]
    score = centred @ direction
    low, high = np.quantile(score, [0.45, 0.55])  # a margin: cells near the boundary unlabelled
    labels = np.where(score > high, "high", np.where(score < low, "low", None))
    scores = _pca_probe(_with_label(dataset, labels))
    assert scores["logreg"] > 0.97  # the linear probe finds a linear boundary
    assert scores["knn"] > 0.6  # a local vote over all 32 dimensions beats chance (0.5)


def test_a_random_label_scores_near_chance(dataset):
    labels = np.random.default_rng(0).choice(["a", "b", "c", "d"], size=dataset.X.shape[0])
    scores = _pca_probe(_with_label(dataset, labels))
    assert max(scores.values()) < 0.4  # chance macro F1 is about 0.25


def test_bad_label_columns_are_refused_with_the_fix(dataset):
    with pytest.raises(ScalelibError, match="no obs column 'tissue'.*--label.*cell_type"):
        labelled_cells(dataset, ProbeSettings(label="tissue"))
    single = _with_label(dataset, ["only"] * dataset.X.shape[0])
    with pytest.raises(ScalelibError, match="only 'only'.*two or more classes.*--label"):
        labelled_cells(single, ProbeSettings(label="planted"))


def test_the_split_is_stated_as_cross_donor(dataset):
    cells = labelled_cells(dataset, ProbeSettings())
    assert "cross-donor" in cells.split
    assert set(dataset.obs["split"].to_numpy()[cells.fit_rows]) == {"train"}
    assert set(dataset.obs["split"].to_numpy()[cells.test_rows]) == {"test"}


def test_probe_of_a_tiny_sweep_end_to_end(dataset, tmp_path):
    runs = plan_runs(dataset, SMOKE_LADDER[:1], CONFIG, seeds=[0], train_sizes=[200, 600])
    run_sweep(runs, tmp_path, progress=False, baselines=False)
    results_hash = hashlib.sha256((tmp_path / "results.parquet").read_bytes()).hexdigest()
    probed = []
    table = run_probes(tmp_path, data=[dataset],
                       on_target=lambda i, n, target: probed.append(target))
    # 2 runs, PCA at each D, the expression once; two classifiers each
    assert [t.model_family for t in probed] == ["transformer"] * 2 + ["pca"] * 2 + ["expression"]
    assert table.height == 10 and table["macro_f1"].is_between(0, 1).all()
    assert set(table.filter(pl.col("model_family") == "transformer")["run_id"]) == set(
        read_results(tmp_path / "results.parquet")["run_id"])
    assert (table["n_test_cells"] == dataset.n_cells("test")).all()
    assert hashlib.sha256((tmp_path / "results.parquet").read_bytes()).hexdigest() == results_hash
    run_probes(tmp_path, data=[dataset], on_target=lambda i, n, target: probed.append(target))
    assert len(probed) == 5  # the second call probed nothing
    saturation = saturation_points(read_probes(tmp_path / PROBES_FILE), n_bootstrap=20)
    assert set(saturation["model_family"]) == {"transformer", "pca"}
    assert saturation["saturation_d"].is_in([200, 600]).all()
    _check_the_explorer_draws_the_probe_charts_of_plots(tmp_path)


def _check_the_explorer_draws_the_probe_charts_of_plots(sweep_dir):
    """The explorer's data file holds the rows of every probe chart; the explorer draws them
    with the builder plots.probe_charts uses: the same layers, encodings and titles."""
    document = json.loads(json.dumps(bundle_document(sweep_dir, n_bootstrap=0)))
    stored = parse_bundle(document).probes
    probes = read_probes(sweep_dir / PROBES_FILE)
    charts = probe_charts(probes, saturation_points(probes, n_bootstrap=200))
    assert list(stored["charts"]) == list(charts) and stored["label"] == "cell_type"
    assert "cross-donor" in stored["split"][0] and stored["saturation"]
    for name, chart in charts.items():
        drawn = vegalite.VegaLite(chartspec.probe_spec(**stored["charts"][name])).spec
        altair = chart.to_dict()
        assert [layer["mark"] for layer in drawn["layer"]] == [
            layer["mark"] for layer in altair["layer"]], name
        assert [layer["encoding"] for layer in drawn["layer"]] == [
            layer["encoding"] for layer in altair["layer"]], name
        assert drawn["title"] == altair["title"], name


def test_each_run_is_probed_through_its_own_subsampling_strategy_on_pbmc3k(pbmc3k_counts,
                                                                          tmp_path):
    build_dataset(pbmc3k_counts, 32, n_cells=[300, 1200], seed=0,
                  subsample=["random", "rebalanced"]).write(tmp_path / "data")
    stored = load_dataset(tmp_path / "data")
    runs = plan_runs(stored, SMOKE_LADDER[:1], CONFIG, train_sizes=[150, 600],
                     subsamples=["random", "rebalanced"])
    run_sweep(runs, tmp_path / "sweep", progress=False, baselines=False)
    settings = ProbeSettings(drop_labels=("NA_filtered",))
    table = run_probes(tmp_path / "sweep", settings=settings)  # datasets opened from their paths
    families = table.group_by("model_family").agg(pl.col("subsample").unique())
    strategies = dict(zip(families["model_family"], families["subsample"].to_list()))
    assert sorted(strategies["transformer"]) == sorted(strategies["pca"]) == ["random", "rebalanced"]
    assert strategies["expression"] == [None] and table["n_fit_cells"].n_unique() == 1
    # the PCA baseline of a rebalanced run is fitted on the rebalanced subset of D cells
    cells = labelled_cells(stored, settings)
    for strategy in ("random", "rebalanced"):
        fit, test = pca_features(stored.subsampled(strategy), 150, cells, settings)
        expected = classify(fit, cells.fit_labels, test, settings)["logreg"].tolist()
        row = table.filter((pl.col("model_family") == "pca") & (pl.col("subsample") == strategy)
                           & (pl.col("n_train_cells") == 150) & (pl.col("classifier") == "logreg"))
        assert row["predicted"].to_list() == [expected]
    pca = table.filter((pl.col("model_family") == "pca") & (pl.col("n_train_cells") == 150))
    assert pca.filter(pl.col("subsample") == "random")["predicted"].to_list() != pca.filter(
        pl.col("subsample") == "rebalanced")["predicted"].to_list()
    saturation = saturation_points(table, n_bootstrap=10)
    assert saturation.group_by("model_family").agg(pl.col("subsample").n_unique()).sort(
        "model_family")["subsample"].to_list() == [2, 2]
    names = probe_charts(table, saturation)
    assert {f"{stored.regime}, {strategy} {classifier} against D" for strategy in
            ("random", "rebalanced") for classifier in ("logreg", "knn")} <= set(names)


def test_probe_cli_writes_to_out_and_refuses_a_bad_label(dataset, tmp_path, capsys):
    dataset.write(tmp_path / "data")
    stored = load_dataset(tmp_path / "data")
    run_sweep(plan_runs(stored, SMOKE_LADDER[:1], CONFIG), tmp_path / "sweep", progress=False,
              baselines=False)
    assert main(["probe", "--sweep", str(tmp_path / "sweep"), "--label", "tissue"]) == 2
    assert "--label" in capsys.readouterr().err
    assert not (tmp_path / "sweep" / PROBES_FILE).exists()
    out = tmp_path / "probes"
    assert main(["probe", "--sweep", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cross-donor" in printed and "no saturation point" in printed
    assert "transformers against the baselines" in printed
    assert (out / PROBES_FILE).exists() and not (tmp_path / "sweep" / PROBES_FILE).exists()


def test_probe_progress_names_the_subsampling_strategy():
    columns = {"size": "D1", "seed": 0, "n_train_cells": 888, "subsample": "geosketch"}
    assert ProbeTarget("a", "transformer", "k", columns).label_text == "D1 seed 0 D=888 geosketch"
    assert ProbeTarget("b", "pca", "k", {**columns, "subsample": "random"}).label_text == "pca D=888"


def test_resampled_macro_f1_equals_sklearn_without_resampling():
    rng = np.random.default_rng(1)
    truth, predicted = rng.integers(0, 5, 300), rng.integers(0, 4, 300)
    ours = macro_f1_resampled(truth, predicted, 5, np.ones((1, 300)))[0]
    assert ours == pytest.approx(f1_score(truth, predicted, average="macro"))


def test_saturation_point_of_a_planted_curve():
    sizes = [100, 300, 1000, 3000, 10000]
    scores = [1 - 0.5 * np.exp(-d / 1000) for d in sizes]  # 95% of the best first at D=3000
    assert saturation_size(sizes, scores) == 3000
    assert saturation_size(sizes, scores, fraction=0.6) == 300


def test_saturation_interval_covers_a_planted_point():
    rng = np.random.default_rng(0)
    n, sizes = 2000, [100, 300, 1000, 3000, 10000]
    truth = rng.choice(["a", "b", "c"], n)
    rows = []
    for d in sizes:
        accuracy = 1 - 0.5 * np.exp(-d / 1000)
        wrong = rng.random(n) > accuracy
        predicted = np.where(wrong, rng.choice(["a", "b", "c"], n), truth)
        rows.append({"model_family": "transformer", "size": "D1", "classifier": "logreg",
                     "label": "cell_type", "dataset_fingerprint": "x", "n_train_cells": d,
                     "macro_f1": f1_score(truth, predicted, average="macro"),
                     "truth": truth.tolist(), "predicted": predicted.tolist()})
    saturation = saturation_points(pl.DataFrame(rows), n_bootstrap=100).row(0, named=True)
    assert saturation["saturation_d"] == 3000
    assert saturation["saturation_low"] <= 3000 <= saturation["saturation_high"]
    assert saturation["best_d"] == 10000 and saturation["n_sizes"] == 5
    assert saturation["n_seeds"] == 1


def test_saturation_interval_resamples_seeds():
    """Two seeds that disagree at D=1000 (one saturated, one not): the seed mean is not
    saturated there, but a resample that draws the good seed twice is, so the interval reaches
    down to 1000; 5,000 test cells alone would pin the point at 3000."""
    rng = np.random.default_rng(1)
    n = 5000
    truth = rng.choice(["a", "b", "c"], n)
    rows = []
    for d, seed, accuracy in ((300, 0, 0.5), (300, 1, 0.5), (1000, 0, 0.95), (1000, 1, 0.6),
                              (3000, 0, 0.95), (3000, 1, 0.95)):
        wrong = rng.random(n) > accuracy
        predicted = np.where(wrong, rng.choice(["a", "b", "c"], n), truth)
        rows.append({"model_family": "transformer", "size": "D1", "classifier": "logreg",
                     "label": "cell_type", "dataset_fingerprint": "x", "n_train_cells": d,
                     "seed": seed, "macro_f1": f1_score(truth, predicted, average="macro"),
                     "truth": truth.tolist(), "predicted": predicted.tolist()})
    table = pl.DataFrame(rows)
    saturation = saturation_points(table, n_bootstrap=200).row(0, named=True)
    assert saturation["saturation_d"] == 3000 and saturation["n_seeds"] == 2
    assert (saturation["saturation_low"], saturation["saturation_high"]) == (1000, 3000)
    one_seed = saturation_points(table.filter(pl.col("seed") == 1), n_bootstrap=200)
    assert one_seed.row(0, named=True)["n_seeds"] == 1
    assert one_seed["saturation_low"].item() == one_seed["saturation_high"].item() == 3000


def _planted_probes() -> pl.DataFrame:
    rng = np.random.default_rng(2)
    truth = rng.choice(["a", "b"], 200)
    rows = []
    for family, size, params in (("transformer", "D1", 1000), ("transformer", "D2", 4000),
                                 ("pca", None, None), ("expression", None, None)):
        for d in ([None] if family == "expression" else [100, 1000, 10000]):
            accuracy = 0.9 if d is None else 1 - 0.4 * np.exp(-d / 1000)
            predicted = np.where(rng.random(200) < accuracy, truth, rng.choice(["a", "b"], 200))
            for classifier in ("logreg", "knn"):
                rows.append({"model_family": family, "size": size, "params": params, "seed": 0,
                             "classifier": classifier, "label": "cell_type",
                             "dataset_fingerprint": "x", "n_train_cells": d,
                             "macro_f1": f1_score(truth, predicted, average="macro"),
                             "truth": truth.tolist(), "predicted": predicted.tolist()})
    return pl.DataFrame(rows)


def test_best_transformer_stands_beside_the_pca_and_expression_probes():
    probes = _planted_probes().with_columns(
        regime=pl.lit("rich"), subsample=pl.when(pl.col("model_family") != "expression")
        .then(pl.lit("random")))
    table = against_baselines(probes)
    assert table.height == 2 and set(table["classifier"]) == {"logreg", "knn"}
    row = table.filter(pl.col("classifier") == "logreg").row(0, named=True)
    means = probes.group_by("model_family", "size", "n_train_cells", "classifier").agg(
        pl.col("macro_f1").mean()).filter(pl.col("classifier") == "logreg")
    transformers = means.filter(pl.col("model_family") == "transformer")
    best = transformers["macro_f1"].max()
    assert row["transformer_f1"] == best
    assert (row["size"], row["n_train_cells"]) in transformers.filter(
        pl.col("macro_f1") == best).select("size", "n_train_cells").rows()
    pca = means.filter(pl.col("model_family") == "pca")["macro_f1"].max()
    assert row["pca_f1"] == pca and row["minus_pca"] == pytest.approx(best - pca)
    assert row["expression_f1"] == means.filter(
        pl.col("model_family") == "expression")["macro_f1"].item()


def test_probe_charts_against_d_and_p_draw_baselines_and_saturation():
    probes = _planted_probes()
    saturation = saturation_points(probes, n_bootstrap=20)
    against_d = probe_chart(probes, saturation).to_dict()
    marks = [layer["mark"]["type"] for layer in against_d["layer"]]
    assert marks == ["circle", "line", "line", "rule", "text", "point", "rule"]
    references = against_d["layer"][4]
    labels = {row["family"] for row in against_d["datasets"][references["data"]["name"]]}
    assert labels == {"PCA", "expression"}
    against_p = probe_chart(probes, saturation, x="params", classifier="knn").to_dict()
    assert [layer["mark"]["type"] for layer in against_p["layer"]] == [
        "circle", "line", "rule", "text"]
    assert "knn" in against_p["title"]["text"]
