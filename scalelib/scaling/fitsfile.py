"""The fits JSON file: strict-JSON writing (atomic) and reading.

The layout is documented in the package docstring (:mod:`scalelib.scaling`), which the
notebooks and the report rely on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scalelib import __version__
from scalelib.atomic import atomic_path, json_ready
from scalelib.errors import ScalelibError
from scalelib.scaling.joint import JointFit
from scalelib.scaling.powerlaw import PowerLawFit


@dataclass(frozen=True)
class FitsFile:
    """The contents of a fits JSON file (layout in :mod:`scalelib.scaling`)."""

    x: str
    y: str
    fits: tuple[PowerLawFit, ...]
    joint_fits: tuple[JointFit, ...] = ()
    created: str = ""
    scalelib_version: str = __version__


def fits_document(fits: Sequence[PowerLawFit], *, x: str = "params", y: str = "best_val_mse",
                  joint_fits: Sequence[JointFit] = ()) -> dict[str, Any]:
    """The JSON-ready document :func:`write_fits` writes (NaN already replaced by None).

    Parameters
    ----------
    fits
        Power-law fits (``fits`` of the document).
    x, y
        Names of the columns the fits used.
    joint_fits
        Joint ``L(N, D)`` fits (``joint_fits`` of the document).

    Returns
    -------
    dict
        ``x``, ``y``, ``created`` (UTC, now), ``scalelib_version``, ``fits`` and
        ``joint_fits``, in the layout of :mod:`scalelib.scaling`.
    """
    return json_ready({
        "x": x, "y": y,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scalelib_version": __version__,
        "fits": [fit.to_dict() for fit in fits],
        "joint_fits": [fit.to_dict() for fit in joint_fits],
    })


def write_fits(fits: Sequence[PowerLawFit], path: str | Path, *, x: str = "params",
               y: str = "best_val_mse", joint_fits: Sequence[JointFit] = ()) -> Path:
    """Write fits as strict JSON, atomically (temporary file, then rename).

    Parameters
    ----------
    fits
        Power-law fits to write.
    path
        Destination JSON file.
    x, y
        Names of the columns the fits used.
    joint_fits
        Joint ``L(N, D)`` fits to write alongside.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    text = json.dumps(fits_document(fits, x=x, y=y, joint_fits=joint_fits), indent=1,
                      allow_nan=False)
    with atomic_path(path) as temporary:
        temporary.write_text(text + "\n")
    return path


def read_fits(path: str | Path) -> FitsFile:
    """Read a fits JSON file written by :func:`write_fits`.

    Parameters
    ----------
    path
        The JSON file.

    Raises
    ------
    ScalelibError
        The file is missing or not in the fits layout.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
        return FitsFile(
            x=document["x"], y=document["y"],
            fits=tuple(PowerLawFit.from_dict(f) for f in document["fits"]),
            joint_fits=tuple(JointFit.from_dict(f) for f in document.get("joint_fits", [])),
            created=document.get("created", ""),
            scalelib_version=document.get("scalelib_version", ""),
        )
    except FileNotFoundError:
        raise ScalelibError(f"no fits file at {path}; run `scalelib fit` first") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ScalelibError(f"{path} is not a scalelib fits file ({error}); rewrite it "
                            "with write_fits or `scalelib fit --out`") from None
