"""The known-floor simulator: exact conditionals, the Bayes floor, fitting to real data, and the
datasets and command line built on them."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, norm

from scalelib.cli import main
from scalelib.data.floor_dataset import mixture_dataset, mixture_from_data
from scalelib.data.mixture import (
    GaussianMixture,
    expected_floor,
    masked_conditionals,
    masked_floor,
)
from scalelib.data.store import load_dataset
from scalelib.heldout import held_out_splits


def _random_mixture(n_genes, n_types, rank, seed):
    """A small mixture with random parameters (types well apart, some noisy genes)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_types, 3.0))
    return GaussianMixture(weights, rng.normal(1.0, 1.5, (n_types, n_genes)),
                           rng.normal(0.0, 0.6, (n_types, n_genes, rank)),
                           np.exp(rng.normal(np.log(0.5), 0.7, (n_types, n_genes))),
                           tuple(f"t{k}" for k in range(n_types)))


def _dense_conditional(mixture, x, observed, j):
    """Posterior mean, variance and log2 density of gene j by dense Gaussian algebra."""
    log_w, means, variances = [], [], []
    for k in range(mixture.n_types):
        cov = mixture.factors[k] @ mixture.factors[k].T + np.diag(mixture.noise[k])
        mean = mixture.means[k]
        gain = cov[j, observed] @ np.linalg.inv(cov[np.ix_(observed, observed)])
        log_w.append(np.log(mixture.weights[k]) + multivariate_normal(
            mean[observed], cov[np.ix_(observed, observed)]).logpdf(x[observed]))
        means.append(mean[j] + gain @ (x[observed] - mean[observed]))
        variances.append(cov[j, j] - gain @ cov[observed, j])
    w = np.exp(np.array(log_w) - max(log_w))
    w /= w.sum()
    means, sd = np.array(means), np.sqrt(variances)
    posterior_mean = w @ means
    return (posterior_mean, w @ (np.square(sd) + (means - posterior_mean) ** 2),
            np.log2(w @ norm.pdf(x[j], means, sd)))


def test_woodbury_conditionals_equal_dense_gaussian_algebra():
    mixture = _random_mixture(7, 3, 2, seed=1)
    rng = np.random.default_rng(0)
    values, _ = mixture.sample(40, rng)
    mask = rng.random(values.shape) < 0.3
    found = masked_conditionals(mixture, values, mask)
    expected = np.array([
        _dense_conditional(mixture, values[i], np.flatnonzero(~mask[i]), j)
        for i, j in zip(*np.nonzero(mask))])
    np.testing.assert_allclose(found.mean, expected[:, 0], atol=1e-10)
    np.testing.assert_allclose(found.variance, expected[:, 1], atol=1e-10)
    np.testing.assert_allclose(found.log2_density, expected[:, 2], atol=1e-10)


def test_conditional_entropy_and_floor_match_numerical_integration():
    """Two genes, the first masked: H(x0 | x1) and E Var(x0 | x1) by quadrature on a grid."""
    mixture = GaussianMixture(
        weights=np.array([0.35, 0.65]), means=np.array([[0.0, 0.5], [2.0, -1.0]]),
        factors=np.array([[[0.9], [0.6]], [[-0.5], [0.8]]]),
        noise=np.array([[0.3, 0.2], [0.15, 0.4]]), type_names=("a", "b"))
    grid = np.linspace(-6.0, 8.0, 701)
    step = grid[1] - grid[0]
    x0, x1 = np.meshgrid(grid, grid, indexing="ij")
    points = np.stack([x0.ravel(), x1.ravel()], axis=1)
    joint = sum(w * multivariate_normal(m, f @ f.T + np.diag(d)).pdf(points)
                for w, m, f, d in zip(mixture.weights, mixture.means, mixture.factors,
                                      mixture.noise)).reshape(x0.shape)
    marginal = joint.sum(axis=0) * step  # p(x1)
    conditional = joint / marginal
    entropy = -np.sum(joint * np.log2(np.maximum(conditional, 1e-300))) * step**2
    mean = (grid[:, None] * conditional).sum(axis=0) * step
    floor = np.sum(joint * (x0 - mean) ** 2) * step**2

    rng = np.random.default_rng(3)
    values, _ = mixture.sample(40_000, rng)
    mask = np.zeros(values.shape, dtype=bool)
    mask[:, 0] = True
    estimate = masked_floor(mixture, values, mask)
    assert abs(estimate.bits - entropy) < 4 * estimate.bits_se
    assert abs(estimate.mse - floor) < 4 * estimate.mse_se
    assert estimate.bits_se < 0.01  # the check has teeth


def test_bayes_predictor_reaches_the_reported_floor_on_fresh_cells():
    mixture = _random_mixture(16, 4, 3, seed=2)
    dataset = mixture_dataset(mixture, 4000, seed=5, mc_cells=4000)
    floor = dataset.manifest["bayes_floor"]
    rng = np.random.default_rng(11)
    values, _ = mixture.sample(6000, rng)
    fresh = masked_floor(mixture, values, rng.random(values.shape) < floor["mask_rate"])
    expected = floor["expected"]
    tolerance = 4 * np.hypot(fresh.mse_se, expected["mse_se"])
    assert abs(fresh.mse - expected["mse"]) < tolerance
    assert abs(fresh.bits - expected["bits"]) < 4 * np.hypot(fresh.bits_se, expected["bits_se"])
    # the floor is never above what simpler predictors reach: the per-gene variance
    assert expected["mse"] < values.var(axis=0).mean()
    # the validation floor is the Bayes predictor scored under the validation mask itself
    val = held_out_splits(dataset).val
    again = masked_floor(mixture, val.values, val.mask)
    assert again.mse == pytest.approx(floor["val"]["mse"], rel=1e-12)
    assert again.n_masked == floor["val"]["n_masked"] == int(val.mask.sum())


def test_expected_floor_is_reproducible_and_checks_the_rate():
    mixture = _random_mixture(8, 2, 2, seed=0)
    first = expected_floor(mixture, 0.15, n_cells=500, seed=1)
    assert first == expected_floor(mixture, 0.15, n_cells=500, seed=1)
    with pytest.raises(Exception, match="mask_rate"):
        expected_floor(mixture, 1.5)


def test_fit_to_pbmc3k_gives_a_mixture_with_the_data_moments(pbmc3k_dir):
    fitted = mixture_from_data(pbmc3k_dir, n_genes=48, rank=4)
    mixture = fitted.mixture
    assert mixture.n_genes == 48 and mixture.rank == 4
    assert {"NK", "Platelet", "B"} <= set(mixture.type_names)  # obs.tsv labels, not clusters
    assert mixture.n_types == 10 and np.isclose(mixture.weights.sum(), 1.0)
    assert fitted.gene_names[:3] == ["PPBP", "LYZ", "S100A9"]  # the most variable genes
    assert np.all(mixture.noise > 0)
    # the mixture reproduces the data's gene means and variances
    values, _ = mixture.sample(20_000, np.random.default_rng(0))
    from scalelib.data.preprocess import build_dataset
    from scalelib.data.sources import read_counts

    data = build_dataset(read_counts(pbmc3k_dir), 48).split_values("train")
    np.testing.assert_allclose(values.mean(axis=0), data.mean(axis=0), atol=0.08)
    np.testing.assert_allclose(values.var(axis=0), data.var(axis=0), rtol=0.15, atol=0.05)
    floor = expected_floor(mixture, 0.15, n_cells=2000)
    assert 0 < floor.mse < data.var(axis=0).mean()


def test_data_build_mixture_writes_the_floor_and_refuses_bad_options(tmp_path, capsys,
                                                                   monkeypatch):
    from scalelib.data import floor_dataset

    monkeypatch.setattr(floor_dataset, "SIMULATED_FIT_CELLS", 2000)
    out = tmp_path / "mixture"
    code = main(["data", "build", "--source", "mixture", "--genes", "12", "--cells", "600",
                 "--out", str(out), "--mixture-types", "3", "--mixture-rank", "2"])
    printed = capsys.readouterr().out
    assert code == 0 and "known floor at mask rate 0.15" in printed
    dataset = load_dataset(out)
    floor = dataset.manifest["bayes_floor"]
    assert dataset.manifest["source"] == "mixture" and dataset.n_genes == 12
    assert set(floor) >= {"val", "test", "expected", "mask_rate", "eval_mask_seed"}
    assert 0 < floor["val"]["mse"] and floor["val"]["mse_se"] > 0
    for argv, message in (
        (["--source", "simulate", "--fit-to", str(out), "--genes", "8"], "only applies"),
        (["--source", "mixture", "--fit-to", str(tmp_path / "nope"), "--cells", "100"],
         "does not exist"),
        (["--source", "mixture", "--genes", "8", "--cells", "100", "--mixture-rank", "0"],
         "positive"),
    ):
        assert main(["data", "build", *argv, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err


def test_a_trained_model_approaches_the_floor_from_above():
    from scalelib.config import TRAIN_PRESETS, find_size
    from scalelib.train import train

    mixture = _random_mixture(12, 3, 2, seed=4)
    dataset = mixture_dataset(mixture, 6000, seed=1, mc_cells=1000)
    val = dataset.manifest["bayes_floor"]["val"]
    config = TRAIN_PRESETS["smoke"].with_(max_steps=400, batch_size=64, eval_every=50)
    result = train(dataset, find_size("D3"), config, progress=False)
    assert result.best_val_mse > val["mse"] - 2 * val["mse_se"]  # never below the floor
    gap, baseline_gap = result.best_val_mse - val["mse"], result.baseline_val_mse - val["mse"]
    assert gap < 0.5 * baseline_gap  # most of the way from the per-gene mean to the floor


class _BayesGaussianHead(torch.nn.Module):
    """A "model" whose Gaussian head outputs the exact conditional's mean and variance."""

    def __init__(self, mixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, values, mask):
        from scalelib.objectives import MIN_VARIANCE

        mask = mask.numpy()
        exact = masked_conditionals(self.mixture, values.numpy(), mask)
        outputs = np.zeros((*mask.shape, 2))
        outputs[..., 0][mask] = exact.mean
        outputs[..., 1][mask] = np.log(np.expm1(exact.variance - MIN_VARIANCE))  # softplus^-1
        return torch.from_numpy(outputs)


@pytest.mark.parametrize("n_types", [1, 3])
def test_gaussian_head_bits_and_true_bits_are_one_quantity(n_types):
    """The trainer's scoring of a Gaussian head set to the exact conditional gives the
    manifest's floor: same stored values, masks, pooling and units (bits) on both sides."""
    from scalelib.train import evaluate

    mixture = _random_mixture(10, n_types, 2, seed=8)
    dataset = mixture_dataset(mixture, 3000, seed=3, mc_cells=200)
    floor = dataset.manifest["bayes_floor"]["val"]
    val = held_out_splits(dataset).val
    scores = evaluate(_BayesGaussianHead(mixture), val.values, val.mask, batch_size=64,
                      device=torch.device("cpu"), dtype="fp32", objective="gaussian")
    assert scores.mse == pytest.approx(floor["mse"], rel=1e-6)
    if n_types == 1:  # the conditional is Gaussian: the head's bits are the true bits
        assert scores.bits == pytest.approx(floor["bits"], abs=1e-5)
    else:  # the moment-matched Gaussian of a mixture conditional: at or above, within error
        assert floor["bits"] - 2 * floor["bits_se"] < scores.bits < floor["bits"] + 0.5


def test_a_trained_gaussian_head_approaches_the_true_bits_from_above():
    from scalelib.config import TRAIN_PRESETS, find_size
    from scalelib.train import train

    mixture = _random_mixture(12, 3, 2, seed=4)
    dataset = mixture_dataset(mixture, 6000, seed=1, mc_cells=1000)
    val = dataset.manifest["bayes_floor"]["val"]
    config = TRAIN_PRESETS["smoke"].with_(max_steps=800, batch_size=64, eval_every=50,
                                          objective="gaussian")
    result = train(dataset, find_size("D3"), config, progress=False)
    assert result.best_val_bits > val["bits"] - 2 * val["bits_se"]  # never below the truth
    # context-free reference: each gene's Gaussian with its training mean and variance
    train_values, held_out = dataset.split_values("train"), held_out_splits(dataset).val
    mean, variance = train_values.mean(axis=0), train_values.var(axis=0)
    per_gene = (0.5 * np.log2(2 * np.pi * variance)
                + np.square(held_out.values - mean) / (2 * variance * np.log(2)))
    gap, reference_gap = result.best_val_bits - val["bits"], per_gene[held_out.mask].mean() - val["bits"]
    assert gap < 0.5 * reference_gap  # most of the way from the per-gene Gaussian to the truth


CALIBRATE_ARGV = ["calibrate", "--preset", "smoke", "--types", "3"]  # rank: the preset's


def _tiny_preset():
    """A seconds-long stand-in for the smoke calibration preset."""
    from scalelib.config import TRAIN_PRESETS, CalibrationPreset

    return CalibrationPreset("smoke", n_genes=8, n_cells=1500, ladder="smoke",
                             sizes=("T0", "T1", "T2"), n_bootstrap=5,
                             train=TRAIN_PRESETS["smoke"].with_(budget_mode="converge",
                                                                max_steps=40),
                             n_types=2, rank=2)


@pytest.fixture(scope="module")
def tiny_calibration(tmp_path_factory):
    """``scalelib calibrate --json --workers 2`` with a seconds-long preset: its output and
    directory (the second process trains runs beside this one)."""
    import contextlib
    import io
    import json

    from scalelib.config import CALIBRATION_PRESETS
    from scalelib.data import floor_dataset

    out = tmp_path_factory.mktemp("calibrate") / "cal"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(floor_dataset, "SIMULATED_FIT_CELLS", 1500)
        patch.setitem(CALIBRATION_PRESETS, "smoke", _tiny_preset())
        code = main([*CALIBRATE_ARGV, "--json", "--workers", "2", "--out", str(out)])
    return code, json.loads(printed.getvalue()), out


def test_calibrate_prints_the_json_keys(tiny_calibration):
    import json

    code, summary, out = tiny_calibration
    assert code == 0
    assert {"true_floor_mse", "true_floor_se", "true_bits", "best_val_mse", "fitted_c",
            "gaussian_bits_from_c", "ridge_val_mse"} <= set(summary)
    assert set(summary["fitted_c"]) == set(summary["gaussian_bits_from_c"]) == {"grid", "huber"}
    assert {"c", "ci", "status"} <= set(summary["fitted_c"]["huber"])
    assert summary["best_val_mse"] >= summary["true_floor_mse"] - 2 * summary["true_floor_se"]
    assert summary["runs"] == 3 and not summary["floor_beaten"]
    head = summary["gaussian_head_bits"]
    assert head["runs"] == 3 and not summary["entropy_beaten"]
    assert set(head["fitted_floor"]) == {"grid", "huber"}
    assert head["best_val_bits"] > summary["true_bits"] - 2 * summary["true_bits_se"]
    assert head["above_true_bits"] == pytest.approx(head["best_val_bits"] - summary["true_bits"])
    assert summary["ridge_val_mse"] > 0
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["true_floor_mse"] == summary["true_floor_mse"]
    mixture = json.loads((out / "datasets" / "mixture" / "manifest.json").read_text())["mixture"]
    assert (mixture["n_types"], mixture["rank"]) == (3, 2)  # --types, and the preset's rank


def test_smoke_calibration_trains_no_size_that_is_the_mean_predictor():
    """D0 (width 1) is the per-gene mean predictor by construction: LayerNorm over one channel
    returns its bias alone, so a masked gene's prediction never depends on the cell. It could
    never leave the mean predictor, so the convergence rule could never pass it."""
    import torch

    from scalelib.config import CALIBRATION_PRESETS, get_ladder, select_sizes
    from scalelib.model import MaskedExpressionTransformer

    preset = CALIBRATION_PRESETS["smoke"]
    values = 3 * torch.randn(2, preset.n_genes, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(values, dtype=torch.bool)
    mask[:, 0] = True

    def uses_the_cell(size):  # does gene 0's prediction differ between the two cells?
        torch.manual_seed(0)
        model = MaskedExpressionTransformer(size, preset.n_genes, dropout=0.0).eval()
        with torch.no_grad():
            predicted = model(values, mask)[:, 0]
        return bool(predicted[0] != predicted[1])

    ladder = get_ladder(preset.ladder)
    assert not uses_the_cell(select_sizes(ladder, ["D0"])[0])
    assert all(uses_the_cell(size) for size in select_sizes(ladder, list(preset.sizes)))


def test_calibrate_exits_1_when_a_model_beats_the_floor_or_the_true_bits(tiny_calibration, capsys, monkeypatch):
    import polars as pl

    from scalelib import calibrate
    from scalelib.config import CALIBRATION_PRESETS

    _, _, out = tiny_calibration
    monkeypatch.setitem(CALIBRATION_PRESETS, "smoke", _tiny_preset())
    real = calibrate.run_calibration

    def beaten(column, truth):  # the finished runs, their scores halved below the truth
        def run(*args, **kwargs):
            result = real(*args, **kwargs)
            below = pl.lit(result.floor["val"][truth] * 0.5)
            return calibrate.Calibration(result.preset, result.dataset,
                                         result.results.with_columns(**{column: below}),
                                         result.fits, result.head_fits, result.ridge_val_mse,
                                         result.wall_time_s)
        return run

    monkeypatch.setattr(calibrate, "run_calibration", beaten("best_val_mse", "mse"))
    assert main([*CALIBRATE_ARGV, "--out", str(out)]) == 1
    assert "SOMETHING IS WRONG: the best model's" in capsys.readouterr().out
    monkeypatch.setattr(calibrate, "run_calibration", beaten("best_val_bits", "bits"))
    assert main([*CALIBRATE_ARGV, "--out", str(out)]) == 1
    assert "SOMETHING IS WRONG: the Gaussian head's" in capsys.readouterr().out


def test_report_sets_the_true_bits_beside_the_gaussian_reading(tiny_calibration, tmp_path):
    from test_report import report_text

    from scalelib import report

    _, summary, out = tiny_calibration
    prepared = report.prepare_report(out, tmp_path / "_data", n_bootstrap=20)
    truth = prepared.numbers["regimes"][0]["known_floor"]
    assert truth["mse"] == summary["true_floor_mse"] and truth["bits"] == summary["true_bits"]
    table = report.entropy_table(report.load_report(tmp_path / "_data")).frame
    assert "unknown" not in table["True bits"].to_list()
    text = report_text(tmp_path / "_data")
    assert "is simulated with a known floor" in text and "Believe the true bits" in text
    estimates = truth["estimates"]  # closest first, each against the true bits
    assert [abs(e["error"]) for e in estimates] == sorted(abs(e["error"]) for e in estimates)
    head = next(e for e in estimates if e["estimate"].startswith("the Gaussian head's best"))
    assert head["bits"] == summary["gaussian_head_bits"]["best_val_bits"]
    assert f"{estimates[0]['estimate']} comes closest here" in text


def test_fit_to_unlabelled_cells_clusters_them(tmp_path):
    source = _random_mixture(10, 3, 2, seed=6)
    mixture_dataset(source, 900, seed=2, mc_cells=200).write(tmp_path / "data")
    fitted = mixture_from_data(tmp_path / "data", labels="no_such_column", n_types=3, rank=2)
    assert fitted.provenance["types_from"].startswith("k-means into 3 clusters")
    assert fitted.mixture.n_types == 3 and fitted.mixture.n_genes == 10
    assert all(name.startswith("cluster_") for name in fitted.mixture.type_names)
    with pytest.raises(Exception, match="genes"):
        mixture_from_data(tmp_path / "data", n_genes=11)
