"""The Census source, run offline against a local SOMA store in the Census layout.

The store (tests/conftest.py) holds pbmc3k's real counts under census_data/homo_sapiens and is
opened with ``cellxgene_census.open_soma(uri=...)``: the code path of the public Census.
"""

import time

import numpy as np
import polars as pl
import pytest
import scanpy as sc

from scalelib.data.census import build_census_dataset, check_census_reachable, compose_obs_filter
from scalelib.data.counts import CsrRows, SpilledRows, SpillWriter
from scalelib.data.hvg import seurat_v3
from scalelib.data.preprocess import build_dataset
from scalelib.data.soma_store import import_census, write_census_layout
from scalelib.data.store import hash_strings, load_dataset
from scalelib.errors import ScalelibError

pytest.importorskip("tiledbsoma")
cellxgene_census = pytest.importorskip("cellxgene_census")

SIZES = [600, 1500]


@pytest.fixture(scope="module")
def dataset(census_store):
    return build_census_dataset(256, SIZES, uri=census_store.uri, seed=3, chunk_cells=250,
                                regime="test", progress=False)


def _split(dataset, name):
    return dataset.obs.filter(pl.col("split") == name)


def test_same_dataset_as_the_in_memory_build_of_the_matching_cells(census_store, dataset):
    """Streaming (chunks, spill, two-pass seurat_v3) == reading everything into memory."""
    reference = build_dataset(census_store.primary(), 256, n_cells=SIZES, seed=3)
    assert dataset.genes == reference.genes
    assert dataset.var["gene_id"].to_list() == reference.var["gene_id"].to_list()
    np.testing.assert_array_equal(dataset.X, reference.X)
    assert dataset.obs.select("cell_id", "split", "train_rank").equals(
        reference.obs.select("cell_id", "split", "train_rank"))
    assert dataset.hvg.equals(reference.hvg)


def test_chunk_size_does_not_change_the_dataset(census_store, dataset):
    again = build_census_dataset(256, SIZES, uri=census_store.uri, seed=3, chunk_cells=4000,
                                 regime="test", progress=False)
    assert again.fingerprint == dataset.fingerprint


@pytest.mark.filterwarnings("ignore:Transforming to str index")
def test_genes_are_scanpys_seurat_v3_on_counts_read_with_get_anndata(census_store, dataset):
    train_ids = _split(dataset, "train")["cell_id"].cast(pl.Int64).to_numpy()
    with cellxgene_census.open_soma(uri=census_store.uri) as census:
        train = cellxgene_census.get_anndata(census, "Homo sapiens", obs_coords=np.sort(train_ids),
                                             var_column_names=["feature_id"])
    assert train.n_obs == len(train_ids) and train.n_vars == census_store.adata.n_vars
    expected = sc.pp.highly_variable_genes(train, flavor="seurat_v3", n_top_genes=256,
                                           inplace=False)
    expected = expected[expected["highly_variable"]].sort_values("highly_variable_rank")
    assert dataset.var["gene_id"].to_list() == train.var.loc[expected.index, "feature_id"].tolist()
    np.testing.assert_array_equal(dataset.var["variances_norm"], expected["variances_norm"])


def test_draw_is_a_seeded_random_subset_of_matching_cells(census_store, dataset):
    ids = dataset.obs["cell_id"].cast(pl.Int64).to_numpy()
    primary = np.flatnonzero(census_store.adata.obs["is_primary_data"].to_numpy())
    assert np.isin(ids, primary).all() and len(ids) == 1500
    assert not np.array_equal(np.sort(ids), primary[:1500])  # not the first D
    assert np.sort(ids)[-1] > primary[1500]  # spread over the whole store
    other = build_census_dataset(16, 1500, uri=census_store.uri, seed=4, progress=False)
    assert set(other.obs["cell_id"]) != set(dataset.obs["cell_id"])


def test_manifest_records_the_query(tmp_path, census_store, dataset):
    written = load_dataset(dataset.write(tmp_path / "ds"))
    manifest = written.manifest
    assert manifest["source"] == "soma"
    assert manifest["census_version"] == "2025-11-08"  # census_info/summary of the store
    assert manifest["obs_filter"] == "is_primary_data == True"
    assert manifest["seed"] == 3 and manifest["regime"] == "test"
    assert manifest["n_cells"] == {"train": 1350, "val": 75, "test": 75}
    assert manifest["train_sizes"] == [540, 1350]
    assert manifest["genes"] == dataset.genes and len(manifest["gene_ids"]) == 256
    assert manifest["cell_ids_sha256"] == hash_strings(dataset.obs["cell_id"].to_list())
    assert manifest["query"]["n_matching_cells"] == int(
        census_store.adata.obs["is_primary_data"].sum())
    provenance = manifest["provenance"]
    assert provenance["uri"] == census_store.uri and provenance["X_layer"] == "raw"
    assert provenance["renamed_duplicate_gene_names"] == census_store.n_duplicate_names
    assert {"tiledbsoma", "cellxgene-census"} <= set(manifest["versions"])
    assert written.hvg is not None and written.hvg["selected"].sum() == 256
    assert set(written.obs.columns) >= {"cell_type", "dataset_id", "donor_id", "assay"}


def test_filter_terms_select_the_matching_cells(census_store):
    obs_filter = compose_obs_filter(tissue=["blood"], assay=["10x 3' v2"], disease=["normal"],
                                    extra="sex == 'female'")
    assert obs_filter == ("(is_primary_data == True) and (tissue_general in ['blood'] or tissue "
                          "in ['blood']) and (assay in [\"10x 3' v2\"]) and "
                          "(disease in ['normal']) and (sex == 'female')")
    assert compose_obs_filter(None, extra="sex == 'female'") == "sex == 'female'"
    assert compose_obs_filter(None) is None
    obs_filter = compose_obs_filter(tissue=["peripheral blood"], disease=["normal"],
                                    assay=["10x 3' v1", "10x 3' v2"])
    dataset = build_census_dataset(32, 1000, uri=census_store.uri, obs_filter=obs_filter,
                                   progress=False)
    obs = census_store.adata.obs.loc[dataset.obs["cell_id"].to_list()]
    assert obs["is_primary_data"].all() and (obs["tissue"] == "peripheral blood").all()
    assert (obs["disease"] == "normal").all()
    assert dataset.manifest["obs_filter"] == obs_filter
    if census_store.real:  # 90 training cells of pbmc3k: too few distinct means for loess
        with pytest.raises(ScalelibError, match="loess fit failed.*draw more cells"):
            build_census_dataset(32, 100, uri=census_store.uri, progress=False)


def test_holdout_of_datasets_keeps_them_out_of_training(census_store):
    dataset = build_census_dataset(32, 1200, uri=census_store.uri, holdout="dataset_id",
                                   seed=1, progress=False)
    groups = {name: set(_split(dataset, name)["dataset_id"]) for name in ("train", "val", "test")}
    assert all(groups.values())
    assert not groups["train"] & (groups["val"] | groups["test"])
    assert not groups["val"] & groups["test"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_cells": 10**6}, "but the obs filter matches only"),
    ({"n_genes": 10**6}, "ask for between 1 and"),
    ({"obs_filter": "tissue_general =="}, "was refused"),
    ({"obs_filter": "no_such_column == 1"}, "was refused"),
    ({"obs_filter": "tissue_general == 'moon'"}, "no cell matches"),
    ({"holdout": "batch"}, "obs has no such column; choose one of"),
    ({"organism": "Mus musculus"}, "has no census_data/mus_musculus"),
])
def test_bad_requests_raise(census_store, kwargs, message):
    arguments = {"n_genes": 16, "n_cells": 200, "uri": census_store.uri, "progress": False,
                 **kwargs}
    with pytest.raises(ScalelibError, match=message):
        build_census_dataset(**arguments)


def test_missing_or_foreign_store_is_refused(tmp_path, census_store):
    with pytest.raises(ScalelibError, match="no SOMA store at"):
        build_census_dataset(16, 100, uri=str(tmp_path / "absent"), progress=False)
    with pytest.raises(ScalelibError, match="Census layout"):
        build_census_dataset(16, 100, uri=f"{census_store.uri}/census_data/homo_sapiens",
                             progress=False)


def test_store_without_integer_counts_is_refused(tmp_path, census_store):
    small = census_store.adata[:300].copy()
    small.X = small.X.astype(np.float32) * 0.5
    small.var = small.var.rename(columns={"gene_ids": "feature_id"}).assign(
        feature_name=small.var_names)
    uri = write_census_layout(small, tmp_path / "soma")
    with pytest.raises(ScalelibError, match="non-integer values"):
        build_census_dataset(16, 100, uri=uri, spill_dir=tmp_path / "spill", progress=False)
    assert not any((tmp_path / "spill").iterdir())  # the spill is removed


def test_spilled_blocks_give_scanpys_statistics_whatever_the_block_size(tmp_path, census_store):
    counts = census_store.adata
    writer = SpillWriter(tmp_path, counts.n_vars)
    for start in range(0, counts.n_obs, 700):
        writer.append(counts.X[start:start + 700])
    spilled = writer.finish()
    assert isinstance(spilled, SpilledRows) and spilled.nnz == counts.X.nnz
    rows = np.random.default_rng(0).random(counts.n_obs) < 0.9
    expected = sc.pp.highly_variable_genes(counts[rows].copy(), flavor="seurat_v3",
                                           n_top_genes=500, inplace=False)
    for source in (spilled, CsrRows.from_matrix(counts.X)):
        ours = seurat_v3(lambda s=source: s.blocks(rows, max_nnz=100_000), counts.var_names, 500)
        for column in ("means", "variances", "variances_norm", "highly_variable"):
            np.testing.assert_array_equal(ours[column], expected[column])


# ---------------------------------------------------------------- no network
def test_unreachable_census_fails_fast(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(60)
        raise TimeoutError("timed out")

    monkeypatch.setattr("urllib.request.urlopen", hang)
    started = time.monotonic()
    with pytest.raises(ScalelibError, match="cannot reach the CELLxGENE Census.*soma:URI"):
        check_census_reachable(timeout=1.0)
    assert time.monotonic() - started < 3


def test_unroutable_census_host_times_out():
    started = time.monotonic()
    with pytest.raises(ScalelibError, match="--source PATH"):
        check_census_reachable(["https://10.255.255.1/"], timeout=1.0)
    assert time.monotonic() - started < 3


def test_missing_census_packages_are_named(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cellxgene_census", None)
    with pytest.raises(ScalelibError, match=r"pip install 'scalelib\[census\]'"):
        import_census()
