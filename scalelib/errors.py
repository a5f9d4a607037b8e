"""The one exception type for problems a user can fix, and the guard that turns read failures
into it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ScalelibError(Exception):
    """A problem caused by input (a path, a name, data); the message names the fix.

    The command line prints the message without a traceback and exits with status 2.
    """


@contextmanager
def read_failures(path: object, fix: str) -> Iterator[None]:
    """Turn any failure to read ``path`` into one :class:`ScalelibError` line naming ``fix``.

    Readers of damaged files fail in many ways, some of them not ``Exception`` subclasses (a
    Rust panic inside polars is a ``BaseException``); only interrupts and exits pass through.

    Parameters
    ----------
    path
        What was being read (named in the message).
    fix
        What the user should do, e.g. ``"rebuild it with `scalelib data build`"``.
    """
    try:
        yield
    except (ScalelibError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as error:  # Rust panics are BaseException (see the docstring)
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ScalelibError(f"cannot read {path} ({detail}); {fix}") from error
