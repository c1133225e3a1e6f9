"""One writer per run folder.

`RunLock(run_dir)` holds `run_dir/.lock` for the life of a training command: an exclusive `fcntl.flock` on
the file, which the kernel releases when the process exits in any way (kill -9 included), and in the file
the owner's pid, host and start time, for the message another command gets:

    error: runs/demo/teacher is in use by pid 4242 on host gpu01 (since 2026-12-02 07:10:03); wait for it to
    finish or stop it, or choose another train.name

The last clause names the option that picks another folder, as the user of the command that takes the
lock types it (`hint`): `train.name` for the training commands, `--out` for train.compare's folder.

A lock file left by a process that has died (its flock is gone) is taken over, with a line saying whose it
was. Where flock is not supported (some network file systems) the pid in the file decides: a lock whose pid
runs on this host, or that names another host, is respected.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from runtime.errors import UserError
from runtime.io import check_writable, os_error_sentence, pid_alive

LOCK_NAME = ".lock"


class RunLock:
    """Exclusive ownership of a run folder; a context manager (see the module docstring)."""

    def __init__(self, run_dir: str | Path, log: Any = print, *, hint: str | None = "train.name") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.log = log
        self.hint = hint  # the option that chooses another folder (None: no such option to name)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        check_writable(self.run_dir, "run folder", folder=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(os_error_sentence(e, self.path, "run lock")) from e
        try:
            previous = _read(fd)
            if not _flock(fd):
                raise UserError(self._busy(previous))
            if previous and not _flock_supported(fd) and _owner_alive(previous):
                raise UserError(self._busy(previous))
            if previous and previous.get("pid") != os.getpid():
                self.log(f"taking over the lock of {self.run_dir} left by pid {previous.get('pid')} on host "
                         f"{previous.get('host')}, which is no longer running")
            me = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file is a free one
        except OSError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def _busy(self, owner: dict[str, Any] | None) -> str:
        who = (f"pid {owner.get('pid')} on host {owner.get('host')} (since {owner.get('since')})"
               if owner else "another process")
        other = f", or choose another {self.hint}" if self.hint else ""
        return f"{self.run_dir} is in use by {who}; wait for it to finish or stop it{other}"

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any] | None:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        obj = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _flock(fd: int) -> bool:
    """Try to take the exclusive flock; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the pid check alone decides
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return True
        raise
    return True


def _flock_supported(fd: int) -> bool:
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # re-taking our own lock succeeds
        return True
    except (ImportError, OSError):
        return False


def _owner_alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell: respect it
    pid = owner.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and pid_alive(pid)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, env: Any = None, take: bool = True, *, hint: str | None = "train.name"
             ) -> Iterator[None]:
    """Hold the lock of `run_dir` on the process that writes it (rank 0 of `env`, a train.distributed.DistEnv;
    None: this process); `take=False` holds nothing. Under DDP, whether rank 0 got it is shared, so that
    every rank stops when the folder is busy (instead of waiting at a barrier). `hint`: the option that
    chooses another folder, named in the busy sentence (train.compare: "--out")."""
    lock, error = None, None
    if take and (env is None or env.is_main):
        try:
            lock = RunLock(run_dir, hint=hint).acquire()
        except UserError as e:
            error = e
    if env is not None and env.distributed:
        import torch

        from train.engine import distributed as D

        flag = D.broadcast_(torch.tensor([0 if error is None else 1], device=env.device), 0)
        if error is None and int(flag.item()):
            raise UserError(f"{run_dir} is in use by another process (rank 0 could not lock it)")
    if error is not None:
        raise error
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
