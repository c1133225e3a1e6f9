"""What this machine is, in one place, without importing torch: the CPU (model, feature flags and the
bf16 / VNNI / AMX predicates built on them), its cores (usable, physical, logical), the NVIDIA GPUs, whether
it is a Jetson (module, L4T release, JetPack), library versions, and the `environment()` block that every
report embeds (runtime.report's `write_report`; train.torch_env adds the torch view).

Parsing is separate from reading: `parse_*` functions take the text of /proc/cpuinfo, nvidia-smi's CSV,
the device-tree model or /etc/nv_tegra_release and are tested on recorded text; the readers take the
path (or command) so that tests can point them elsewhere. Nothing here raises on a machine that lacks
a file or a tool: the fact is then empty (set(), [], None).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
CPU_SYSFS = Path("/sys/devices/system/cpu")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
L4T_RELEASE = Path("/etc/nv_tegra_release")

X86_MACHINES = ("x86_64", "amd64", "i686")

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

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
AMX_FLAGS = frozenset({"amx_tile"})


def _read(path: Path) -> str | None:
    """The text of `path`, or None when it is absent or unreadable."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def tool_output(cmd: list[str], timeout: float = 15.0) -> str | None:
    """Stripped stdout (stderr when stdout is empty) of `cmd`; None when the tool is missing, fails to run,
    exits non-zero or prints nothing."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return (res.stdout or res.stderr).strip() or None


def dist_version(dist: str) -> str | None:
    """The installed version of distribution `dist` (pip metadata), None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --- CPU -------------------------------------------------------------------------------------
def parse_cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags in /proc/cpuinfo text: the first `flags` (x86) or `Features` (Arm) line; empty
    when there is none."""
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("flags", "features")) and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def parse_cpu_model(cpuinfo: str) -> str | None:
    """The CPU's name in /proc/cpuinfo text: the first `model name` (x86), `Hardware` or `cpu model` line;
    None when there is none."""
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
            return line.split(":", 1)[1].strip() or None
    return None


def cpu_flags(path: Path = CPUINFO) -> set[str]:
    """This CPU's feature flags (/proc/cpuinfo); empty where unreadable (not Linux)."""
    return parse_cpu_flags(_read(path) or "")


def cpu_model(path: Path = CPUINFO) -> str:
    """This CPU's model name from /proc/cpuinfo (Linux), else platform.processor() or the architecture."""
    return parse_cpu_model(_read(path) or "") or platform.processor() or platform.machine()


def is_x86(machine: str | None = None) -> bool:
    """Whether `machine` (default: this one's platform.machine()) is an x86 architecture."""
    return (platform.machine() if machine is None else machine).lower() in X86_MACHINES


def cpu_feature_table(machine: str | None = None) -> dict[str, str]:
    """The flags inference cares about on this architecture (X86_FLAGS or ARM_FLAGS) -> what each is for."""
    return X86_FLAGS if is_x86(machine) else ARM_FLAGS


def cpu_has_vnni(flags: set[str] | None = None) -> bool:
    """x86 VNNI (AVX-512 VNNI or AVX-VNNI): int8 multiply-adds without saturation. `flags` default:
    this CPU's."""
    return bool(VNNI_FLAGS & (cpu_flags() if flags is None else flags))


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """Native bf16 matmuls on x86 (AVX512-BF16 or AMX-BF16); without them bf16 is emulated and slow.
    `flags` default: this CPU's."""
    return bool(BF16_FLAGS & (cpu_flags() if flags is None else flags))


def cpu_has_amx(flags: set[str] | None = None) -> bool:
    """AMX tiles (Sapphire Rapids and later). `flags` default: this CPU's."""
    return bool(AMX_FLAGS & (cpu_flags() if flags is None else flags))


def usable_cpus() -> set[int]:
    """Indices of the CPUs this process may run on: its affinity mask where the OS has one, else all."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many CPUs this process may run on (`usable_cpus`); at least 1."""
    return len(usable_cpus()) or 1


def logical_cores() -> int | None:
    """All logical CPUs of the machine (os.cpu_count()), None when unknown."""
    return os.cpu_count()


def physical_cores(sysfs: Path = CPU_SYSFS, cpus: set[int] | None = None) -> int | None:
    """Distinct (package, core) pairs among `cpus` (default: the usable ones) from sysfs topology (Linux);
    None when a CPU's topology is unreadable."""
    seen = set()
    for c in usable_cpus() if cpus is None else cpus:
        base = sysfs / f"cpu{c}" / "topology"
        package, core = _read(base / "physical_package_id"), _read(base / "core_id")
        if package is None or core is None:
            return None
        seen.add((package.strip(), core.strip()))
    return len(seen) or None


# --- Jetson ----------------------------------------------------------------------------------
def parse_device_tree_model(raw: str) -> str | None:
    """The board name in /proc/device-tree/model text (NUL-terminated); None when blank."""
    return raw.strip("\x00\n ") or None


def parse_l4t_release(text: str) -> str | None:
    """The first line of /etc/nv_tegra_release without its leading '# ' ("R36 (release), REVISION: 4.0,
    ..."); None when empty."""
    lines = text.splitlines()
    return (lines[0].strip("# ").strip() or None) if lines else None


def looks_like_jetson(model: str | None, l4t: str | None) -> bool:
    """A Jetson: an L4T release is present, or the device-tree model names Jetson or NVIDIA."""
    return l4t is not None or (model is not None and any(w in model.lower() for w in ("jetson", "nvidia")))


def device_tree_model(path: Path = DEVICE_TREE_MODEL) -> str | None:
    """The board name from the device tree (Arm boards), None elsewhere."""
    raw = _read(path)
    return parse_device_tree_model(raw) if raw is not None else None


def l4t_release(path: Path = L4T_RELEASE) -> str | None:
    """The L4T release line of a Jetson (/etc/nv_tegra_release), None elsewhere."""
    text = _read(path)
    return parse_l4t_release(text) if text is not None else None


def jetpack_version() -> str | None:
    """The installed nvidia-jetpack Debian package's version, None without it (or without dpkg)."""
    return tool_output(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])


@dataclass(frozen=True)
class Jetson:
    """A Jetson module: its device-tree model, L4T release line and JetPack version (None when unknown)."""

    model: str | None
    l4t: str | None
    jetpack: str | None


def jetson(model_path: Path = DEVICE_TREE_MODEL, release_path: Path = L4T_RELEASE) -> Jetson | None:
    """This machine's Jetson facts, None when it is not a Jetson (`looks_like_jetson`)."""
    model, l4t = device_tree_model(model_path), l4t_release(release_path)
    if not looks_like_jetson(model, l4t):
        return None
    return Jetson(model=model, l4t=l4t, jetpack=jetpack_version())


# --- GPUs ------------------------------------------------------------------------------------
def parse_nvidia_smi(csv: str) -> list[dict[str, str]]:
    """Rows of `nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader`
    -> [{name, compute_capability, memory, driver, via: "nvidia-smi"}]; lines of another shape are skipped."""
    out = []
    for line in csv.strip().splitlines():
        p = [x.strip() for x in line.split(",")]
        if len(p) == 4:
            out.append({"name": p[0], "compute_capability": p[1], "memory": p[2], "driver": p[3],
                        "via": "nvidia-smi"})
    return out


def nvidia_smi_gpus() -> list[dict[str, str]]:
    """GPUs as nvidia-smi lists them; [] without nvidia-smi (or when it fails)."""
    text = tool_output(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total,driver_version",
                        "--format=csv,noheader"])
    return parse_nvidia_smi(text) if text else []


def pycuda_gpus() -> list[dict[str, str]]:
    """GPUs as pycuda's driver API sees them; [] without pycuda, a driver or a device. Initialises CUDA."""
    out: list[dict[str, str]] = []
    try:
        import pycuda.driver as cuda  # type: ignore[import-not-found]

        cuda.init()
        for i in range(cuda.Device.count()):
            d = cuda.Device(i)
            major, minor = d.compute_capability()
            out.append({"name": d.name(), "compute_capability": f"{major}.{minor}",
                        "memory": f"{d.total_memory() // 2**20} MiB",
                        "driver": str(cuda.get_driver_version()), "via": "pycuda"})
    except Exception:  # noqa: BLE001 - no driver, no device, or no pycuda: nothing to report
        pass
    return out


def gpus(probe_cuda: bool = False) -> list[dict[str, str]]:
    """NVIDIA GPUs as {name, compute_capability, memory, driver, via}: nvidia-smi's list; when empty and
    `probe_cuda`, pycuda's (Jetson images often have it and no nvidia-smi); when still empty, a Jetson's
    module from the device tree (no nvidia-smi before JetPack 6; its other fields are empty)."""
    out = nvidia_smi_gpus()
    if not out and probe_cuda:
        out = pycuda_gpus()
    if not out:
        model, l4t = device_tree_model(), l4t_release()
        if model and looks_like_jetson(model, l4t):
            out.append({"name": model, "compute_capability": "", "memory": "", "driver": "",
                        "via": "device-tree"})
    return out


# --- libraries and the report block ----------------------------------------------------------
def tensorrt_version() -> str | None:
    """TensorRT's version: the pip distribution's, else the Debian package's (JetPack installs it with
    apt); None without either."""
    return (dist_version("tensorrt")
            or tool_output(["dpkg-query", "-W", "-f=${Version}", "libnvinfer-bin"])
            or tool_output(["dpkg-query", "-W", "-f=${Version}", "tensorrt"]))


def library_versions() -> dict[str, Any]:
    """Versions of Python, numpy, OpenCV, ONNX Runtime (and its providers), torch, TensorRT, OpenVINO and
    NNCF (None when absent); torch's is read from metadata, never imported."""
    import cv2
    import numpy as np

    env: dict[str, Any] = {"python": sys.version.split()[0], "numpy": np.__version__,
                           "opencv": cv2.__version__}
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    env["torch"] = dist_version("torch")
    env["tensorrt"] = tensorrt_version()
    env["openvino"] = dist_version("openvino")
    env["nncf"] = dist_version("nncf")
    return env


def environment(threads: int | None = None) -> dict[str, Any]:
    """The machine and library block for reports (JSON-ready): time, host, OS, CPU model and the flags of
    X86_FLAGS/ARM_FLAGS it has, logical and usable cores, `threads` as the caller ran with, GPUs, the
    Jetson facts (None elsewhere) and `library_versions()`. Never imports torch."""
    j = jetson()
    env: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_features": sorted(cpu_flags() & {*X86_FLAGS, *ARM_FLAGS}),
        "cpu_count": logical_cores(),
        "cpu_affinity": usable_cores(),
        "threads": threads,
        "gpus": gpus(),
        "jetson": asdict(j) if j is not None else None,
    }
    env.update(library_versions())
    return env
