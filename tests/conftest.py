"""Shared fixtures: the real datasets under ../shared/data (skipped when absent), a local
SOMA store in the CELLxGENE Census layout built from real counts (the simulator's without them),
and a small dataset on which training converges within a few hundred steps.
"""

import gzip
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from synthetic import row_order_dataset

from scalelib.data.store import ExpressionDataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CENSUS_BUILD_DATE = "2025-11-08"


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real test data live in ../shared/data of the checkout)")
    return path


@pytest.fixture(scope="session")
def one_factor_dataset() -> ExpressionDataset:
    """2,000 cells whose 8 genes share one latent factor plus noise (split 50/25/25 in row order):
    a masked gene is predicted from the others within a few hundred steps, after which the
    loss stays at the noise, far below the per-gene mean predictor's."""
    rng = np.random.default_rng(0)
    n_cells, n_genes = 2000, 8
    X = 1.0 + rng.normal(size=(n_cells, 1)) + 0.3 * rng.normal(size=(n_cells, n_genes))
    return row_order_dataset(X, n_cells // 2, n_cells // 4, rng)


@pytest.fixture(scope="session")
def pbmc3k_dir() -> Path:
    """10x directory of PBMC 3k (2,700 cells x 32,738 genes, obs.tsv with cell_type)."""
    return _shared("pbmc3k")


@pytest.fixture(scope="session")
def kang8_dir() -> Path:
    """10x directory of Kang et al. 2018 controls (12,261 x 1,287, 8 donors as sample_id)."""
    return _shared("kang8")


@pytest.fixture(scope="session")
def pbmc3k_counts(pbmc3k_dir):
    """PBMC 3k raw counts as read by :func:`read_counts` (do not modify)."""
    from scalelib.data.sources import read_counts

    return read_counts(pbmc3k_dir)


@pytest.fixture(scope="session")
def kang8_counts(kang8_dir):
    """Kang et al. 2018 raw counts as read by :func:`read_counts` (do not modify)."""
    from scalelib.data.sources import read_counts

    return read_counts(kang8_dir)


@dataclass(frozen=True)
class CensusStore:
    """A local SOMA store in the Census layout and the AnnData it was written from."""

    uri: str
    adata: ad.AnnData  # obs indexed by soma_joinid (as strings), var by unique gene name
    n_duplicate_names: int  # feature_name values that repeat (made unique when read)
    real: bool  # real counts (pbmc3k) or simulated

    def primary(self) -> ad.AnnData:
        """The cells the default filter (is_primary_data == True) matches."""
        return self.adata[self.adata.obs["is_primary_data"].to_numpy()].copy()


@pytest.fixture(scope="session")
def census_store(tmp_path_factory) -> CensusStore:
    """pbmc3k (or 3,000 simulated cells) written with tiledbsoma.io.from_anndata under
    census_data/homo_sapiens (measurement RNA, X layer raw), with Census obs columns."""
    pytest.importorskip("tiledbsoma")
    pytest.importorskip("cellxgene_census")
    from scalelib.data.soma_store import write_census_layout

    counts, names, real = _store_counts()
    rng = np.random.default_rng(2025)
    n = counts.n_obs
    tissue = np.where(rng.random(n) < 0.85, "blood", "bone marrow")
    obs = pd.DataFrame({
        "cell_type": counts.obs["cell_type"].astype(str).to_numpy(),
        "assay": np.where(rng.random(n) < 0.7, "10x 3' v1", "10x 3' v2"),
        "tissue": np.where(tissue == "blood", "peripheral blood", "bone marrow"),
        "tissue_general": tissue,
        "disease": np.where(rng.random(n) < 0.8, "normal", "COVID-19"),
        "sex": rng.choice(["female", "male"], n),
        "is_primary_data": rng.random(n) < 0.9,
        "dataset_id": [f"dataset-{i}" for i in rng.integers(0, 6, n)],
        "donor_id": [f"donor-{i}" for i in rng.integers(0, 8, n)],
    }, index=counts.obs_names)
    var = pd.DataFrame({"feature_id": counts.var["gene_ids"].to_numpy(), "feature_name": names},
                       index=counts.var["gene_ids"].to_numpy())
    uri = str(tmp_path_factory.mktemp("census") / "soma")
    write_census_layout(ad.AnnData(X=counts.X, obs=obs, var=var), uri,
                        summary={"census_build_date": CENSUS_BUILD_DATE,
                                 "census_schema_version": "2.1.0"})
    adata = ad.AnnData(X=counts.X, obs=obs.set_axis([str(i) for i in range(n)]),
                       var=pd.DataFrame({"gene_ids": var["feature_id"].to_numpy()},
                                        index=counts.var_names))
    return CensusStore(uri, adata, int(pd.Index(names).duplicated().sum()), real)


def _store_counts() -> tuple[ad.AnnData, np.ndarray, bool]:
    """Raw counts, the gene names as the source spells them (repeats kept), real or not."""
    from scalelib.data.simulate import simulate_counts
    from scalelib.data.sources import read_counts

    path = SHARED_DATA / "pbmc3k"
    if not path.is_dir():
        counts = simulate_counts(3000, 2000, seed=7)
        return counts, counts.var_names.to_numpy(), False
    counts = read_counts(path)
    with gzip.open(path / "features.tsv.gz", "rt") as handle:
        names = np.array([line.split("\t")[1] for line in handle])
    return counts, names, True
