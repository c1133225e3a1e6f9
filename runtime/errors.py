"""The two kinds of error (after Polygraphy): a `UserError` is something the user can fix and is
printed as one sentence without a traceback; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
    """Bad input or a missing dependency: the message names the file or value and what to do."""


class MissingDependency(UserError):
    """An optional package is not installed; the message says what to install."""


def cli_main(fn: F) -> F:
    """Wrap a CLI `main(argv) -> int` so that user errors print one line and exit with code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]
