"""Atomic file writes and output checks.

`atomic_write(path, write)`: `write(tmp)` fills a temp file in the same folder, which is fsynced and renamed
onto `path`, so a reader sees the old file or the new one, never half of one. The new file gets the mode an
ordinary `open(path, "w")` would (0o666 minus the umask), not mkstemp's 0o600. The temp file's name holds
the writer's pid (`.NAME.PID.<random>.tmp`); temp files of the same target left by a process that no longer runs
(kill -9 during a write) are removed at the next write. An OSError (permission denied, read-only file
system, disk full) becomes one sentence naming the file; the old file is kept.

`check_writable(path, what)`: before long work starts, make sure an output file (or folder) can be
written, so that a wrong `--out` fails in the first second and not after the work.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.errors import UserError


def current_umask() -> int:
    """The process's umask (read from /proc on Linux, so no other thread sees it change)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (a pid we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(path: Path) -> None:
    """Remove `.NAME.PID.*.tmp` files of this target whose writer (PID on this host) has exited."""
    prefix = f".{path.name}."
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for p in entries:
        name = p.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        try:
            p.unlink()
        except OSError:
            pass


def os_error_sentence(e: OSError, path: str | os.PathLike[str], what: str = "file") -> str:
    """One sentence for an OSError while writing `path`."""
    p = Path(path)
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        return f"disk full while writing {what} {p}; the previous file (if any) is kept; free space or choose " \
               f"another location"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied writing {what} {p}; choose a folder you can write to, or fix its permissions"
    if e.errno == errno.EROFS:
        return f"cannot write {what} {p}: the file system is read-only; choose another location"
    return f"cannot write {what} {p} ({e.strerror or e}); choose another location"


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], what: str = "file") -> Path:
    """Call `write(tmp_path)` then atomically rename the temp file to `path`; returns `path`."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise UserError(os_error_sentence(e, path, what)) from e
    except RuntimeError as e:  # torch.save's C++ writer reports a failed write (e.g. a full disk) this way
        _discard(tmp)
        if "write" not in str(e).lower():
            raise
        raise UserError(f"writing {what} {path} failed ({str(e).splitlines()[0][:120]}); the previous file (if "
                        f"any) is kept; check that the disk is not full") from e
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        try:
            os.remove(tmp)
        except OSError:
            pass


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, what: str = "file") -> Path:
    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, w, what)


def atomic_write_text(path: str | os.PathLike[str], text: str, what: str = "file") -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), what)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, what: str = "file") -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", what)


def atomic_write_npy(path: str | os.PathLike[str], array: Any, what: str = "file") -> Path:
    """`np.save` of `array` to exactly `path` (no `.npy` appended), atomically; no pickled objects."""
    import numpy as np

    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return atomic_write(path, w, what)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_writable(path: str | os.PathLike[str] | None, what: str, folder: bool = False) -> None:
    """Raise a UserError unless `path` (a file, or with `folder=True` a folder) can be written.

    Creates the missing parent folders (as the write would) and a probe file in the target folder."""
    if path is None:
        return
    p = Path(path)
    target_dir = p if folder else p.parent
    if not folder and p.is_dir():
        raise UserError(f"{what} {p} is a folder; give a file name")
    if folder and p.exists() and not p.is_dir():
        raise UserError(f"{what} {p} is a file, not a folder; give a folder")
    if not folder and p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"permission denied writing {what} {p}; choose a file you can write, or fix its permissions")
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".write-check.{os.getpid()}.", dir=target_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write {what} {p}: {_reason(e, target_dir)}; choose another location") from e


def _reason(e: OSError, where: Path) -> str:
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied in {where}"
    if e.errno == errno.EROFS:
        return f"{where} is on a read-only file system"
    if e.errno == errno.ENOSPC:
        return f"the disk holding {where} is full"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"a file stands where a folder of {where} should be"
    return e.strerror or str(e)


def check_readable(path: str | os.PathLike[str], what: str) -> None:
    """Raise a UserError naming a permission problem (as such, not as corruption) when `path` can't be read."""
    p = Path(path)
    if p.exists() and not os.access(p, os.R_OK):
        raise UserError(f"permission denied reading {what} {p} (mode {oct(p.stat().st_mode & 0o777)}); ask its "
                        f"owner to make it readable (chmod a+r) or copy it")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()
