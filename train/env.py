"""Environment facts for reports and checkpoints: CPU, threads, versions, device, git commit."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: str | Path | None = None) -> str | None:
    """HEAD of the repository this code lives in (None outside a git checkout)."""
    where = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """A plain dict for the `env` block of every report JSON."""
    dev = torch.device(device) if device is not None else None
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }
    if dev is not None and dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(device=props.name, compute_capability=f"{props.major}.{props.minor}",
                    cuda=torch.version.cuda, gpu_memory_mb=props.total_memory // 2**20)
    else:
        info["device"] = "cpu"
    return info
