"""The two kinds of error (after Polygraphy): a `UserError` is something the user can fix and is
printed as one sentence without a traceback; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
    """Bad input or a missing dependency: the message names the file or value and what to do."""


class MissingDependency(UserError):
    """An optional package is not installed; the message says what to install."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, Kubernetes and systemd send to stop a job), handled like Ctrl-C: the command
    finishes cleanly (training saves last.pt, a video is finalised) and exits with 128 + 15 = 143."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread, as SIGINT raises KeyboardInterrupt.
    Does nothing outside the main thread (signal handlers can only be set there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def cli_main(fn: F) -> F:
    """Wrap a CLI `main(argv) -> int` so that user errors print one line and exit with code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Terminated:
            print("terminated (SIGTERM)", file=sys.stderr)
            return Terminated.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]
