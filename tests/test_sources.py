"""Readers of raw counts: .h5ad (X, layers["counts"], .raw), 10x directories, real data."""

import gzip

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import io, sparse

from scalelib.data.preprocess import build_dataset
from scalelib.data.simulate import simulate_counts
from scalelib.data.sources import check_counts, read_counts
from scalelib.errors import ScalelibError


@pytest.fixture(scope="module")
def counts():
    return simulate_counts(300, 120, seed=5)


def _with_x(counts, X, **extra) -> ad.AnnData:
    return ad.AnnData(X=X, obs=counts.obs.copy(), var=counts.var.copy(), **extra)


def _lognorm(counts) -> sparse.csr_matrix:
    X = counts.X.copy()
    X.data = np.log1p(X.data)
    return X


def test_h5ad_counts_in_x(tmp_path, counts):
    counts.write_h5ad(tmp_path / "c.h5ad")
    read = read_counts(tmp_path / "c.h5ad")
    assert (read.X != counts.X).nnz == 0 and sparse.isspmatrix_csr(read.X)
    assert read.uns["scalelib"] == {"source": "h5ad", "path": str(tmp_path / "c.h5ad"),
                                    "counts_from": "X"}
    assert read.var["gene_ids"].tolist() == counts.var["gene_ids"].tolist()


def test_h5ad_counts_in_layer_preferred_over_raw(tmp_path, counts):
    adata = _with_x(counts, _lognorm(counts), layers={"counts": counts.X.copy()})
    adata.raw = _with_x(counts, counts.X.copy())
    adata.write_h5ad(tmp_path / "c.h5ad")
    read = read_counts(tmp_path / "c.h5ad")
    assert read.uns["scalelib"]["counts_from"] == "layers['counts']"
    assert (read.X != counts.X).nnz == 0


def test_h5ad_counts_in_raw(tmp_path, counts):
    adata = _with_x(counts, _lognorm(counts))
    adata.raw = _with_x(counts, counts.X.toarray())  # dense raw counts are accepted too
    adata.write_h5ad(tmp_path / "c.h5ad")
    read = read_counts(tmp_path / "c.h5ad")
    assert read.uns["scalelib"]["counts_from"] == "raw"
    assert (read.X != counts.X).nnz == 0


@pytest.mark.parametrize(("change", "message"), [
    (lambda X: np.log1p(X), "non-integer values"),
    (lambda X: X - 1.0, "negative values"),
    (lambda X: np.where(X > 3, np.nan, X), "NaN"),
])
def test_h5ad_without_raw_counts_is_refused(tmp_path, counts, change, message):
    _with_x(counts, change(counts.X.toarray())).write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(ScalelibError, match=message) as error:
        read_counts(tmp_path / "bad.h5ad")
    assert "layers['counts']: absent" in str(error.value)
    assert "Store raw UMI counts in X" in str(error.value)


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_repeated_gene_names_follow_one_rule_in_h5ad_and_10x(tmp_path, counts):
    """Made unique with a warning and a count in the provenance, whatever the format."""
    adata = counts.copy()
    adata.var_names = ["GENE"] * 2 + list(adata.var_names[2:])
    adata.write_h5ad(tmp_path / "dup.h5ad")
    tenx = tmp_path / "tenx"
    write_10x(tenx, adata)
    for source in (tmp_path / "dup.h5ad", tenx):
        with pytest.warns(UserWarning, match="1 repeated gene name"):
            read = read_counts(source)
        assert list(read.var_names[:2]) == ["GENE", "GENE-1"] and read.var_names.is_unique
        assert read.uns["scalelib"]["renamed_duplicate_genes"] == 1


def test_repeated_cell_ids_are_refused(tmp_path, counts):
    adata = counts.copy()
    adata.obs_names = ["CELL"] * 2 + list(adata.obs_names[2:])
    adata.write_h5ad(tmp_path / "dup.h5ad")
    with pytest.raises(ScalelibError, match="duplicate cell IDs"):
        read_counts(tmp_path / "dup.h5ad")


def test_truncated_inputs_give_one_line(tmp_path, counts):
    tenx = tmp_path / "tenx"
    write_10x(tenx, counts)
    matrix = tenx / "matrix.mtx.gz"
    matrix.write_bytes(matrix.read_bytes()[: matrix.stat().st_size // 2])
    with pytest.raises(ScalelibError, match="truncated download"):
        read_counts(tenx)
    (tmp_path / "broken.h5ad").write_bytes(b"HDF")
    with pytest.raises(ScalelibError, match="cannot read"):
        read_counts(tmp_path / "broken.h5ad")


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(ScalelibError, match="no file or directory"):
        read_counts(tmp_path / "absent.h5ad")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ScalelibError, match="unknown format.*h5ad.*10x"):
        read_counts(tmp_path / "table.csv")
    with pytest.raises(ScalelibError, match="without matrix.mtx"):
        read_counts(tmp_path)


def test_check_counts_accepts_integer_dtypes_and_names_the_matrix():
    check_counts(np.array([[0, 3], [1, 0]], dtype=np.int64), "m")
    with pytest.raises(ScalelibError, match="census X holds negative"):
        check_counts(sparse.csr_matrix(np.array([[0, -3]])), "census X")


def write_10x(directory, counts, obs: pd.DataFrame | None = None) -> None:
    """Write counts in the 10x v3 layout (genes x cells matrix, gzipped)."""
    directory.mkdir()
    with gzip.open(directory / "matrix.mtx.gz", "wb") as handle:
        io.mmwrite(handle, sparse.csr_matrix(counts.X.T, dtype=np.int64))
    features = pd.DataFrame({"id": counts.var["gene_ids"], "name": counts.var_names,
                             "type": "Gene Expression"})
    features.to_csv(directory / "features.tsv.gz", sep="\t", header=False, index=False)
    pd.Series(counts.obs_names).to_csv(directory / "barcodes.tsv.gz", header=False, index=False)
    if obs is not None:
        obs.to_csv(directory / "obs.tsv", sep="\t", index_label="barcode")


def test_10x_directory_with_obs_table(tmp_path, counts):
    obs = pd.DataFrame({"sample_id": np.where(np.arange(300) % 2, "1016", "1256"),
                        "tsne1": np.linspace(-1.5, 2.5, 300)}, index=counts.obs_names)
    write_10x(tmp_path / "tenx", counts, obs.iloc[:250])  # 50 cells lack metadata
    read = read_counts(tmp_path / "tenx")
    assert read.shape == counts.shape and (read.X != counts.X).nnz == 0
    assert read.var["gene_ids"].tolist() == counts.var["gene_ids"].tolist()
    assert read.obs["sample_id"].iloc[0] == "1256"  # integer IDs are read as strings
    assert read.obs["sample_id"].isna().sum() == 50
    assert read.obs["tsne1"].dtype == np.float64
    assert read.uns["scalelib"]["source"] == "10x" and read.uns["scalelib"]["obs"] == "obs.tsv"


def test_10x_obs_table_with_foreign_barcodes_is_refused(tmp_path, counts):
    write_10x(tmp_path / "tenx", counts, pd.DataFrame({"x": ["a"]}, index=["NOTACELL-1"]))
    with pytest.raises(ScalelibError, match="no barcode of the matrix"):
        read_counts(tmp_path / "tenx")


def test_pbmc3k_reads_and_builds(pbmc3k_counts):
    counts = pbmc3k_counts
    assert counts.shape == (2700, 32738)
    assert counts.X.nnz == 2_286_884
    assert np.array_equal(counts.X.data, np.round(counts.X.data))
    assert np.median(np.asarray(counts.X.sum(axis=1)).ravel()) == 2197
    assert counts.obs["cell_type"].nunique() == 10  # 9 labels and NA_filtered
    dataset = build_dataset(counts, 64, n_cells=1000, seed=0)
    assert dataset.X.shape == (1000, 64)
    assert dataset.manifest["source"] == "10x"
    assert dataset.manifest["split"]["method"] == "stratified"
    assert dataset.var["gene_id"].str.starts_with("ENSG").all()


def test_kang8_holds_out_whole_donors(kang8_counts):
    counts = kang8_counts
    assert counts.shape == (12261, 1287)
    assert counts.obs["sample_id"].astype(str).str.fullmatch(r"\d+").all()
    dataset = build_dataset(counts, 64, n_cells=4000, holdout="sample_id", seed=1)
    donors = {split: set(dataset.obs.filter(dataset.obs["split"] == split)["sample_id"])
              for split in ("train", "val", "test")}
    assert all(donors.values())
    assert not donors["train"] & donors["val"] and not donors["train"] & donors["test"]
    assert not donors["val"] & donors["test"]
    groups = dataset.manifest["split"]["groups"]
    assert {split: set(g) for split, g in groups.items()} == donors
    assert dataset.manifest["split"]["method"] == "holdout"
