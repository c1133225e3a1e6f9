"""The child processes of a comparison: each run is a `python -m train.distill` subprocess that stops
with its parent. Ctrl-C and SIGTERM reaching the parent are forwarded to the running child, which saves
last.pt; if the parent dies in any way, the kernel sends the child SIGTERM (Linux's parent-death signal),
so that no orphan trains on or holds its run folder's lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.errors import Terminated, UserError


def child_env() -> dict[str, str]:
    """This environment with the project root on PYTHONPATH, so `-m train.distill` imports from any folder."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}


def _child_setup(parent: int) -> Callable[[], None]:
    """A `preexec_fn` that puts the child in its own process group and makes it receive SIGTERM when this
    process dies in any way (kill -9 included; Linux's PR_SET_PDEATHSIG): the child then saves last.pt and
    exits, and no orphan keeps training or holds its run folder's lock."""

    def arm() -> None:
        os.setpgid(0, 0)
        if sys.platform.startswith("linux"):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the signal was armed
                os._exit(128 + int(signal.SIGTERM))

    return arm


def run_child(cmd: list[str]) -> int:
    """Run one command of the comparison and return its exit code. The child runs in its own process group
    (a terminal's Ctrl-C reaches this process only) and dies with this process; SIGINT and SIGTERM received
    meanwhile are forwarded to it, this process waits for it to save and exit, then raises
    `KeyboardInterrupt` or `Terminated` (exit 130 or 143)."""
    proc = subprocess.Popen(cmd, env=child_env(), preexec_fn=_child_setup(os.getpid()))
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if received:
        raise Terminated() if received[-1] == signal.SIGTERM else KeyboardInterrupt()
    return rc


def wait_for_folder(run_dir: Path, timeout: float = 120.0, poll: float = 0.5) -> None:
    """Wait while another process holds `run_dir`'s lock (the run of an interrupted comparison that is
    still saving); after `timeout` the run starts anyway and reports the folder as busy."""
    from train.engine.run_lock import RunLock

    if not (run_dir / ".lock").is_file():
        return
    deadline, said = time.monotonic() + timeout, False
    while True:
        try:
            RunLock(run_dir, log=lambda _: None).acquire().release()
            return
        except UserError:
            if time.monotonic() > deadline:
                return
            if not said:
                print(f"[compare] {run_dir} is still held by an earlier run (stopping); waiting for it", flush=True)
                said = True
            time.sleep(poll)
