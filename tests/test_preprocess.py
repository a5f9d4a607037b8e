"""build_dataset: splits, nesting, gene choice (scanpy's, on simulated and real counts),
values, manifest, the per-gene HVG table, errors."""

import json

import anndata as ad
import numpy as np
import polars as pl
import pytest
import scanpy as sc
from scipy import sparse

from scalelib.config import Regime
from scalelib.data.preprocess import (
    build_dataset,
    candidate_genes,
    dataset_from_anndata,
    simulate_dataset,
)
from scalelib.data.simulate import simulate_counts
from scalelib.data.store import load_dataset
from scalelib.errors import ScalelibError

SIZES = [1000, 2000, 4000]


@pytest.fixture(scope="module")
def counts():
    return simulate_counts(5000, 400, seed=1)


@pytest.fixture(scope="module")
def dataset(counts):
    return build_dataset(counts, 48, n_cells=SIZES, seed=3, regime="test")


def _cells(dataset, split):
    return dataset.obs.filter(pl.col("split") == split)


def test_splits_are_disjoint_and_cover_the_drawn_cells(counts, dataset):
    ids = dataset.obs["cell_id"].to_list()
    assert len(ids) == len(set(ids)) == 4000
    assert set(ids) <= set(counts.obs_names)
    assert {s: dataset.n_cells(s) for s in ("train", "val", "test")} == {
        "train": 3600, "val": 200, "test": 200}
    assert dataset.manifest["preprocessing"]["dropped_zero_count_cells"] == {
        "train": 0, "val": 0, "test": 0}


def test_stratification_keeps_cell_type_proportions(dataset):
    overall = dataset.obs["cell_type"].value_counts(normalize=True)
    for split in ("val", "test"):
        share = _cells(dataset, split)["cell_type"].value_counts(normalize=True)
        joined = overall.join(share, on="cell_type", how="left").fill_null(0)
        assert (joined["proportion"] - joined["proportion_right"]).abs().max() < 0.01


def test_nested_training_subsets_share_val_and_test(dataset):
    assert dataset.manifest["cells_drawn"] == SIZES
    assert dataset.manifest["train_sizes"] == [900, 1800, 3600]
    subsets = [set(dataset.split_indices("train", n)) for n in (900, 1800, 3600)]
    assert subsets[0] < subsets[1] < subsets[2]
    ranks = _cells(dataset, "train")["train_rank"].sort().to_list()
    assert ranks == list(range(3600))
    assert (_cells(dataset, "val")["train_rank"] == -1).all()


def test_genes_are_scanpys_seurat_v3_choice_on_training_cells(counts, dataset):
    train = counts[_cells(dataset, "train")["cell_id"].to_list()]
    expected = sc.pp.highly_variable_genes(train, flavor="seurat_v3", n_top_genes=48,
                                           inplace=False)
    expected = expected[expected["highly_variable"]].sort_values("highly_variable_rank")
    assert dataset.genes == expected.index.tolist()  # HVG-rank order
    assert dataset.var["gene_id"].to_list() == counts.var.loc[dataset.genes, "gene_ids"].tolist()
    assert np.allclose(dataset.var["variances_norm"], expected["variances_norm"])
    assert dataset.var["highly_variable_rank"].to_list() == list(range(48))


def test_values_are_scanpys_normalise_total_and_log1p_over_selected_genes(counts, dataset):
    selected = counts[dataset.obs["cell_id"].to_list(), dataset.genes].copy()
    selected.X = selected.X.astype(np.float64)
    sc.pp.normalize_total(selected, target_sum=1e4)
    sc.pp.log1p(selected)
    assert dataset.X.dtype == np.float32
    np.testing.assert_allclose(dataset.X, selected.X.toarray(), rtol=1e-5, atol=1e-5)


def test_tables_and_manifest(dataset):
    assert dataset.obs.columns == ["cell_id", "split", "train_rank", "cell_type", "donor"]
    assert dataset.obs.schema["cell_type"] == pl.String
    assert dataset.var.columns == ["gene_id", "gene_name", "means", "variances",
                                   "variances_norm", "highly_variable_rank"]
    manifest = dataset.manifest
    assert manifest["source"] == "simulator" and manifest["provenance"]["n_genes"] == 400
    assert manifest["regime"] == "test" and manifest["seed"] == 3
    assert manifest["split"]["method"] == "stratified"
    assert manifest["split"]["fractions"] == {"train": 0.9, "val": 0.05, "test": 0.05}
    assert manifest["preprocessing"]["highly_variable_genes"]["n_cells"] == 3600
    assert set(manifest["versions"]) >= {"scikit-misc", "anndata", "numpy", "scalelib"}
    assert "hvg_candidates" not in manifest  # the per-gene table is dataset.hvg (hvg.parquet)
    candidates = candidate_genes(dataset)
    assert candidates.columns == ["gene_name", "gene_id", "means", "variances",
                                  "variances_norm", "selected"]
    assert candidates["selected"].sum() == 48 and candidates.height > 300
    chosen = candidates.filter(pl.col("selected"))
    assert set(chosen["gene_id"]) == set(dataset.var["gene_id"])


def test_same_seed_same_dataset(counts, dataset):
    again = build_dataset(counts, 48, n_cells=SIZES, seed=3, regime="test")
    assert again.fingerprint == dataset.fingerprint
    assert build_dataset(counts, 48, n_cells=SIZES, seed=4).fingerprint != dataset.fingerprint


def test_write_and_load_round_trip(tmp_path, dataset):
    loaded = load_dataset(dataset.write(tmp_path / "ds"))
    np.testing.assert_array_equal(loaded.X, dataset.X)
    assert loaded.obs.equals(dataset.obs) and loaded.var.equals(dataset.var)
    assert loaded.fingerprint == dataset.fingerprint
    assert loaded.manifest["train_sizes"] == [900, 1800, 3600]
    assert candidate_genes(loaded).equals(candidate_genes(dataset))
    assert (tmp_path / "ds" / "hvg.parquet").exists()


def test_datasets_written_before_hvg_parquet_still_load(tmp_path, dataset):
    path = dataset.write(tmp_path / "old")
    (path / "hvg.parquet").unlink()
    manifest = json.loads((path / "manifest.json").read_text())
    table = dataset.hvg.select("gene_name", "means", "variances", "variances_norm")
    manifest["hvg_candidates"] = table.to_dict(as_series=False)
    del manifest["files"]  # written before file hashes were recorded too
    (path / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_dataset(path)
    assert loaded.hvg is None
    old = candidate_genes(loaded)
    assert old["gene_id"].null_count() == old.height
    assert old.drop("gene_id").equals(candidate_genes(dataset).drop("gene_id"))


@pytest.mark.parametrize("name", ["pbmc3k", "kang8"])
def test_genes_match_scanpy_exactly_on_real_counts(request, name):
    """The streaming seurat_v3 picks scanpy's genes, in scanpy's order, with equal statistics."""
    counts = request.getfixturevalue(f"{name}_counts")
    dataset = build_dataset(counts, 512, n_cells=2000, seed=0, stratify=None)
    train = counts[_cells(dataset, "train")["cell_id"].to_list()]
    expected = sc.pp.highly_variable_genes(train, flavor="seurat_v3", n_top_genes=512,
                                           inplace=False)
    chosen = expected[expected["highly_variable"]].sort_values("highly_variable_rank")
    assert dataset.genes == chosen.index.tolist()
    for column in ("means", "variances", "variances_norm"):
        np.testing.assert_array_equal(dataset.var[column], chosen[column])
    detected = expected[expected["means"] > 0]
    np.testing.assert_array_equal(dataset.hvg["variances_norm"], detected["variances_norm"])


def test_holdout_keeps_donors_out_of_training(counts):
    dataset = build_dataset(counts, 32, n_cells=3000, holdout="donor", seed=0)
    donors = {s: set(_cells(dataset, s)["donor"]) for s in ("train", "val", "test")}
    assert all(donors.values())
    assert not (donors["train"] & donors["val"] or donors["train"] & donors["test"]
                or donors["val"] & donors["test"])
    split = dataset.manifest["split"]
    assert {s: set(groups) for s, groups in split["groups"].items()} == donors
    assert sum(split["n_cells"].values()) == 3000
    assert dataset.manifest["train_sizes"] == [split["n_cells"]["train"]]


def test_missing_stratify_column_falls_back_to_random_split(counts):
    dataset = build_dataset(counts, 16, n_cells=500, stratify="tissue")
    assert dataset.manifest["split"]["method"] == "random"
    assert "tissue" in dataset.manifest["split"]["note"]


def test_cells_without_counts_in_the_selected_genes_are_dropped(counts):
    zeroed = counts[:600].copy()
    zeroed.X = sparse.csr_matrix(sparse.diags((np.arange(600) >= 40).astype(np.float32))
                                 @ zeroed.X)  # the first 40 cells have no counts at all
    dataset = build_dataset(zeroed, 16, stratify=None, seed=0)
    dropped = dataset.manifest["preprocessing"]["dropped_zero_count_cells"]
    assert sum(dropped.values()) == 600 - dataset.X.shape[0] >= 40
    assert not set(zeroed.obs_names[:40]) & set(dataset.obs["cell_id"])
    assert dataset.manifest["train_sizes"] == [dataset.n_cells("train")]
    assert (dataset.X.sum(axis=1) > 0).all()


def test_simulate_dataset_uses_the_regime():
    dataset = simulate_dataset(Regime("tiny", n_genes=24, n_cells=800), seed=2, n_total_genes=300)
    assert dataset.X.shape == (800, 24) and dataset.regime == "tiny"
    assert dataset.manifest["provenance"]["n_cells"] == 800


def test_dataset_from_anndata(dataset):
    adata = ad.AnnData(X=np.asarray(dataset.X), obs=dataset.obs.to_pandas().set_index("cell_id"))
    adata.var_names = dataset.genes
    wrapped = dataset_from_anndata(adata, regime="given", seed=1)
    assert wrapped.obs["split"].to_list() == dataset.obs["split"].to_list()
    assert "source_train_rank" in wrapped.obs.columns  # a reserved source column is renamed
    assert wrapped.n_cells("train") == 3600 and wrapped.regime == "given"
    with pytest.raises(ScalelibError, match="no column 'fold'"):
        dataset_from_anndata(adata, split_key="fold")
    adata.obs["bad"] = "training"
    with pytest.raises(ScalelibError, match="use train, val, test"):
        dataset_from_anndata(adata, split_key="bad")
    adata.obs["no_test"] = adata.obs["split"].replace({"test": "val"})
    with pytest.raises(ScalelibError, match="no test cells"):
        dataset_from_anndata(adata, split_key="no_test")
    counts_like = ad.AnnData(X=np.round(np.expm1(adata.X)), obs=adata.obs)
    with pytest.raises(ScalelibError, match="raw counts"):
        dataset_from_anndata(counts_like)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_cells": 6000}, "only 5,000; ask for at most 5,000 cells"),
    ({"n_cells": [100, 2.5]}, "positive integers"),
    ({"n_genes": 1000}, "only .* genes have counts.*ask for between 1 and"),
    ({"holdout": "batch"}, "no such column"),
    ({"split_fractions": (0.8, 0.1)}, "three positive numbers"),
])
def test_bad_requests_raise(counts, kwargs, message):
    arguments = {"n_genes": 16, "n_cells": 500, **kwargs}
    with pytest.raises(ScalelibError, match=message):
        build_dataset(counts, **arguments)


def test_holdout_needs_three_groups(counts):
    few = counts[:400].copy()
    few.obs["batch"] = np.where(np.arange(400) % 2, "a", "b")
    with pytest.raises(ScalelibError, match="at least 3 groups"):
        build_dataset(few, 16, holdout="batch")


@pytest.mark.parametrize(("value", "message"), [
    (0.5, "non-integer"), (-1.0, "negative"), (np.nan, "NaN"),
])
def test_bad_counts_raise(counts, value, message):
    bad = counts[:200].copy()
    bad.X = bad.X.toarray()
    bad.X[3, 5] = value
    with pytest.raises(ScalelibError, match=message):
        build_dataset(bad, 16)


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicate_gene_names_raise(counts):
    dup = counts[:200].copy()
    dup.var_names = ["SAME"] * 2 + list(dup.var_names[2:])
    with pytest.raises(ScalelibError, match="duplicate gene names"):
        build_dataset(dup, 16)
