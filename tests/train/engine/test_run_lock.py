"""One writer per run folder: a second process is refused with the owner's pid; a dead owner's lock is taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.errors import UserError
from train.engine.run_lock import LOCK_NAME, RunLock, run_lock

HOLD = """
import sys, time
from train.engine.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(run_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_and_a_dead_owners_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        with pytest.raises(UserError, match=rf"{run} is in use by pid {proc.pid} on host .* choose another "
                                            r"train.name"):
            RunLock(run).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    said: list[str] = []
    with RunLock(run, log=said.append):
        assert f'"pid": {os.getpid()}' in (run / LOCK_NAME).read_text()
    assert said and f"left by pid {proc.pid}" in said[0] and "no longer running" in said[0]
    # released: the next command takes it silently
    said.clear()
    with RunLock(run, log=said.append):
        pass
    assert said == []


def test_the_busy_sentence_names_the_option_of_the_command_that_takes_the_lock(tmp_path):
    """train.compare's folder is chosen with --out, not train.name (it passes hint="--out")."""
    run = tmp_path / "compare"
    proc = _holder(run)
    try:
        with pytest.raises(UserError) as e, run_lock(run, hint="--out"):
            pass
        assert str(e.value).endswith("wait for it to finish or stop it, or choose another --out")
        assert "train.name" not in str(e.value)
        with pytest.raises(UserError) as e:
            RunLock(run, hint=None).acquire()
        assert str(e.value).endswith("wait for it to finish or stop it")
        with pytest.raises(UserError, match="or choose another train.name$"):
            RunLock(run).acquire()  # the training commands' default
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_two_training_commands_on_one_run_name(tmp_path):
    """The real commands: while one train.teacher runs, a second on the same name exits 2, naming the pid."""
    pytest.importorskip("train.data")
    root = Path(__file__).resolve().parents[3]
    args = [sys.executable, "-m", "train.teacher", "budget=400", "name=t", f"train.runs_dir={tmp_path}",
            "train.device=cpu", "train.amp=false", "train.threads=1", "recipe=tiny_lraspp_mobilenetv3",
            "data.synthetic.size=64x128", "data.synthetic.num_train=4", "data.synthetic.num_val=2",
            "data.synthetic.cache=false", "data.crop_size=64x128", "batch=2", "data.workers=0",
            "train.log_every=1"]
    first = subprocess.Popen(args, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = tmp_path / "t" / "log.jsonl"
        deadline = time.time() + 120
        while not (log.is_file() and log.read_text().strip()) and time.time() < deadline:
            time.sleep(0.2)
        assert log.is_file(), "the first run did not start"
        second = subprocess.run(args + ["optim.lr=0.5"], cwd=root, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"is in use by pid {first.pid}" in second.stderr and second.stderr.count("\n") == 1
    finally:
        first.kill()
        first.wait()
