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
import platform
import sys
from typing import Any

from runtime.errors import cli_main
from runtime.lazy import INSTALL_HINTS, has_module
from runtime.machine import (
    cpu_feature_table,
    cpu_flags,
    cpu_has_vnni,
    cpu_model,
    dist_version,
    gpus,
    is_x86,
    jetson,
    logical_cores,
    physical_cores,
    usable_cores,
)


def _row(area: str, item: str, value: Any, status: str = "info", note: str = "") -> dict[str, Any]:
    return {"area": area, "item": item, "value": "" if value is None else str(value), "status": status,
            "note": note}


def report() -> list[dict[str, Any]]:
    """The rows of the runtime check (see the module docstring)."""
    rows = [_row("system", "OS", platform.platform()), _row("system", "Python", sys.version.split()[0])]
    rows += [_row("cpu", "model", cpu_model()),
             _row("cpu", "cores", f"{usable_cores()} usable, {physical_cores() or '?'} physical, "
                                  f"{logical_cores() or '?'} logical")]
    flags = cpu_flags()
    for flag, what in cpu_feature_table().items():
        rows.append(_row("cpu", flag, "yes" if flag in flags else "no", "info", what))
    if is_x86() and not cpu_has_vnni(flags):
        rows.append(_row("cpu", "INT8 on this CPU", "slow", "info",
                         "no VNNI: ONNX Runtime's INT8 convolutions do not beat FP32 here"))
    ort_v = dist_version("onnxruntime") or dist_version("onnxruntime-gpu")
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
    trt_v = dist_version("tensorrt") or dist_version("tensorrt-cu12") or dist_version("tensorrt_lean")
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
        rows.append(_row("tensorrt", f"CUDA binding {dist}", dist_version(dist) if present else None,
                         "ok" if present else "missing", "" if present else INSTALL_HINTS.get(mod, f"pip install {dist}")))
    j = jetson()
    if j is not None:
        rows.append(_row("jetson", "module", j.model))
        rows.append(_row("jetson", "L4T", j.l4t))
        if j.jetpack:
            rows.append(_row("jetson", "JetPack", j.jetpack))
    found = gpus(probe_cuda=True)
    if not found:
        rows.append(_row("gpu", "GPU", None, "missing", "no NVIDIA GPU visible (no nvidia-smi, no CUDA binding "
                                                         "reports a device)"))
    for i, g in enumerate(found):
        parts = [g["name"], g["compute_capability"] and f"compute {g['compute_capability']}", g["memory"],
                 g["driver"] and f"driver {g['driver']}"]  # a Jetson seen through its device tree has only a name
        rows.append(_row("gpu", f"GPU {i}", f"{', '.join(p for p in parts if p)} ({g['via']})", "ok"))
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
