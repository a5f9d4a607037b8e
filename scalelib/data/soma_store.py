"""Read and write SOMA stores in the CELLxGENE Census layout.

The layout (that of the public Census, and of :func:`write_census_layout`): a SOMA Collection
holding ``census_data/<organism>``, an Experiment whose obs has ``soma_joinid`` and the
columns a filter names (``is_primary_data``, ``cell_type``, ``dataset_id``, ``donor_id``,
``assay``, ``tissue``, ``tissue_general``, ``disease``, ...), whose measurement ``RNA`` has var
``feature_id``/``feature_name`` and an X layer ``raw`` of integer counts; optionally
``census_info/summary`` (label/value rows such as ``census_build_date``).
``cellxgene_census.open_soma(uri=...)`` opens such a store like the public Census: it needs
the root Collection only; ``get_anndata`` needs ``census_data/<organism>`` with ``ms/RNA``.

The readers here stream: :func:`matching_cells` reads one column in batches,
:func:`read_obs` the metadata of the drawn cells only, and :func:`spill_counts` the raw
counts of the drawn cells in chunks of consecutive joinids, written to a disk spill.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse
from tqdm.auto import tqdm

from scalelib.data.counts import SpilledRows, SpillWriter
from scalelib.data.sources import check_counts
from scalelib.errors import ScalelibError

if TYPE_CHECKING:  # optional, heavy packages: imported at run time only where needed
    import anndata
    import tiledbsoma

ORGANISM = "Homo sapiens"
MEASUREMENT = "RNA"
X_LAYER = "raw"
OBS_COLUMNS = ("dataset_id", "donor_id", "assay", "cell_type", "tissue", "tissue_general",
               "disease", "sex")
LOCAL_ALTERNATIVES = (
    "--source PATH (an .h5ad file or a 10x directory), --source soma:URI (a local SOMA store "
    "in the Census layout) or --source simulate"
)


def import_census() -> tuple[ModuleType, ModuleType]:
    """Import tiledbsoma and cellxgene_census, or explain how to install them.

    Returns
    -------
    tuple of module
        The ``tiledbsoma`` and ``cellxgene_census`` modules, in that order.

    Raises
    ------
    ScalelibError
        Either package is missing; the message names the install command and local sources.
    """
    try:
        import cellxgene_census
        import tiledbsoma
    except ImportError:
        raise ScalelibError(
            "the Census source needs the optional packages cellxgene-census and tiledbsoma: "
            "pip install 'scalelib[census]'; without them, build from " + LOCAL_ALTERNATIVES
        ) from None
    return tiledbsoma, cellxgene_census


def matching_cells(experiment: tiledbsoma.Experiment, obs_filter: str | None,
                   progress: bool = False) -> np.ndarray:
    """Sorted ``soma_joinid`` of the cells the filter matches (read in batches).

    Parameters
    ----------
    experiment
        Experiment in the Census layout (e.g. from :func:`experiment_of`).
    obs_filter
        SOMA value filter on obs columns; None matches every cell.
    progress
        Show a progress bar over the read batches.

    Returns
    -------
    numpy.ndarray
        The matching joinids in increasing order (int64), never empty.

    Raises
    ------
    ScalelibError
        The filter is refused by SOMA or matches no cell.
    """
    import tiledbsoma

    parts = []
    try:
        reader = experiment.obs.read(value_filter=obs_filter, column_names=["soma_joinid"])
        for table in tqdm(reader, desc="matching cells", unit=" batches", disable=not progress):
            parts.append(table.column("soma_joinid").to_numpy())
    except (tiledbsoma.SOMAError, ValueError, TypeError) as error:
        raise ScalelibError(
            f"the obs filter {obs_filter!r} was refused ({first_line(error)}); write it in "
            "SOMA value-filter syntax over existing obs columns, e.g. \"tissue_general == 'blood'\""
        ) from None
    joinids = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    if len(joinids) == 0:
        raise ScalelibError(f"no cell matches the obs filter {obs_filter!r}; loosen it")
    return joinids


def read_obs(experiment: tiledbsoma.Experiment, joinids: np.ndarray,
             extra: Sequence[str | None] = ()) -> pd.DataFrame:
    """Metadata of the given cells (in their order), indexed by ``soma_joinid`` as a string.

    Reads the columns of :data:`OBS_COLUMNS` and ``extra`` that obs has.

    Parameters
    ----------
    experiment
        Experiment in the Census layout.
    joinids
        ``soma_joinid`` of the cells to read, in the order wanted for the rows.
    extra
        Further columns to read when obs has them (None entries are skipped), e.g. the
        stratify and holdout columns.

    Returns
    -------
    pandas.DataFrame
        One row per joinid, in the order of ``joinids``.
    """
    available = set(experiment.obs.schema.names)
    columns = [c for c in dict.fromkeys((*OBS_COLUMNS, *extra)) if c and c in available]
    table = experiment.obs.read(coords=(joinids,), column_names=["soma_joinid", *columns])
    frame = table.concat().to_pandas().set_index("soma_joinid").reindex(joinids)
    frame.index = pd.Index(joinids.astype(str), name=None)
    return frame


def check_obs_column(experiment: tiledbsoma.Experiment, column: str | None, role: str) -> None:
    """Refuse a ``column`` (to hold out, ...) that obs lacks, naming the columns it has.

    Parameters
    ----------
    experiment
        Experiment whose obs schema is checked.
    column
        Column to look for; None passes.
    role
        What the column is for, as the message says it (``"hold out groups of"``).

    Raises
    ------
    ScalelibError
        obs has no column ``column``.
    """
    names = [c for c in experiment.obs.schema.names if c != "soma_joinid"]
    if column is not None and column not in names:
        raise ScalelibError(
            f"cannot {role} {column!r}: obs has no such column; choose one of {', '.join(names)}"
        )


def read_var(experiment: tiledbsoma.Experiment) -> tuple[pd.DataFrame, int]:
    """Genes of the measurement, indexed by unique name, with ``gene_ids`` and ``soma_joinid``.

    Names come from ``feature_name`` (else ``var_id``, else ``feature_id``) and ids from
    ``feature_id`` (else the name column); rows are in ``soma_joinid`` order.

    Parameters
    ----------
    experiment
        Experiment with the measurement ``RNA``.

    Returns
    -------
    var : pandas.DataFrame
        One row per gene.
    renamed : int
        Number of gene names made unique (``NAME-1``, ... as anndata).
    """
    import anndata as ad

    var_frame = experiment.ms[MEASUREMENT].var
    names = set(var_frame.schema.names)
    name_column = next((c for c in ("feature_name", "var_id", "feature_id") if c in names), None)
    id_column = "feature_id" if "feature_id" in names else name_column
    if name_column is None:
        raise ScalelibError("var has no feature_name or feature_id column; store gene names")
    columns = list(dict.fromkeys(["soma_joinid", name_column, id_column]))
    table = var_frame.read(column_names=columns).concat().to_pandas().sort_values("soma_joinid")
    index = pd.Index(table[name_column].astype(str).to_numpy())
    renamed = int(index.duplicated().sum())
    var = pd.DataFrame({"gene_ids": table[id_column].astype(str).to_numpy(),
                        "soma_joinid": table["soma_joinid"].to_numpy()},
                       index=ad.utils.make_index_unique(index) if renamed else index)
    return var, renamed


def census_summary(census: tiledbsoma.Collection) -> dict[str, str]:
    """``census_info/summary`` as a dictionary (empty when the store has none).

    Parameters
    ----------
    census
        Root Collection of a store in the Census layout.

    Returns
    -------
    dict of str to str
        Only the rows ``census_build_date``, ``census_schema_version`` and
        ``dataset_schema_version`` that the summary holds, label to value.
    """
    try:
        info = census["census_info"]
        frame = info["summary"].read().concat().to_pandas()
    except (KeyError, AttributeError):
        return {}
    keep = ("census_build_date", "census_schema_version", "dataset_schema_version")
    return {row.label: str(row.value) for row in frame.itertuples() if row.label in keep}


def spill_counts(experiment: tiledbsoma.Experiment, joinids: np.ndarray, var: pd.DataFrame,
                 directory: Path, chunk_cells: int, progress: bool = False) -> SpilledRows:
    """Read the raw counts of ``joinids`` in chunks and spill them to ``directory``.

    The next chunk is read in a background thread while the current one is checked
    (:func:`~scalelib.data.sources.check_counts`) and written.

    Parameters
    ----------
    experiment
        Experiment with the X layer ``raw`` in measurement ``RNA``.
    joinids
        ``soma_joinid`` of the cells, sorted increasing; rows of the spill follow this order.
    var
        Genes as :func:`read_var` returns them; its ``soma_joinid`` column gives the column
        order of the spill.
    directory
        Existing folder for the spill files.
    chunk_cells
        Cells per read (positive).
    progress
        Show a progress bar over cells.

    Returns
    -------
    SpilledRows
        The spilled float32 counts, ``len(joinids)`` rows by ``len(var)`` genes.
    """
    layer = _x_layer(experiment)
    lookup = _position_lookup(var["soma_joinid"].to_numpy())
    writer = SpillWriter(directory, len(var))
    chunks = [joinids[i:i + chunk_cells] for i in range(0, len(joinids), chunk_cells)]
    bar = tqdm(total=len(joinids), desc="reading counts", unit=" cells", disable=not progress)
    try:
        read = partial(_read_chunk, layer, lookup=lookup, n_genes=len(var))
        for chunk, matrix in _prefetched(chunks, read):
            check_counts(matrix, f"X[{X_LAYER!r}] of the SOMA store")
            writer.append(matrix)
            bar.update(len(chunk))
        return writer.finish()
    except BaseException:
        writer.close()
        raise
    finally:
        bar.close()


def _prefetched(chunks: list[np.ndarray], read: Callable[[np.ndarray], sparse.csr_matrix]
                ) -> Iterator[tuple[np.ndarray, sparse.csr_matrix]]:
    """Yield ``(chunk, read(chunk))`` in order, reading the next chunk in the background."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, chunks[0]) if chunks else None
        for i, chunk in enumerate(chunks):
            matrix = pending.result()
            pending = pool.submit(read, chunks[i + 1]) if i + 1 < len(chunks) else None
            yield chunk, matrix


def _read_chunk(layer: tiledbsoma.SparseNDArray, joinids: np.ndarray, *, lookup: np.ndarray, n_genes: int
                ) -> sparse.csr_matrix:
    """Raw counts of the given cells (sorted joinids) over all genes, as float32 CSR.

    The read is unordered (a row-major read makes TileDB sort, several times slower); rows
    and genes become int32 positions and scipy's linear-time COO-to-CSR conversion orders them.
    """
    rows, genes, data = [], [], []
    for table in layer.read(coords=(joinids,)).tables():
        rows.append(np.searchsorted(joinids, table.column("soma_dim_0").to_numpy())
                    .astype(np.int32))
        genes.append(lookup[table.column("soma_dim_1").to_numpy()])
        data.append(table.column("soma_data").to_numpy().astype(np.float32))
        del table
    shape = (len(joinids), n_genes)
    if not data:
        return sparse.csr_matrix(shape, dtype=np.float32)
    coo = sparse.coo_matrix((_joined(data), (_joined(rows), _joined(genes))), shape=shape)
    del rows, genes, data
    matrix = coo.tocsr()
    matrix.sort_indices()
    return matrix


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate in place of the list (no copy for a single part)."""
    joined = parts[0] if len(parts) == 1 else np.concatenate(parts)
    parts.clear()
    return joined


def _position_lookup(var_joinids: np.ndarray) -> np.ndarray:
    """Array mapping a var ``soma_joinid`` to its column position."""
    lookup = np.full(int(var_joinids.max()) + 1, -1, dtype=np.int32)
    lookup[var_joinids] = np.arange(len(var_joinids))
    return lookup


def _x_layer(experiment: tiledbsoma.Experiment) -> tiledbsoma.SparseNDArray:
    layers = experiment.ms[MEASUREMENT].X
    if X_LAYER not in layers:
        raise ScalelibError(
            f"measurement {MEASUREMENT!r} has no X layer {X_LAYER!r} (it has "
            f"{', '.join(layers.keys()) or 'none'}); store raw counts there"
        )
    return layers[X_LAYER]


def experiment_of(census: tiledbsoma.Collection, organism: str,
                  uri: str | None) -> tiledbsoma.Experiment:
    """The Experiment of ``organism`` (``census_data/homo_sapiens``), checked for ``RNA``.

    Parameters
    ----------
    census
        Open root Collection in the Census layout.
    organism
        Organism name; lower-cased with spaces as underscores it names the experiment
        (``"Homo sapiens"`` -> ``homo_sapiens``).
    uri
        Where the store is, for messages only (None: the public Census).

    Raises
    ------
    ScalelibError
        The store has no such experiment, or it has no measurement ``RNA``.
    """
    name = organism.strip().lower().replace(" ", "_")
    where = uri or "the Census"
    if "census_data" not in census or name not in census["census_data"]:
        raise ScalelibError(
            f"{where} has no census_data/{name}; give an organism it holds or a store in the "
            "Census layout"
        )
    experiment = census["census_data"][name]
    if MEASUREMENT not in experiment.ms:
        raise ScalelibError(f"{where}: census_data/{name} has no measurement {MEASUREMENT!r}")
    return experiment


def first_line(error: BaseException) -> str:
    """First line of an error's message, for a one-line explanation.

    Parameters
    ----------
    error
        Any exception; one with an empty (or blank) message gives its type name.
    """
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def write_census_layout(
    adata: anndata.AnnData, uri: str | Path, *, organism: str = ORGANISM, summary: dict[str, str] | None = None,
) -> str:
    """Write an AnnData of raw counts as a SOMA store in the Census layout.

    Parameters
    ----------
    adata
        Raw counts in ``X``; obs columns become obs columns (the Census ones such as
        ``is_primary_data``, ``cell_type``, ``dataset_id``, ``donor_id`` make the filters and
        splits work); var needs ``feature_id`` and ``feature_name``.
    uri
        A new directory (or URI) for the store.
    organism
        Experiment name under ``census_data`` (``homo_sapiens``).
    summary
        Rows of ``census_info/summary`` (``census_build_date``, ...).

    Returns
    -------
    str
        The URI of the store.
    """
    import pyarrow as pa

    soma, _ = import_census()
    import tiledbsoma.io
    uri = str(uri)
    name = organism.strip().lower().replace(" ", "_")
    with soma.Collection.create(uri) as root:
        data = root.add_new_collection("census_data")
        experiment_uri = tiledbsoma.io.from_anndata(
            f"{uri}/census_data/{name}", adata, measurement_name=MEASUREMENT,
            X_layer_name=X_LAYER)
        with soma.Experiment.open(experiment_uri) as experiment:
            data.set(name, experiment, use_relative_uri=True)
        rows = summary or {}
        info = root.add_new_collection("census_info")
        frame = info.add_new_dataframe(
            "summary", schema=pa.schema([("label", pa.large_string()),
                                         ("value", pa.large_string())]),
            index_column_names=["soma_joinid"], domain=[(0, max(len(rows), 1) - 1)])
        if rows:
            frame.write(pa.table({"soma_joinid": pa.array(range(len(rows)), pa.int64()),
                                  "label": list(rows), "value": list(rows.values())}))
    return uri

