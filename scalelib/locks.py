"""Advisory file locks (``fcntl.flock``) shared by the results table and the sweep's run claims.

A lock lives in a small file beside what it guards and is released by the kernel when its
holder exits, killed or not, so a crashed worker never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created when missing) for the ``with`` block.

    Parameters
    ----------
    path
        The lock file; its parent directory is created when missing.
    wait
        Block until the lock is free (True), or give up at once when another process holds it.

    Yields
    ------
    bool
        True when the lock is held; False only with ``wait=False`` when another process has it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock
