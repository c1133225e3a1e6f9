"""`python -m runtime.check`: what this machine offers the runtime, without importing torch.

    python -m runtime.check [--json runs/check/runtime.json]

One table (and JSON) of: OS and Python; the CPU, its cores and the instruction sets inference cares about
(AVX2, AVX-512, VNNI, AMX, bf16; NEON and dot-product on ARM); ONNX Runtime and its providers; OpenVINO
and its devices; TensorRT and the CUDA bindings (pycuda, cuda-python); JetPack / L4T on a Jetson; the
GPUs (name, compute capability, memory, driver) from nvidia-smi or the CUDA bindings. Each row says
"ok", "missing" (with what to install) or "info". `python -m train.check` adds the training side and
`python -m export.check` the export side; `make check` runs runtime.check and train.check (`FULL=1`: also
the training self-test and speed test, then export.check). The three share this module's `row` and
`finish_report` (table, skipped rows, JSON, exit status).
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
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

COLUMNS = ("area", "item", "value", "status", "note")


def row(area: str, item: str, value: Any, status: str = "info", note: str = "", **extra: Any) -> dict[str, Any]:
    """One row of a check report (`runtime.check`, `train.check`, `export.check`). Status: "ok", "info",
    "missing" (the note says what to install), "warn", "skipped" (the note says why) or "fail"; `extra` adds
    columns (e.g. seconds per iteration)."""
    return {"area": area, "item": item, "value": "" if value is None else value, "status": status, "note": note,
            **extra}


def add_json_option(p: argparse.ArgumentParser, name: str) -> None:
    """--json of a check command: where `finish_report` writes (default runs/check/<name>.json)."""
    p.add_argument("--json", default=f"runs/check/{name}.json",
                   help=f"where to write the report (default runs/check/{name}.json)")


def finish_report(rows: list[dict[str, Any]], path: str, columns: Sequence[str] = COLUMNS, digits: int = 2,
                  **fields: Any) -> int:
    """The tail of every check command: the table of `rows`, one line per skipped row saying why, and the
    JSON report `{"rows": rows, **fields}` (plus the environment) at `path`. Returns the exit code: 1 when a
    row failed, else 0."""
    from runtime.report import format_table, write_report

    print(format_table(rows, columns, digits=digits))
    for r in rows:
        if r["status"] == "skipped":
            print(f"skipped: {r['item']}: {r['note']}")
    write_report(path, {"rows": rows, **fields})
    print(f"wrote {path}")
    return 1 if any(r["status"] == "fail" for r in rows) else 0


def report() -> list[dict[str, Any]]:
    """The rows of the runtime check (see the module docstring)."""
    rows = [row("system", "OS", platform.platform()), row("system", "Python", sys.version.split()[0])]
    rows += [row("cpu", "model", cpu_model()),
             row("cpu", "cores", f"{usable_cores()} usable, {physical_cores() or '?'} physical, "
                                 f"{logical_cores() or '?'} logical")]
    flags = cpu_flags()
    for flag, what in cpu_feature_table().items():
        rows.append(row("cpu", flag, "yes" if flag in flags else "no", "info", what))
    if is_x86() and not cpu_has_vnni(flags):
        rows.append(row("cpu", "INT8 on this CPU", "slow", "info",
                        "no VNNI: ONNX Runtime's INT8 convolutions do not beat FP32 here"))
    ort_v = dist_version("onnxruntime") or dist_version("onnxruntime-gpu")
    if ort_v and has_module("onnxruntime"):
        import onnxruntime as ort

        rows.append(row("onnxruntime", "version", ort.__version__, "ok"))
        rows.append(row("onnxruntime", "providers", ", ".join(ort.get_available_providers()), "ok"))
    else:
        rows.append(row("onnxruntime", "version", None, "missing", INSTALL_HINTS["onnxruntime"]))
    if has_module("openvino"):
        try:
            import openvino as ov  # type: ignore[import-not-found]

            from runtime.backends.openvino_backend import core

            rows.append(row("openvino", "version", ov.get_version(), "ok"))
            rows.append(row("openvino", "devices", ", ".join(core().available_devices), "ok"))
        except Exception as e:  # noqa: BLE001 - a broken install is reported, not raised
            rows.append(row("openvino", "version", None, "missing", f"openvino does not load: {e}"))
    else:
        rows.append(row("openvino", "version", None, "missing", "optional: pip install openvino"))
    trt_v = dist_version("tensorrt") or dist_version("tensorrt-cu12") or dist_version("tensorrt_lean")
    if has_module("tensorrt"):
        try:
            import tensorrt as trt  # type: ignore[import-not-found]

            rows.append(row("tensorrt", "version", trt.__version__, "ok"))
        except Exception as e:  # noqa: BLE001
            rows.append(row("tensorrt", "version", trt_v, "missing", f"tensorrt does not load: {e}"))
    else:
        rows.append(row("tensorrt", "version", None, "missing", INSTALL_HINTS["tensorrt"]))
    for mod, dist in (("pycuda", "pycuda"), ("cuda", "cuda-python")):
        present = has_module(mod)
        rows.append(row("tensorrt", f"CUDA binding {dist}", dist_version(dist) if present else None,
                        "ok" if present else "missing", "" if present else INSTALL_HINTS.get(mod, f"pip install {dist}")))
    j = jetson()
    if j is not None:
        rows.append(row("jetson", "module", j.model))
        rows.append(row("jetson", "L4T", j.l4t))
        if j.jetpack:
            rows.append(row("jetson", "JetPack", j.jetpack))
    found = gpus(probe_cuda=True)
    if not found:
        rows.append(row("gpu", "GPU", None, "missing", "no NVIDIA GPU visible (no nvidia-smi, no CUDA binding "
                                                        "reports a device)"))
    for i, g in enumerate(found):
        parts = [g["name"], g["compute_capability"] and f"compute {g['compute_capability']}", g["memory"],
                 g["driver"] and f"driver {g['driver']}"]  # a Jetson seen through its device tree has only a name
        rows.append(row("gpu", f"GPU {i}", f"{', '.join(p for p in parts if p)} ({g['via']})", "ok"))
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_json_option(p, "runtime")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.io import check_writable

    check_writable(args.json, "--json file")
    return finish_report(report(), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
