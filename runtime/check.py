"""`python -m runtime.check`: what this machine offers the runtime, without importing torch.

    python -m runtime.check [--json runs/check/runtime.json]

One table (and JSON) of: OS and Python; the CPU, its cores and the instruction sets inference cares about
(AVX2, AVX-512, VNNI, AMX, bf16; NEON and dot-product on ARM); ONNX Runtime and its providers; OpenVINO
and its devices; TensorRT and the CUDA bindings (pycuda, cuda-python); JetPack / L4T on a Jetson; the
GPUs (name, compute capability, memory, driver) from nvidia-smi or the CUDA bindings. Each row says
"ok", "missing" (with what to install) or "info". `python -m train.check` adds the training side, and
`make check` runs both (`FULL=1`: also the training side's self-test and speed test).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from runtime.errors import cli_main
from runtime.lazy import INSTALL_HINTS, has_module
from runtime.report import ARM_FLAGS, X86_FLAGS, cpu_flags


def physical_cores() -> int | None:
    """Distinct (package, core) pairs among the CPUs this process may run on (Linux)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    seen = set()
    for c in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            seen.add((base.joinpath("physical_package_id").read_text().strip(),
                      base.joinpath("core_id").read_text().strip()))
        except OSError:
            return None
    return len(seen) or None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _row(area: str, item: str, value: Any, status: str = "info", note: str = "") -> dict[str, Any]:
    return {"area": area, "item": item, "value": "" if value is None else str(value), "status": status,
            "note": note}


def gpus() -> list[dict[str, str]]:
    """GPUs from nvidia-smi (name, compute capability, memory, driver), else from cuda-python or pycuda."""
    from runtime.report import nvidia_smi_gpus

    out = [{**g, "via": "nvidia-smi"} for g in nvidia_smi_gpus()]
    if out:
        return out
    try:  # pycuda, when installed (Jetson images often have it and no nvidia-smi)
        import pycuda.driver as cuda  # type: ignore[import-not-found]

        cuda.init()
        for i in range(cuda.Device.count()):
            d = cuda.Device(i)
            major, minor = d.compute_capability()
            out.append({"name": d.name(), "compute_capability": f"{major}.{minor}",
                        "memory": f"{d.total_memory() // 2**20} MiB", "driver": str(cuda.get_driver_version()),
                        "via": "pycuda"})
    except Exception:  # noqa: BLE001 - no driver, no device, or no pycuda: nothing to report
        pass
    return out


def jetson() -> dict[str, str] | None:
    """L4T release (/etc/nv_tegra_release) and the module name, on a Jetson."""
    rel = Path("/etc/nv_tegra_release")
    model = Path("/proc/device-tree/model")
    if not rel.is_file() and not (model.is_file() and "jetson" in model.read_text(errors="replace").lower()):
        return None
    info = {"model": model.read_text(errors="replace").strip("\x00\n ") if model.is_file() else ""}
    if rel.is_file():
        first = rel.read_text(errors="replace").splitlines()[0] if rel.read_text(errors="replace") else ""
        info["l4t"] = first.strip("# ").strip()
    jp = _version("nvidia-jetpack")
    if jp:
        info["jetpack"] = jp
    return info


def report() -> list[dict[str, Any]]:
    """The rows of the runtime check (see the module docstring)."""
    rows = [_row("system", "OS", platform.platform()), _row("system", "Python", sys.version.split()[0])]
    from runtime.report import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows += [_row("cpu", "model", cpu_model()),
             _row("cpu", "cores", f"{cores} usable, {physical_cores() or '?'} physical, {os.cpu_count()} logical")]
    flags = cpu_flags()
    table = X86_FLAGS if platform.machine().lower() in ("x86_64", "amd64", "i686") else ARM_FLAGS
    for flag, what in table.items():
        rows.append(_row("cpu", flag, "yes" if flag in flags else "no", "info", what))
    if "avx512_vnni" not in flags and "avx_vnni" not in flags and table is X86_FLAGS:
        rows.append(_row("cpu", "INT8 on this CPU", "slow", "info",
                         "no VNNI: ONNX Runtime's INT8 convolutions do not beat FP32 here"))
    ort_v = _version("onnxruntime") or _version("onnxruntime-gpu")
    if ort_v and has_module("onnxruntime"):
        import onnxruntime as ort

        rows.append(_row("onnxruntime", "version", ort.__version__, "ok"))
        rows.append(_row("onnxruntime", "providers", ", ".join(ort.get_available_providers()), "ok"))
    else:
        rows.append(_row("onnxruntime", "version", None, "missing", INSTALL_HINTS["onnxruntime"]))
    if has_module("openvino"):
        try:
            import openvino as ov  # type: ignore[import-not-found]

            from runtime.backends.openvino_backend import core

            rows.append(_row("openvino", "version", ov.get_version(), "ok"))
            rows.append(_row("openvino", "devices", ", ".join(core().available_devices), "ok"))
        except Exception as e:  # noqa: BLE001 - a broken install is reported, not raised
            rows.append(_row("openvino", "version", None, "missing", f"openvino does not load: {e}"))
    else:
        rows.append(_row("openvino", "version", None, "missing", "optional: pip install openvino"))
    trt_v = _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt_lean")
    if has_module("tensorrt"):
        try:
            import tensorrt as trt  # type: ignore[import-not-found]

            rows.append(_row("tensorrt", "version", trt.__version__, "ok"))
        except Exception as e:  # noqa: BLE001
            rows.append(_row("tensorrt", "version", trt_v, "missing", f"tensorrt does not load: {e}"))
    else:
        rows.append(_row("tensorrt", "version", None, "missing", INSTALL_HINTS["tensorrt"]))
    for mod, dist in (("pycuda", "pycuda"), ("cuda", "cuda-python")):
        present = has_module(mod)
        rows.append(_row("tensorrt", f"CUDA binding {dist}", _version(dist) if present else None,
                         "ok" if present else "missing", "" if present else INSTALL_HINTS.get(mod, f"pip install {dist}")))
    j = jetson()
    if j is not None:
        rows.append(_row("jetson", "module", j.get("model")))
        rows.append(_row("jetson", "L4T", j.get("l4t")))
        if j.get("jetpack"):
            rows.append(_row("jetson", "JetPack", j["jetpack"]))
    found = gpus()
    if not found:
        rows.append(_row("gpu", "GPU", None, "missing", "no NVIDIA GPU visible (no nvidia-smi, no CUDA binding "
                                                         "reports a device)"))
    for i, g in enumerate(found):
        rows.append(_row("gpu", f"GPU {i}", f"{g['name']}, compute {g['compute_capability']}, {g['memory']}, "
                                            f"driver {g['driver']} ({g['via']})", "ok"))
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    from runtime.report import format_table

    print(format_table(rows, ["area", "item", "value", "status", "note"]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="runs/check/runtime.json", help="where to write the report "
                   "(default runs/check/runtime.json)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.io import check_writable
    from runtime.report import write_report

    check_writable(args.json, "--json file")
    rows = report()
    print_rows(rows)
    write_report(args.json, {"rows": rows})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
