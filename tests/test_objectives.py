"""Likelihood objectives: bits from known distributions, the NB head's expected value, datasets
that keep raw counts, a training run and a sweep with each objective, per-gene tables."""

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from scipy import stats

from scalelib.config import SMOKE_LADDER, TRAIN_PRESETS, ModelSize, Regime
from scalelib.data.preprocess import simulate_dataset
from scalelib.data.store import COUNTS_FILE, load_dataset
from scalelib.errors import ScalelibError
from scalelib.model import MaskedExpressionTransformer, count_parameters
from scalelib.objectives import (
    MIN_DISPERSION,
    MIN_VARIANCE,
    Targets,
    expected_log1p,
    nll_nats,
    point_prediction,
)
from scalelib.pergene import pergene_table
from scalelib.scaling import fit_groups
from scalelib.sweep import plan_runs, run_sweep
from scalelib.train import load_checkpoint, train

TINY = ModelSize("tiny", 8, 1, 2, 2)
CONFIG = TRAIN_PRESETS["smoke"].with_(max_steps=12, eval_every=4)


def inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


@pytest.fixture(scope="module")
def dataset():
    return simulate_dataset(Regime("rich", n_genes=24, n_cells=600), seed=1)


def test_nb_head_bits_on_known_nb_counts_equal_the_analytic_entropy():
    mean, theta, library, n_genes = 3.0, 0.8, 2000.0, 4
    rng = np.random.default_rng(0)
    p = theta / (theta + mean)
    counts = rng.negative_binomial(theta, p, size=(20_000, n_genes)).astype(np.float32)
    # the head fixed to the true parameters: mean = library * exp(o0) / V, theta = softplus(o1)
    outputs = torch.empty(counts.shape[0], n_genes, 2)
    outputs[..., 0] = math.log(mean * n_genes / library)
    outputs[..., 1] = inverse_softplus(theta - MIN_DISPERSION)
    counts_t = torch.from_numpy(counts)
    # library sizes enter only through their row sums: make every row sum to `library`
    padded = torch.cat([counts_t, (library - counts_t.sum(1, keepdim=True))], dim=1)
    padded_outputs = torch.cat([outputs, outputs[:, :1]], dim=1)
    padded_outputs[..., 0] += math.log((n_genes + 1) / n_genes)  # V changes with the pad
    nll = nll_nats("nb", padded_outputs, Targets(padded, padded))[:, :n_genes]
    bits = nll.double().mean().item() / math.log(2)
    grid = np.arange(0, 2000)
    pmf = stats.nbinom.pmf(grid, theta, p)
    entropy = -(pmf[pmf > 0] * np.log2(pmf[pmf > 0])).sum()
    standard_error = nll.double().std().item() / math.log(2) / math.sqrt(nll.numel())
    assert bits == pytest.approx(entropy, abs=4 * standard_error)


def test_per_gene_dispersions_learned_on_known_nb_counts_reach_the_analytic_entropy():
    thetas, mean, library = np.array([0.3, 1.0, 5.0]), 3.0, 2000.0
    rng = np.random.default_rng(2)

    def draw(n_cells: int) -> torch.Tensor:  # one gene per theta, a last gene pads the library
        counts = rng.negative_binomial(thetas, thetas / (thetas + mean), size=(n_cells, 3))
        padded = np.column_stack([counts, library - counts.sum(1)])
        return torch.from_numpy(padded.astype(np.float32))

    model = MaskedExpressionTransformer(TINY, 4, head_outputs=1, gene_outputs=1)
    assert model.gene_parameters.shape == (4, 1)
    with torch.no_grad():  # the mean fixed to the truth: library * exp(bias) / V
        model.head.weight.zero_()
        model.head.bias.fill_(math.log(mean * 4 / library))
    optimizer = torch.optim.Adam([model.gene_parameters], lr=0.1)
    train_counts, test_counts = draw(20_000), draw(20_000)

    def outputs() -> torch.Tensor:  # every cell has the same library: one forward pass serves all
        one = model(torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.bool))
        return one.expand(len(train_counts), -1, -1)

    for _ in range(400):  # only the per-gene dispersions learn
        optimizer.zero_grad()
        nll = nll_nats("nb_gene", outputs(), Targets(train_counts, train_counts))
        nll[:, :3].mean().backward()
        optimizer.step()
    with torch.no_grad():
        nll = nll_nats("nb_gene", outputs(), Targets(test_counts, test_counts))[:, :3]
    learned = (torch.nn.functional.softplus(model.gene_parameters[:3, 0]) + MIN_DISPERSION)
    assert learned.detach().numpy() == pytest.approx(thetas, rel=0.1)
    grid = np.arange(0, 4000)
    for gene, theta in enumerate(thetas):
        pmf = stats.nbinom.pmf(grid, theta, theta / (theta + mean))
        entropy = -(pmf[pmf > 0] * np.log2(pmf[pmf > 0])).sum()
        bits = nll[:, gene].double() / math.log(2)
        standard_error = bits.std().item() / math.sqrt(len(bits))
        assert bits.mean().item() == pytest.approx(entropy, abs=4 * standard_error)


def test_gaussian_head_nll_on_known_gaussian_equals_its_entropy():
    mean, sd = 1.3, 0.6
    values = torch.from_numpy(np.random.default_rng(1).normal(mean, sd, size=(20_000, 3)))
    outputs = torch.empty(*values.shape, 2)
    outputs[..., 0] = mean
    outputs[..., 1] = inverse_softplus(sd**2 - MIN_VARIANCE)
    nll = nll_nats("gaussian", outputs, Targets(values.float()))
    bits = nll.double().mean().item() / math.log(2)
    entropy = 0.5 * math.log2(2 * math.pi * math.e * sd**2)
    standard_error = nll.double().std().item() / math.log(2) / math.sqrt(nll.numel())
    assert bits == pytest.approx(entropy, abs=4 * standard_error)


def test_nb_point_prediction_is_the_expected_normalised_value():
    mean = torch.tensor([0.2, 4.0, 60.0], dtype=torch.float64)
    theta = torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64)
    scale = torch.tensor([5.0, 2.0, 0.5], dtype=torch.float64)
    found = expected_log1p(mean, theta, scale)
    for m, t, s, f in zip(mean.tolist(), theta.tolist(), scale.tolist(), found.tolist()):
        grid = np.arange(0, 5000)
        expected = (stats.nbinom.pmf(grid, t, t / (t + m)) * np.log1p(s * grid)).sum()
        assert f == pytest.approx(expected, rel=1e-6)
        assert f < math.log1p(s * m)  # Jensen: below the plug-in prediction


def test_gaussian_point_prediction_is_its_mean():
    outputs = torch.randn(2, 3, 2)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    assert torch.equal(point_prediction("gaussian", outputs, Targets(torch.zeros(2, 3)), mask),
                       outputs[..., 0][mask])


def test_heads_add_one_output_row_and_counts_agree():
    for outputs, per_gene in ((1, 0), (2, 0), (1, 1)):
        model = MaskedExpressionTransformer(TINY, 10, head_outputs=outputs, gene_outputs=per_gene)
        assert model.num_parameters() == count_parameters(TINY, 10, outputs, per_gene)
        assert model(torch.rand(3, 10), torch.zeros(3, 10, dtype=torch.bool)).shape == (
            (3, 10) if outputs + per_gene == 1 else (3, 10, 2))


def test_built_datasets_keep_the_counts_behind_their_values(dataset, tmp_path):
    counts = dataset.counts.astype(np.float64)
    library = counts.sum(axis=1, keepdims=True)
    assert np.allclose(np.log1p(1e4 * counts / library), dataset.X, atol=1e-5)
    loaded = load_dataset(dataset.write(tmp_path / "d"))
    assert np.array_equal(np.asarray(loaded.counts), dataset.counts)
    assert loaded.split_counts("val").shape == loaded.split_values("val").shape


def test_nb_on_a_dataset_without_counts_names_the_fix(dataset, tmp_path):
    path = dataset.write(tmp_path / "old")
    (path / COUNTS_FILE).unlink()  # as written before counts were kept
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"].pop(COUNTS_FILE)
    (path / "manifest.json").write_text(json.dumps(manifest))
    old = load_dataset(path)
    assert old.counts is None
    with pytest.raises(ScalelibError, match="scalelib data build"):
        plan_runs(old, SMOKE_LADDER[:1], CONFIG.with_(objective="nb"))
    with pytest.raises(ScalelibError, match="scalelib data build"):
        train(old, TINY, CONFIG.with_(objective="nb"), progress=False)


@pytest.mark.parametrize("objective", ["mse", "gaussian", "nb", "nb_gene"])
def test_one_run_per_objective_end_to_end(dataset, tmp_path, objective):
    result = train(dataset, TINY, CONFIG.with_(objective=objective, max_steps=20), progress=False,
                   out_dir=tmp_path)
    assert result.objective == objective
    assert result.best_val_mse < result.baseline_val_mse * 3
    curve_bits = result.curve["val_bits"].drop_nulls()
    if objective == "mse":
        assert result.best_val_bits is None and result.test_bits is None and curve_bits.len() == 0
    else:
        assert math.isfinite(result.best_val_bits) and math.isfinite(result.test_bits)
        assert result.best_val_bits == curve_bits.min()  # the checkpoint is chosen on bits
        assert curve_bits[0] > curve_bits.min()  # it learned
    genes = pl.read_parquet(tmp_path / "pergene.parquet")
    assert genes["gene"].to_list() == dataset.genes
    pooled = genes["squared_error_sum"].sum() / genes["n_masked"].sum()
    assert pooled == pytest.approx(result.best_val_mse, rel=1e-9)
    if objective != "mse":
        pooled_bits = genes["nll_nats_sum"].sum() / genes["n_masked"].sum() / math.log(2)
        assert pooled_bits == pytest.approx(result.best_val_bits, rel=1e-9)
    saved = load_checkpoint(tmp_path / "best.pt")
    assert saved.gene_outputs == (objective == "nb_gene")


def test_sweeps_keep_objectives_apart_in_ids_rows_and_fits(dataset, tmp_path):
    mse = plan_runs(dataset, SMOKE_LADDER, CONFIG)
    gaussian = plan_runs(dataset, SMOKE_LADDER, CONFIG.with_(objective="gaussian"))
    assert not {r.run_id for r in mse} & {r.run_id for r in gaussian}
    table = pl.concat([run_sweep(mse, tmp_path, progress=False, baselines=False),
                       run_sweep(gaussian, tmp_path, progress=False, baselines=False)])
    assert sorted(table["objective"].unique().to_list()) == ["gaussian", "mse"]
    assert table.filter(pl.col("objective") == "mse")["best_val_bits"].is_null().all()
    assert table.filter(pl.col("objective") == "gaussian")["best_val_bits"].is_not_null().all()
    with pytest.raises(ScalelibError, match="objective"):
        fit_groups(table, by=["regime"])
    by_objective = fit_groups(table, by=["regime", "objective"], methods=["grid"])
    assert [fit.group["objective"] for fit in by_objective] == ["gaussian", "mse"]
    bits = fit_groups(table, y="best_val_bits", by=["regime"], methods=["grid"])
    assert len(bits) == 1 and bits[0].group == {"regime": "rich"}


def test_pergene_rescores_runs_that_predate_per_gene_files(dataset, tmp_path):
    dataset_dir = dataset.write(tmp_path / "data")
    table = run_sweep(plan_runs(load_dataset(dataset_dir), SMOKE_LADDER[:1], CONFIG), tmp_path / "s",
                      progress=False, baselines=False)
    run_dir = tmp_path / "s" / "runs" / table["run_id"][0]
    written = pl.read_parquet(run_dir / "pergene.parquet")
    (run_dir / "pergene.parquet").unlink()
    rescored = pergene_table(tmp_path / "s")
    assert rescored.select(written.columns).equals(written)
