"""`python -m export.trt --onnx S.onnx [--precision fp16]`: an ONNX model -> TensorRT engine + sidecar.

Writes `M.engine` atomically and `M.engine.json` beside it (TensorRT version, GPU, precision, profile,
source ONNX sha256, the model's lfd_edge.* metadata), which runtime.backends.tensorrt_backend reads to refuse
engines from another TensorRT or GPU. How the precision is obtained depends on the TensorRT version
(export/trt_choices.py); a request this TensorRT cannot honour is an error, never a silent change.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from export.trt_choices import (
    PRECISIONS,
    BuildChoice,
    OnnxInfo,
    Profile,
    choose_build,
    inspect_onnx,
    resolve_profile,
)
from runtime.cli import int_at_least
from runtime.errors import UserError, cli_main
from runtime.io import sha256_file
from runtime.metadata import ONNX_DATA_KEY, SIDECAR_FORMAT, onnx_data_info, sidecar_path, write_sidecar
from runtime.trt_version import jetpacks_for, parse_trt_version


def default_engine_path(onnx: Path) -> Path:
    """`S.int8.trt.onnx` -> `S.int8.trt.engine`."""
    return onnx.with_suffix(".engine")


def make_sidecar(*, onnx: Path, onnx_sha256: str, info: OnnxInfo, choice: BuildChoice, profile: Profile, trt_version: str,
                 device: dict[str, str], engine: Path, engine_sha256: str, dla_core: int | None,
                 workspace_mib: int | None, timing_cache: Path | None, calibration: dict[str, Any] | None,
                 version_compatible: bool, build_seconds: float, notes: list[str]) -> dict[str, Any]:
    """The `.engine.json` sidecar beside each engine (schema and reader: runtime/metadata.py)."""
    return {
        "format_version": SIDECAR_FORMAT,
        "engine": engine.name,
        "engine_sha256": engine_sha256,
        "tensorrt_version": trt_version,
        "jetpack": jetpacks_for(parse_trt_version(trt_version)),
        "version_compatible": version_compatible,
        "device": {"name": device["name"], "compute_capability": device["compute_capability"]},
        "machine": platform.machine(),
        "dla_core": dla_core,
        "precision": choice.precision,
        "strongly_typed": choice.strongly_typed,
        "builder_flags": list(choice.flags),
        "inputs": {profile.name: profile.to_dict()},
        "input_shape": list(profile.opt) if profile.static else None,
        "outputs": {k: list(v) for k, v in info.outputs.items()},
        "calibration": calibration,
        "onnx": {"path": str(onnx), "sha256": onnx_sha256, "kind": info.kind},
        "metadata": {k: _maybe_json(v) for k, v in info.metadata.items() if k.startswith("lfd_edge.")},
        "workspace_mib": workspace_mib,
        "timing_cache": str(timing_cache) if timing_cache else None,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 2),
        "notes": notes,
    }


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.trt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="ONNX model from export.onnx or calib.quantize (S.onnx, S.fp16.onnx, "
                   "S.int8.trt.onnx)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="engine precision (default: the model's own: fp32, fp16 for an FP16 model, int8 for a Q/DQ "
                        "model). On TensorRT 11 FP16/INT8 must come from the model (calib.quantize --fp16 / --target trt)")
    p.add_argument("--min", default=None, help="smallest input shape NxCxHxW of the optimisation profile (dynamic models)")
    p.add_argument("--opt", default=None, help="input shape TensorRT tunes for, e.g. 1x3x256x512")
    p.add_argument("--max", default=None, help="largest input shape; give --min, --opt, --max together or none "
                   "(none: the model's static shape, or batch 1 at its data block's input size)")
    p.add_argument("--workspace", type=int_at_least(1), default=None, metavar="MiB",
                   help="builder workspace memory limit in MiB (default: TensorRT's, the GPU's memory)")
    p.add_argument("--dla", type=int_at_least(0), default=None, metavar="N",
                   help="run on Jetson DLA core N with GPU fallback (needs fp16 or int8)")
    p.add_argument("--timing-cache", type=Path, default=None, metavar="FILE",
                   help="timing cache: loaded if present, saved after the build (makes rebuilds much faster)")
    p.add_argument("--calib-data", type=Path, default=None, metavar="SET.npy",
                   help="INT8 from an FP32 model on TensorRT 8.5/10: the float32 N x 3 x H x W calibration set that "
                        "calib/ caches")
    p.add_argument("--calib-cache", type=Path, default=None, metavar="FILE",
                   help="INT8 calibration cache: reused if present (then --calib-data is optional), written otherwise")
    p.add_argument("--version-compatible", action="store_true",
                   help="build an engine that later TensorRT versions can also load (8.6+; may be slower)")
    p.add_argument("--out", type=Path, default=None, help="output engine (default: the ONNX path with .engine)")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    onnx = Path(args.onnx)
    if not onnx.is_file():
        raise UserError(f"ONNX model {onnx} does not exist; export one with python -m export.onnx --checkpoint S.pt")
    from export.trt_build import (
        BuildRequest,
        build_engine,
        current_device,
        detect_capabilities,
        require_tensorrt,
    )

    trt = require_tensorrt()
    device = current_device()
    caps = detect_capabilities(trt)
    info = inspect_onnx(onnx)
    has_calib = args.calib_data is not None or (args.calib_cache is not None and args.calib_cache.is_file())
    choice = choose_build(caps, info.kind, args.precision, onnx.name, has_calib)
    if args.dla is not None and choice.precision == "fp32":
        raise UserError("DLA runs only FP16 and INT8: add --precision fp16 (or int8), or drop --dla")
    if len(info.inputs) != 1:
        raise UserError(f"{onnx.name} has inputs {list(info.inputs)}; export.trt builds models with one image input")
    (name, dims), = info.inputs.items()
    block = onnx_data_info(info.metadata, onnx) if ONNX_DATA_KEY in info.metadata else None
    if block is not None and block.uint8_input:  # N x H x W x 3 frames, normalised in the graph
        if choice.calibrator:
            raise UserError(f"{onnx.name} takes uint8 frames (--uint8-input), which TensorRT's implicit INT8 "
                            "calibration cannot feed; build FP16, or INT8 from the float-input export")
        if any(d < 0 for d in dims) and args.opt is None:
            raise UserError(f"{onnx.name} takes dynamic uint8 N x H x W x 3 frames; give --min, --opt and --max "
                            "as NxHxWx3, e.g. --opt 1x512x1024x3")
    default_hw = block.input_size if block is not None else None
    profile = resolve_profile(name, dims, args.min, args.opt, args.max, default_hw)

    calibration = None
    batches = None
    if choice.calibrator:
        from export.trt_calibrator import CalibrationBatches, load_calibration_set

        data = load_calibration_set(args.calib_data) if args.calib_data is not None else None
        batches = CalibrationBatches(data, profile.opt[0], args.calib_cache, shape=profile.opt)
        calibration = {"images": batches.num_images, "set": str(args.calib_data) if args.calib_data else None,
                       "cache": str(args.calib_cache) if args.calib_cache else None, "algorithm": "entropy2"}
    elif args.calib_data is not None or args.calib_cache is not None:
        choice = BuildChoice(choice.precision, choice.strongly_typed, choice.flags, choice.calibrator,
                         (*choice.notes, "--calib-data/--calib-cache ignored: this build needs no calibrator"))

    out = args.out or default_engine_path(onnx)
    for note in choice.notes:
        print(f"note: {note}")
    print(f"building {out} from {onnx.name}: TensorRT {caps.version.short}, {device['name']} "
          f"(sm {device['compute_capability']}), {choice.precision}{' strongly typed' if choice.strongly_typed else ''}")

    side = sidecar_path(out)
    if side.exists():
        side.unlink()  # an engine without its sidecar is refused; a stale sidecar would vouch for a new engine
    t0 = time.perf_counter()
    result = build_engine(BuildRequest(onnx=onnx, out=out, choice=choice, profile=profile, workspace_mib=args.workspace,
                                       dla_core=args.dla, timing_cache=args.timing_cache, calibration=batches,
                                       version_compatible=args.version_compatible, verbose=args.verbose), caps)
    seconds = time.perf_counter() - t0
    notes = [*choice.notes, *result.notes]
    write_sidecar(out, make_sidecar(
        onnx=onnx, onnx_sha256=sha256_file(onnx), info=info, choice=choice, profile=profile, trt_version=trt.__version__,
        device=device, engine=out, engine_sha256=sha256_file(out), dla_core=args.dla, workspace_mib=args.workspace,
        timing_cache=args.timing_cache, calibration=calibration, version_compatible=args.version_compatible,
        build_seconds=seconds, notes=notes))
    for note in result.notes:
        print(f"note: {note}")
    rows = [("engine", str(out)), ("size", f"{result.engine_bytes / 2**20:.1f} MiB"), ("precision", choice.precision),
            ("profile", f"{_fmt(profile.min)} .. {_fmt(profile.opt)} .. {_fmt(profile.max)}"),
            ("build", f"{seconds:.1f} s"), ("sidecar", str(side))]
    for k, v in rows:
        print(f"{k:<10} {v}")
    print(f"run it: python -m runtime.infer --model {out} --source 0")
    return 0


def _fmt(dims: tuple[int, ...]) -> str:
    return "x".join(map(str, dims))


if __name__ == "__main__":
    raise SystemExit(main())
