"""What both fit implementations share: methods, settings and the runs a fit in P uses.

Pure Python (standard library only) and outside :mod:`scalelib.scaling` (whose package imports
numpy and scipy), so that the offline explorer bundles it unchanged: :mod:`scalelib.scaling`
and the explorer's :mod:`scalelib.explore.purefit` import these names instead of keeping copies.
The status rules live beside it in :mod:`scalelib.statuses`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

METHODS = ("grid", "huber")
GRID_POINTS = 200  # values of c tried by the grid method
GRID_TOP = 0.99  # the grid of c stops at GRID_TOP * min(y)
HUBER_DELTA = 1e-3  # Huber loss threshold on log residuals
ALPHA_BOUNDS = (0.0, 5.0)  # exponent bounds of the huber and joint fits
LOG_FLOOR = 25.0  # log coefficients stay above log(min y) - LOG_FLOOR
FLAT_P_VALUE = 0.05  # F-test level above which a power law is no better than a constant
CI_LEVEL = 0.95
CI_NAMES = ("alpha", "a", "c", "bits", "r2_log")
RISING_MESSAGE = ("y increases with x: there is no power-law decline, so c is no floor and "
                  "bits is undefined (NaN)")
TRANSFORMER = "transformer"  # model_family of trained runs; baselines are mean, pca, ridge, knn


def dataset_key(row: Mapping[str, Any]) -> Any:
    """The dataset a run trained on: its content fingerprint (the path in older tables)."""
    return row.get("dataset_fingerprint") or row.get("dataset")


def is_fitted_run(row: Mapping[str, Any]) -> bool:
    """A finished transformer run with a validation loss (baselines and failures are not)."""
    return (row.get("status", "ok") == "ok"
            and (row.get("model_family") or TRANSFORMER) == TRANSFORMER
            and row.get("best_val_mse") is not None)


def scaling_row_mask(rows: Iterable[Mapping[str, Any]]) -> list[bool]:
    """Which runs a fit against P uses: finished transformer runs, per dataset those at its
    largest training set D (a data-size sweep's smaller nested sets would mix D into the fit).

    Parameters
    ----------
    rows
        Results rows (dictionaries in the :mod:`scalelib.results` schema).
    """
    rows = list(rows)
    largest: dict[Any, int] = {}
    for row in rows:
        if is_fitted_run(row):
            key, cells = dataset_key(row), row.get("n_train_cells") or 0
            largest[key] = max(cells, largest.get(key, 0))
    return [is_fitted_run(row) and (row.get("n_train_cells") or 0) == largest[dataset_key(row)]
            for row in rows]
