"""Atomic file writes: write to a temporary sibling, then rename into place; strict JSON.

A reader never sees a half-written results table or fits file, and a failed write leaves the
previous file untouched. :func:`json_ready` turns NaN into null for every JSON document
scalelib writes. Standard library only (the offline explorer bundles it).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    Parameters
    ----------
    path
        The final file; its parent directory is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.chmod(temporary, _new_file_mode())  # mkstemp creates 0600
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _new_file_mode() -> int:
    return 0o666 & ~current_umask()


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON data: NaN and infinities to None, tuples to lists, dict keys
    to strings, numpy scalars to Python ones (recursively).

    Parameters
    ----------
    value
        A scalar or nested dicts, lists and tuples of them.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_output_file(path: str | Path, *, inputs: tuple[Path, ...] = (),
                      replaceable: Callable[[Path], bool] = lambda _: True,
                      option: str = "--out") -> Path:
    """Refuse an output file that would clobber an input or something else, before any work.

    Parameters
    ----------
    path
        The file about to be written.
    inputs
        Files the command reads; ``path`` must be none of them.
    replaceable
        Whether an existing file at ``path`` is one this command may replace (e.g. a fits file).
    option
        The option that named ``path``, for the message.

    Raises
    ------
    ScalelibError
        ``path`` is an input, a folder, an existing file of another kind, or lies where no file
        can be written.
    """
    from scalelib.errors import ScalelibError

    path = Path(path)
    if any(path.resolve() == Path(source).resolve() for source in inputs):
        raise ScalelibError(f"{option} {path} is an input of this command; choose another file")
    if path.is_dir():
        raise ScalelibError(f"{option} {path} is a folder; name a file in it")
    if path.exists() and not replaceable(path):
        raise ScalelibError(f"{option} {path} exists and is not a file this command writes; "
                            "choose another file or move it aside")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:  # a probe file: permissions alone do not tell (root, read-only or virtual mounts)
        descriptor, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
        os.close(descriptor)
        os.unlink(probe)
    except OSError:
        raise ScalelibError(f"{option} {path} cannot be written ({parent} is not a writable "
                            "folder); choose another path") from None
    return path
