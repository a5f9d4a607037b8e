"""Baselines: closed-form answers, the transformers' own masks, choices on the inner split only."""

import numpy as np
import pytest

from scalelib.baselines import (
    FAMILIES,
    conditional_mean,
    fit_baselines,
    knn_sse,
    mean_and_covariance,
    ppca_precision,
    ridge_precision,
)
from scalelib.config import ModelSize, Regime, TrainConfig
from scalelib.data.preprocess import build_dataset, simulate_dataset
from scalelib.errors import ScalelibError
from scalelib.heldout import gene_means, held_out_splits


def small_dataset(n_cells=600, n_genes=24):
    return simulate_dataset(Regime("test", n_genes=n_genes, n_cells=n_cells), seed=0)


def random_mask(rng, n_cells, n_genes, rate=0.2):
    mask = rng.random((n_cells, n_genes)) < rate
    mask[0] = False  # a cell with nothing to predict
    mask[1, :] = True  # and one with nothing observed
    return mask


def test_ridge_equals_the_normal_equations_cell_by_cell():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
    queries, mask = rng.normal(size=(40, 12)), random_mask(rng, 40, 12)
    penalty = 0.3
    mean, covariance = mean_and_covariance(train)
    predicted = conditional_mean(mean, ridge_precision(covariance, penalty), queries, mask)
    centred = train - train.mean(axis=0)
    for cell in range(len(queries)):
        masked, seen = mask[cell], ~mask[cell]
        gram = centred[:, seen].T @ centred[:, seen] + len(train) * penalty * np.eye(seen.sum())
        coefficients = np.linalg.solve(gram, centred[:, seen].T @ centred[:, masked])
        expected = mean[masked] + (queries[cell, seen] - mean[seen]) @ coefficients
        np.testing.assert_allclose(predicted[cell, masked], expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(predicted[cell, seen], queries[cell, seen])


def test_pca_reconstruction_approaches_the_true_conditional_mean_of_a_rank_k_model():
    rng = np.random.default_rng(1)
    n_genes, k, noise = 30, 3, 0.1
    loadings = rng.normal(size=(n_genes, k))
    true_mean = rng.normal(size=n_genes)
    true_covariance = loadings @ loadings.T + noise * np.eye(n_genes)
    queries = rng.multivariate_normal(true_mean, true_covariance, size=200)
    mask = random_mask(rng, 200, n_genes, rate=0.3)
    truth = conditional_mean(true_mean, np.linalg.inv(true_covariance), queries, mask)
    errors = []
    for n_train in (500, 50_000):
        train = rng.multivariate_normal(true_mean, true_covariance, size=n_train)
        mean, covariance = mean_and_covariance(train)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        precision = ppca_precision(eigenvalues[order], eigenvectors[:, order], k)
        predicted = conditional_mean(mean, precision, queries, mask)
        errors.append(np.sqrt(np.mean(np.square(predicted - truth)[mask])))
    # the error shrinks like 1/sqrt(cells) (0.033, then 0.003, against a conditional
    # standard deviation of 0.35)
    assert errors[1] < errors[0] / 5 and errors[1] < 0.01


def test_knn_matches_a_brute_force_loop_on_observed_genes():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(60, 8))
    queries, mask = rng.normal(size=(15, 8)), random_mask(rng, 15, 8, rate=0.3)
    ks = [1, 3, 7]
    expected = np.zeros(len(ks))
    for cell in range(len(queries)):
        seen = ~mask[cell]
        distances = np.square(reference[:, seen] - queries[cell, seen]).sum(axis=1)
        nearest = np.argsort(distances, kind="stable")
        for i, k in enumerate(ks):
            prediction = reference[nearest[:k]].mean(axis=0)
            expected[i] += np.square(prediction - queries[cell])[mask[cell]].sum()
    np.testing.assert_allclose(knn_sse(reference, queries, mask, ks), expected, rtol=1e-9)


def test_baselines_are_scored_on_the_transformers_cells_and_masks():
    from scalelib.train import HeldOutSets, train

    dataset = small_dataset()
    config = TrainConfig(max_steps=4, batch_size=16, eval_every=2, mask_rate=0.25,
                         eval_mask_seed=99)
    training = dataset.split_values("train")
    sets = HeldOutSets.build(dataset, config, gene_means(training))
    held_out = held_out_splits(dataset, mask_rate=config.mask_rate,
                               eval_mask_seed=config.eval_mask_seed)
    np.testing.assert_array_equal(held_out.val.values, sets.val_values)
    np.testing.assert_array_equal(held_out.val.mask, sets.val_mask)
    np.testing.assert_array_equal(held_out.test.values, sets.test_values)
    np.testing.assert_array_equal(held_out.test.mask, sets.test_mask)
    run = train(dataset, ModelSize("tiny", 8, 1, 2, 2), config, progress=False)
    (mean,) = fit_baselines(dataset, families=["mean"], mask_rate=config.mask_rate,
                            eval_mask_seed=config.eval_mask_seed)
    assert mean.val_mse == run.baseline_val_mse and mean.test_mse == run.baseline_test_mse


def test_settings_are_chosen_on_training_cells_only():
    dataset = small_dataset()
    first = fit_baselines(dataset, families=["ridge", "knn"])
    scrambled = dataset.X.copy()
    held_out_rows = dataset.split_indices("val").tolist() + dataset.split_indices("test").tolist()
    scrambled[held_out_rows] = np.random.default_rng(0).permutation(scrambled[held_out_rows])
    other = fit_baselines(type(dataset)(scrambled, dataset.obs, dataset.var, dataset.manifest),
                          families=["ridge", "knn"])
    assert [r.setting for r in first] == [r.setting for r in other]
    assert [r.inner_mse for r in first] == [r.inner_mse for r in other]


def test_all_families_report_on_a_nested_training_subset():
    dataset = small_dataset()
    results = fit_baselines(dataset, n_train=100)
    assert [r.family for r in results] == list(FAMILIES)
    assert all(r.n_train_cells == 100 and r.fit_seconds >= 0 for r in results)
    assert all(np.isfinite([r.val_mse, r.test_mse, r.inner_mse]).all() for r in results)
    by_family = {r.family: r for r in results}
    assert by_family["ridge"].val_mse < by_family["mean"].val_mse
    assert by_family["pca"].setting.startswith("k=") and by_family["ridge"].setting.startswith(
        "lambda=")


def test_bad_requests_name_the_fix():
    dataset = small_dataset()
    with pytest.raises(ScalelibError, match="family"):
        fit_baselines(dataset, families=["lasso"])
    with pytest.raises(ScalelibError, match="training cells"):
        fit_baselines(dataset, n_train=5)


def test_ridge_beats_the_mean_on_pbmc3k(pbmc3k_counts):
    dataset = build_dataset(pbmc3k_counts, 64, seed=0)
    results = {r.family: r for r in fit_baselines(dataset, families=["mean", "ridge"])}
    assert results["ridge"].val_mse < 0.95 * results["mean"].val_mse
    assert results["ridge"].test_mse < 0.95 * results["mean"].test_mse


def test_cli_json_lists_every_family_with_its_scores(tmp_path, capsys):
    import json

    from scalelib.baselines import FAMILIES
    from scalelib.cli import main
    from scalelib.cli.baselines_cmd import FAMILY_CHOICES

    assert FAMILY_CHOICES == FAMILIES
    small_dataset().write(tmp_path / "data")
    assert main(["baselines", "--data", str(tmp_path / "data"), "--json",
                 "--train-preset", "smoke"]) == 0
    objects = json.loads(capsys.readouterr().out)
    assert [item["family"] for item in objects] == ["mean", "pca", "ridge", "knn"]
    for item in objects:
        assert {"family", "val_mse", "test_mse", "setting"} <= set(item)
        assert item["val_mse"] > 0 and item["test_mse"] > 0
    assert main(["baselines", "--data", str(tmp_path / "data"), "--families", "mean"]) == 0
    assert "mean" in capsys.readouterr().out
    assert main(["baselines", "--data", str(tmp_path / "absent")]) == 2
