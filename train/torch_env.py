"""The torch view of the environment for training reports and checkpoints: runtime.machine's block (what
the machine is) plus torch's version and threads, the training device and its compute capability, and
the git commit of the code."""

from __future__ import annotations

import functools
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from runtime.machine import environment


@functools.lru_cache(maxsize=8)
def git_commit(repo: str | Path | None = None) -> str | None:
    """HEAD of the repository this code lives in (None outside a git checkout); asked once per process."""
    where = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def torch_environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """`runtime.machine.environment()` with torch's threads, plus torch's version, the git commit and the
    training device (`device`: "cpu", or a CUDA device's name, compute capability, CUDA version and memory):
    the `env` block of every training report JSON."""
    info = environment(torch.get_num_threads())
    info.update(torch=torch.__version__, git_commit=git_commit(), device="cpu")
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(device=props.name, compute_capability=f"{props.major}.{props.minor}",
                    cuda=torch.version.cuda, gpu_memory_mb=props.total_memory // 2**20)
    return info


def peak_memory_mb(device: torch.device) -> float:
    """GPU allocator peak on CUDA, else the process's peak RSS (Linux reports KiB, macOS bytes)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
