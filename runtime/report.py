"""What every measuring command shares: the environment it ran in (without importing torch), latency
percentiles, console/Markdown tables, atomic JSON reports and the latency-accuracy scatter plot."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.io import atomic_write_json


# --- latency ---------------------------------------------------------------------------------
def latency_summary(ms: Sequence[float], batch: int = 1) -> dict[str, float | int]:
    """p50/p90/p99/mean/min/max of per-call milliseconds and FPS = batch * 1000 / mean ms."""
    if len(ms) == 0:
        return {"n": 0, "p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan"),
                "min": float("nan"), "max": float("nan"), "fps": float("nan")}
    a = np.asarray(ms, np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    mean = float(a.mean())
    return {"n": int(a.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean,
            "min": float(a.min()), "max": float(a.max()), "fps": batch * 1000.0 / mean if mean > 0 else float("inf")}


# --- environment -----------------------------------------------------------------------------
# /proc/cpuinfo flag -> what it is for
X86_FLAGS = {
    "avx2": "AVX2 (ONNX Runtime and PyTorch fast paths)",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI (fast INT8)",
    "avx_vnni": "AVX-VNNI (fast INT8)",
    "avx512_bf16": "AVX-512 BF16 (native bf16)",
    "amx_tile": "AMX tiles",
    "amx_bf16": "AMX bf16",
    "amx_int8": "AMX int8",
}
ARM_FLAGS = {"asimd": "NEON", "asimddp": "dot product (fast INT8)", "bf16": "bf16", "i8mm": "int8 matmul"}


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (x86 `flags`, Arm `Features`); empty where unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_smi_gpus() -> list[dict[str, str]]:
    """GPUs as nvidia-smi lists them (name, compute capability, memory, driver); [] without nvidia-smi."""
    out: list[dict[str, str]] = []
    if shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
            for line in res.stdout.strip().splitlines():
                p = [x.strip() for x in line.split(",")]
                if len(p) == 4:
                    out.append({"name": p[0], "compute_capability": p[1], "memory": p[2], "driver": p[3]})
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def gpu_info() -> list[dict[str, str]]:
    """GPUs for reports: nvidia-smi's list when present; [] otherwise. Jetsons have no nvidia-smi
    before JetPack 6 and report the module through /proc/device-tree/model instead."""
    out = nvidia_smi_gpus()
    model = Path("/proc/device-tree/model")
    if not out and model.is_file():
        name = model.read_text(errors="replace").strip("\x00\n ")
        if "jetson" in name.lower() or "nvidia" in name.lower():
            out.append({"name": name, "driver": "", "memory": ""})
    return out


def environment(threads: int | None = None) -> dict[str, Any]:
    """Machine and library versions for reports; never imports torch (its version is read from metadata)."""
    import cv2

    env: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_features": sorted(cpu_flags() & {*X86_FLAGS, *ARM_FLAGS}),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "gpus": gpu_info(),
    }
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    from importlib import metadata

    for dist in ("torch", "tensorrt", "openvino", "nncf"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    return env


# --- tables ----------------------------------------------------------------------------------
def _cell(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if v != v else f"{v:.{digits}f}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], markdown: bool = False,
                 digits: int = 2, headers: Sequence[str] | None = None) -> str:
    """Rows of dicts -> an aligned console table, or a GitHub Markdown table with `markdown=True`."""
    heads = list(headers or columns)
    cells = [[_cell(r.get(c), digits) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(row) for row in cells])


def write_report(path: str | Path, report: dict[str, Any], threads: int | None = None) -> Path:
    """Write `report` plus an `environment` block as JSON, atomically; returns the path."""
    body = dict(report)
    body.setdefault("environment", environment(threads))
    return atomic_write_json(path, body)


# --- plots -----------------------------------------------------------------------------------
def latency_plot(path: str | Path, points: Sequence[tuple[float, float, str, str]],
                 draw: Callable[[Any], None] | None = None, size: tuple[float, float] = (6, 4),
                 scored: bool = True) -> str | None:
    """Save a PNG of mIoU % (y) against p50 latency in ms (x, log): one labelled dot per
    (latency, miou, label, colour) point, then `draw(ax)` for extras (lines, legend). Returns a note
    instead of writing when there is no point (`scored`: whether the command was given --data to score
    on) or matplotlib is missing."""
    if not points:
        return ("no plot: nothing was both timed and scored (see the status column)" if scored
                else "no plot: pass --data to score mIoU")
    try:
        import matplotlib
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.io import atomic_write

    fig, ax = plt.subplots(figsize=size, dpi=120)
    for x, y, label, colour in points:
        ax.scatter(x, y, s=18, color=colour)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per batch (ms, log)")
    ax.set_ylabel("mIoU (%)")
    ax.grid(True, which="both", alpha=0.3)
    if draw is not None:
        draw(ax)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return None
