"""The report's downstream-probe numbers: read from a results directory's ``probes.parquet``
(written by ``scalelib probe``), never computed from checkpoints here.

:func:`probe_numbers` is the ``probes`` entry of ``numbers.json``: the label, the split
statement, the best score of each subsampling strategy, model family and classifier, and the
saturation point of each curve of score against training-set size D with its bootstrap interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from scalelib.probes import PROBES_FILE, read_probes
from scalelib.scaling.probe_summary import best_scores
from scalelib.scaling.saturation import SATURATION_FRACTION, saturation_points

SATURATION_BOOTSTRAP, SATURATION_SEED = 200, 0


def probes_of(results_dir: str | Path) -> pl.DataFrame:
    """The probes table of a results directory (empty when it has none).

    Parameters
    ----------
    results_dir
        A sweep or demo directory, or a prepared report folder.
    """
    return read_probes(Path(results_dir) / PROBES_FILE)


def probe_numbers(probes: pl.DataFrame) -> dict[str, Any] | None:
    """The ``probes`` entry of ``numbers.json`` (None without probes).

    Parameters
    ----------
    probes
        A probes table (:mod:`scalelib.probes`); with several labels, the most frequent.
    """
    if not probes.height:
        return None
    label = probes["label"].mode().sort()[0]
    probes = probes.filter(pl.col("label") == label)
    saturation = saturation_points(probes, n_bootstrap=SATURATION_BOOTSTRAP,
                                   seed=SATURATION_SEED)
    return {
        "label": label,
        "splits": probes["split"].unique().sort().to_list(),
        "n_runs": probes.filter(pl.col("model_family") == "transformer")["run_id"].n_unique(),
        "train_sizes": sorted(probes["n_train_cells"].drop_nulls().unique().to_list()),
        "subsamples": sorted(probes["subsample"].drop_nulls().unique().to_list()),
        "best": best_scores(probes).to_dicts(),
        "saturation": saturation.drop("dataset_fingerprint").to_dicts(),
        "fraction": SATURATION_FRACTION,
        "n_bootstrap": SATURATION_BOOTSTRAP,
    }
