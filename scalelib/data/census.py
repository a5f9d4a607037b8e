"""Datasets drawn from the CELLxGENE Census or any SOMA store in the Census layout, streamed.

The same code reads the public Census (``cellxgene_census.open_soma(census_version=...)``,
after a quick reachability probe) and a local store (``open_soma(uri=...)``) in the Census
layout (see :mod:`scalelib.data.soma_store`, whose :func:`write_census_layout` writes one from
an AnnData).

How a build streams (:func:`build_census_dataset`):

1. read the ``soma_joinid`` of every cell the obs filter matches (8 bytes per matching cell;
   the filter defaults to ``is_primary_data == True``), sorted;
2. draw ``max(n_cells)`` of them with the seeded generator (child 0 of ``seed``, as for files),
   and read the metadata columns of the drawn cells only;
3. read the raw counts of the drawn cells over all genes in chunks of ``chunk_cells`` cells
   (the next chunk is fetched while the current one is checked), and append each chunk to a
   spill of compressed rows in a temporary directory (:class:`~scalelib.data.counts.SpillWriter`):
   the network is read once;
4. run the shared builder (:func:`~scalelib.data.build.assemble_dataset`) on the spill, read
   back block by block: two passes for seurat_v3 over the training cells, one for the
   selected genes.

Peak memory: the matching joinids, the drawn cells' metadata, one or two chunks of counts,
one block of the spill, per-gene vectors, and the final dense matrix (cells x selected genes);
it does not grow with the number of genes or with the counts of the drawn cells, which stay on
disk (8 bytes per non-zero, removed at the end). The alternatives were worse: keeping the
drawn cells' counts in memory for scanpy costs those bytes in RAM (plus scanpy's copies), and
querying the Census three times (two HVG passes, then the selected genes) triples the network
reads. Measured (``benchmarks/census_build.py``) on a local store of 250,000 cells x 25,000
genes, drawing the rich regime (200,000 cells, 312 million non-zeros, 512 genes): 42 s and
1.0 GB peak RSS (0.36 GB of it imports, 0.41 GB the final matrix), against 66 s and 17 GB for
``get_anndata`` of the same cells followed by scanpy, which chose the same 512 genes.
"""

from __future__ import annotations

import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from scalelib.data.build import assemble_dataset
from scalelib.data.soma_store import (
    LOCAL_ALTERNATIVES,
    MEASUREMENT,
    ORGANISM,
    X_LAYER,
    census_summary,
    check_obs_column,
    experiment_of,
    first_line,
    import_census,
    matching_cells,
    read_obs,
    read_var,
    spill_counts,
)
from scalelib.data.splits import (
    assign_splits,
    cell_sizes,
    check_fractions,
    child_rngs,
    draw_positions,
)
from scalelib.data.store import ExpressionDataset, hash_strings
from scalelib.data.subsample import check_strategies
from scalelib.errors import ScalelibError

if TYPE_CHECKING:  # optional, heavy package: imported at run time by import_census only
    import tiledbsoma

# The current long-term-supported Census release (the "stable" alias since November 2025;
# the previous LTS is "2025-01-30"). Pinned so that a dataset is reproducible.
DEFAULT_CENSUS_VERSION = "2025-11-08"
DEFAULT_OBS_FILTER = "is_primary_data == True"
CHUNK_CELLS = 2000
CENSUS_PROBE_URLS = (  # the release directory and the region of the public Census bucket
    "https://census.cellxgene.cziscience.com/cellxgene-census/v1/release.json",
    "https://s3.us-west-2.amazonaws.com/",
)
PROBE_TIMEOUT_S = 5.0
TILEDB_CONFIG = {
    "soma.init_buffer_bytes": 128 * 1024**2,  # the census default is 1 GiB per read buffer
    "py.init_buffer_bytes": 128 * 1024**2,
    "vfs.s3.connect_timeout_ms": 5000,
    "vfs.s3.connect_max_tries": 3,
}


def build_census_dataset(
    n_genes: int,
    n_cells: int | Sequence[int],
    *,
    uri: str | None = None,
    census_version: str = DEFAULT_CENSUS_VERSION,
    organism: str = ORGANISM,
    obs_filter: str | None = DEFAULT_OBS_FILTER,
    seed: int = 0,
    stratify: str | None = "cell_type",
    holdout: str | None = None,
    split_fractions: Sequence[float] = (0.9, 0.05, 0.05),
    regime: str = "custom",
    chunk_cells: int = CHUNK_CELLS,
    spill_dir: str | Path | None = None,
    progress: bool = True,
    subsample: Sequence[str] = ("random",),
    balance_by: str | None = None,
) -> ExpressionDataset:
    """Draw cells from the Census (or a SOMA store in its layout) and build a dataset.

    Parameters
    ----------
    n_genes
        Number of highly variable genes kept (the vocabulary size V).
    n_cells
        Cells to draw, or a list of nested data sizes (the largest is drawn).
    uri
        A SOMA store in the Census layout (local path or URI); None opens the public Census.
    census_version
        Census release opened when ``uri`` is None (a pinned LTS release by default).
    organism
        Experiment to read (``"Homo sapiens"`` reads ``census_data/homo_sapiens``).
    obs_filter
        SOMA value filter on obs (see :func:`compose_obs_filter`); None matches every cell.
    seed
        Seed of the draw, the split and the training order.
    stratify, holdout, split_fractions
        Split design (see :func:`scalelib.data.preprocess.build_dataset`): label column whose
        proportions every split keeps, column whose groups go whole to one split (e.g.
        ``holdout="dataset_id"`` or ``"donor_id"``; takes precedence over ``stratify``), and
        train, val and test fractions.
    regime
        Regime label recorded in the manifest.
    chunk_cells
        Cells per read of raw counts.
    spill_dir
        Where the temporary spill of raw counts goes (the system temporary folder when None);
        put it on the disk that will hold the dataset.
    progress
        Show progress bars.
    subsample, balance_by
        Strategies of the nested training orders and the column ``rebalanced`` evens out
        (see :mod:`scalelib.data.subsample`).

    Returns
    -------
    ExpressionDataset
        The built dataset (written by :func:`~scalelib.data.build.assemble_dataset`), with the
        store, release, filter and drawn joinids recorded in its provenance.
    """
    if chunk_cells < 1:
        raise ScalelibError("chunk_cells must be a positive integer")
    soma, census_module = import_census()
    fractions = check_fractions(split_fractions)
    strategies = check_strategies(subsample, balance_by=balance_by)
    balanced = balance_by if "rebalanced" in strategies else None
    with open_census(census_module, soma, uri=uri, census_version=census_version) as census:
        experiment = experiment_of(census, organism, uri)
        check_obs_column(experiment, holdout, "hold out groups of")
        check_obs_column(experiment, balanced, "rebalance by")
        joinids = matching_cells(experiment, obs_filter, progress)
        sizes = cell_sizes(n_cells, len(joinids), what="the obs filter matches")
        drawn = joinids[draw_positions(len(joinids), sizes[-1], child_rngs(seed, 3)[0])]
        obs = read_obs(experiment, drawn, (stratify, holdout, balanced))
        # the builder splits again (same seed); this fails a bad design before any counts
        assign_splits(obs, fractions, child_rngs(seed, 3)[1], stratify, holdout)
        var, renamed = read_var(experiment)
        version = census_version if uri is None else census_summary(census).get(
            "census_build_date")
        query = {"organism": organism, "measurement": MEASUREMENT, "X_layer": X_LAYER,
                 "obs_filter": obs_filter, "n_matching_cells": len(joinids)}
        with _spill_directory(spill_dir) as directory:
            counts = spill_counts(experiment, drawn, var, directory, chunk_cells, progress)
            provenance = {
                "source": "census" if uri is None else "soma",
                "uri": uri or "public CELLxGENE Census", "census_version": version,
                "census_summary": census_summary(census), **query, "chunk_cells": chunk_cells,
                "renamed_duplicate_gene_names": renamed, "spilled_nonzeros": counts.nnz,
                "drawn_joinids_sha256": hash_strings([str(j) for j in drawn]),
            }
            return assemble_dataset(
                obs, var.drop(columns="soma_joinid"), counts, n_genes, sizes=sizes, seed=seed,
                stratify=stratify, holdout=holdout, split_fractions=fractions, regime=regime,
                provenance=provenance, extra_packages=("tiledbsoma", "cellxgene-census"),
                manifest_extra={"census_version": version, "obs_filter": obs_filter,
                                "query": query},
                subsample=strategies, balance_by=balanced,
            )


def compose_obs_filter(
    base: str | None = DEFAULT_OBS_FILTER,
    *,
    tissue: Sequence[str] = (),
    assay: Sequence[str] = (),
    disease: Sequence[str] = (),
    extra: str | None = None,
) -> str | None:
    """The obs value filter: ``base`` and the extra terms, joined with ``and``.

    Parameters
    ----------
    base
        The default term (``is_primary_data == True``); None or ``""`` drops it.
    tissue
        Values matched against ``tissue_general`` or ``tissue`` (``"blood"``, ``"lung"``).
    assay, disease
        Values matched against ``assay`` (``"10x 3' v3"``) and ``disease`` (``"normal"``).
    extra
        A further term in SOMA value-filter syntax (``"sex == 'female'"``).

    Returns
    -------
    str or None
        The single term, or every term in parentheses joined with ``and``; None when there is
        no term.
    """
    terms = [base] if base else []
    if tissue:
        values = _values(tissue)
        terms.append(f"tissue_general in {values} or tissue in {values}")
    for column, values in (("assay", assay), ("disease", disease)):
        if values:
            terms.append(f"{column} in {_values(values)}")
    if extra:
        terms.append(extra)
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else " and ".join(f"({term})" for term in terms)


def _values(values: Sequence[str]) -> str:
    return "[" + ", ".join(repr(str(value)) for value in values) + "]"


@contextmanager
def open_census(census_module: ModuleType, soma: ModuleType, *, uri: str | None,
                census_version: str) -> Iterator[tiledbsoma.Collection]:
    """Open the public Census (after a quick reachability probe) or a store at ``uri``.

    A context manager: the Collection is closed on exit.

    Parameters
    ----------
    census_module, soma
        The ``cellxgene_census`` and ``tiledbsoma`` modules (from
        :func:`~scalelib.data.soma_store.import_census`).
    uri
        Local path or URI of a store in the Census layout; None opens the public Census.
    census_version
        Census release opened when ``uri`` is None.

    Yields
    ------
    tiledbsoma.Collection
        The open root Collection.

    Raises
    ------
    ScalelibError
        No store at a local ``uri``, the store cannot be opened, the Census is unreachable or
        the release is unknown.
    """
    if uri is not None:
        _check_local_uri(uri)
        try:
            census = census_module.open_soma(uri=uri, tiledb_config=TILEDB_CONFIG)
        except soma.SOMAError as error:
            raise ScalelibError(
                f"cannot open {uri} as a SOMA store in the Census layout ({first_line(error)});"
                " it must be a SOMA Collection holding census_data/<organism>"
            ) from None
    else:
        check_census_reachable()
        census = _open_public(census_module, soma, census_version)
    with census:
        yield census


def _open_public(census_module: ModuleType, soma: ModuleType,
                 census_version: str) -> tiledbsoma.Collection:
    try:
        return census_module.open_soma(census_version=census_version,
                                       tiledb_config=TILEDB_CONFIG)
    except ValueError as error:
        raise ScalelibError(
            f"{first_line(error)}; pass a Census release such as --census-version "
            f"{DEFAULT_CENSUS_VERSION}"
        ) from None
    except (OSError, soma.SOMAError) as error:  # requests' errors are OSErrors
        raise ScalelibError(
            f"cannot open the CELLxGENE Census ({first_line(error)}); build from "
            + LOCAL_ALTERNATIVES
        ) from None


def check_census_reachable(urls: Sequence[str] | None = None,
                           timeout: float | None = None) -> None:
    """Raise :class:`ScalelibError` unless every Census endpoint answers HTTPS in time.

    The Census client fetches its release directory over HTTPS without a timeout, and TileDB
    retries S3 for minutes, so without a network a plain ``open_soma`` can hang. This probe
    sends a HEAD request to each endpoint, in parallel, and gives up after ``timeout`` seconds
    (name lookup included); any HTTP answer, an error status too, counts as reachable.

    Parameters
    ----------
    urls
        Endpoints to try (default :data:`CENSUS_PROBE_URLS`).
    timeout
        Seconds allowed (default :data:`PROBE_TIMEOUT_S`).
    """
    urls = CENSUS_PROBE_URLS if urls is None else urls
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    failures: dict[str, str] = {}
    threads = [threading.Thread(target=_probe, args=(url, timeout, failures), daemon=True)
               for url in urls]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for url, thread in zip(urls, threads):
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            failures.setdefault(url, f"no answer in {timeout:g} s")
    if failures:
        url = next(u for u in urls if u in failures)
        reason = failures[url]
        raise ScalelibError(
            f"cannot reach the CELLxGENE Census ({url}: {reason}); without internet, "
            f"build from {LOCAL_ALTERNATIVES}"
        )


def _probe(url: str, timeout: float, failures: dict[str, str]) -> None:
    """Record why ``url`` gives no HTTP answer (nothing when it answers)."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        pass  # an HTTP status is an answer: the host is reachable
    except (OSError, ValueError) as error:  # URLError, timeouts, TLS errors are OSErrors
        reason = getattr(error, "reason", None) or error
        failures[url] = str(reason) or type(error).__name__


def _check_local_uri(uri: str) -> None:
    if "://" not in uri and not Path(uri).exists():
        raise ScalelibError(f"no SOMA store at {uri}; check the path after soma:")


@contextmanager
def _spill_directory(parent: str | Path | None) -> Iterator[Path]:
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".scalelib-spill-", dir=parent) as directory:
        yield Path(directory)


