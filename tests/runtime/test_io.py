"""Atomic writes keep the umask, clean their own orphans and fail in one sentence; outputs are checked first."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest

from runtime.errors import UserError
from runtime.io import (
    atomic_write,
    atomic_write_npy,
    atomic_write_text,
    check_writable,
    current_umask,
    remove_orphans,
)


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o022)
    try:
        assert current_umask() == 0o022
        p = atomic_write_text(tmp_path / "a.json", "{}")
        assert stat.S_IMODE(p.stat().st_mode) == 0o644  # mkstemp alone gives 0o600
        os.umask(0o077)
        q = atomic_write_text(tmp_path / "b.json", "{}")
        assert stat.S_IMODE(q.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_orphans_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    orphan = tmp_path / f".last.pt.{dead_pid}.abc123.tmp"
    live = tmp_path / f".last.pt.{os.getpid()}.def456.tmp"  # a write of this process in progress
    other = tmp_path / f".best.pt.{dead_pid}.xyz.tmp"  # another target: not ours to remove
    for p in (orphan, live, other):
        p.write_bytes(b"partial")
    atomic_write_text(tmp_path / "last.pt", "new")
    assert not orphan.exists() and live.exists() and other.exists()
    assert (tmp_path / "last.pt").read_text() == "new"
    remove_orphans(tmp_path / "best.pt")
    assert not other.exists()


def test_a_full_disk_keeps_the_old_file_and_says_so(tmp_path):
    target = atomic_write_text(tmp_path / "last.pt", "old")

    def full(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match="disk full while writing .*last.pt; the previous file"):
        atomic_write(target, full)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_check_writable_names_what_cannot_be_written(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"cannot write --json file .*afile/out.json: a file stands where"):
        check_writable(blocker / "out.json", "--json file")
    with pytest.raises(UserError, match="is a folder; give a file name"):
        check_writable(tmp_path, "--json file")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_writable(blocker, "--out folder", folder=True)
    check_writable(tmp_path / "new" / "deep" / "out.json", "--json file")  # creatable: fine
    assert (tmp_path / "new" / "deep").is_dir() and not any((tmp_path / "new" / "deep").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_permission_denied(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match="permission denied"):
            check_writable(ro / "x.json", "--json file")
    finally:
        ro.chmod(0o700)


def test_atomic_write_npy_writes_the_array_to_exactly_that_path_with_the_umask(tmp_path):
    import numpy as np

    a = np.arange(12, dtype=np.float16).reshape(3, 4)
    old = os.umask(0o027)
    try:
        p = atomic_write_npy(tmp_path / "t.values", a)  # no .npy appended, unlike np.save(name)
    finally:
        os.umask(old)
    assert p == tmp_path / "t.values" and stat.S_IMODE(p.stat().st_mode) == 0o640
    got = np.load(p, allow_pickle=False)
    assert got.dtype == np.float16 and np.array_equal(got, a)
    with pytest.raises(ValueError, match="allow_pickle"):  # no pickled objects; the old file is kept
        atomic_write_npy(p, np.array([{"a": 1}], dtype=object))
    assert np.array_equal(np.load(p), a) and [q.name for q in tmp_path.iterdir()] == ["t.values"]
