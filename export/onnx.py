"""`python -m export.onnx --checkpoint S.pt`: a student checkpoint -> ONNX, checked for parity.

Exports the deployable graph (export/onnx_graph.py), then runs PyTorch and ONNX Runtime on real frames
(export/onnx_parity.py) and writes `<out>.export.json` with the figures. The export is refused (exit 2,
the ONNX file is not written) when the argmax agreement is below 99.9 %, unless `--force`.

Output kinds (`--output`, recorded in the model's metadata with their stride; the runtime reads them):
  native-labels   N x H/s x W/s uint8 labels, the arg-max of the logits at the model's own output stride s
                  (the command's default)
  native          N x K x H/s x W/s float logits at the model's own output stride (the final Resize left out)
  full            N x K x H x W float logits, bilinearly upsampled to the input size (what the model computes
                  in training; export_checkpoint's default, and what a teacher export needs: logits)
  labels          N x H x W uint8 labels, the arg-max of the full-size logits (`--argmax`, deprecated)
Why native-labels by default (docs/runtime.md has the table): at 512x1024 on 2 cores it is the fastest kind on
every backend (OpenVINO bf16 35 ms against 57 ms for full logits, ONNX Runtime and INT8 alike), because the
graph no longer upsamples K float planes, and its nearest-upsampled labels scored 0.1-0.3 mIoU points below
the full logits' on the demo student. Export `full` or `native` when you need scores (confidence, a teacher).
The native kinds save the upsampling of K float planes in the graph; the runtime brings their output to
the frame's size (runtime.postprocess.labels_at: bilinear then arg-max for logits, nearest for labels).
Native kinds are checked against the model's native logits; native-labels must equal their arg-max except
where the top two logits are within 1e-3 (TIE_TOL).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from runtime.cli import parse_size
from runtime.errors import UserError, cli_main
from runtime.io import atomic_write_json, check_writable, remove_orphans, sha256_file
from runtime.metadata import OUTPUT_KINDS, DataInfo

MIN_AGREEMENT = 0.999
# native-labels parity: a label may differ from the arg-max of PyTorch's native logits only where its top two
# logits are closer than this (float rounding between the frameworks can swap them there)
TIE_TOL = 1e-3
# the command's default output kind: the fastest at camera resolution on every backend measured, within 0.3
# mIoU points of the full logits (module docstring; docs/runtime.md)
DEFAULT_OUTPUT = "native-labels"
OUTPUT_SUFFIXES = {"full": ".onnx", "labels": ".labels.onnx", "native": ".native.onnx",
                   "native-labels": ".native.labels.onnx"}


def default_out(checkpoint: Path, output: str | bool, uint8_input: str | None = None) -> Path:
    """S.pt -> S.onnx, S.labels.onnx, S.native.onnx, S.native.labels.onnx by output kind (True = labels, the
    older --argmax), S.u8.* with --uint8-input."""
    kind = output if isinstance(output, str) else ("labels" if output else "full")
    return checkpoint.with_suffix((".u8" if uint8_input else "") + OUTPUT_SUFFIXES[kind])


def compare_native(model: Any, onnx_path: str | Path, frames: Any, labels: bool, info: DataInfo) -> dict[str, Any]:
    """Parity of a native-stride export: its logits against the model's native logits (max |diff|, arg-max
    agreement) or its labels against their arg-max, with `mismatches_outside_ties` = differing pixels whose
    top two PyTorch logits are further apart than TIE_TOL (must be 0)."""
    import numpy as np
    import torch

    from export.onnx_graph import native_logits
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from runtime.preprocess import preprocess, preprocess_for

    backend = OnnxRuntimeBackend(onnx_path, providers="cpu")
    max_diff, agree, total, outside = 0.0, 0, 0, 0
    for frame in frames:
        x = preprocess(frame, None, info.mean, info.std)
        with torch.no_grad():
            ref = native_logits(model, torch.from_numpy(x)).float().numpy()
        got = backend.infer(preprocess_for(backend.info, frame, frame.shape[:2]) if backend.uint8_input else x)
        if got.shape[-2:] != ref.shape[-2:]:
            raise UserError(f"the native export outputs {got.shape[-2:]} but the model's native logits are "
                            f"{ref.shape[-2:]}; this is a bug in export.onnx_graph")
        ref_labels = ref.argmax(1)
        if labels:
            pred = got.astype(np.int64)
            top2 = np.sort(ref, axis=1)[:, -2:]
            outside += int(((pred != ref_labels) & (top2[:, 1] - top2[:, 0] > TIE_TOL)).sum())
        else:
            max_diff = max(max_diff, float(np.abs(ref - got).max()))
            pred = got.argmax(1)
        agree += int((pred == ref_labels).sum())
        total += ref_labels.size
    backend.close()
    out: dict[str, Any] = {"frames": int(len(frames)), "max_abs_diff": None if labels else max_diff,
                           "argmax_agreement": agree / max(total, 1), "reference": "native logits"}
    if labels:
        out.update({"mismatches_outside_ties": outside, "tie_tol": TIE_TOL})
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None, *, size: tuple[int, int] | None = None,
                      dynamic: bool = False, argmax: bool = False, opset: int = 17, data: str | None = None,
                      parity_images: int = 8, force: bool = False, uint8_input: str | None = None,
                      output: str | None = None) -> dict[str, Any]:
    """Export, check parity, and return the report (also written to `<out>.export.json`).

    `output`: full (default), native, labels or native-labels; `argmax=True` is the older spelling of labels.
    Raises UserError when the agreement is below `MIN_AGREEMENT` (or, for native-labels, a label differs from
    the arg-max of the native logits outside a near-tie) and `force` is false."""
    from export.onnx_graph import export_graph, output_kind
    from export.onnx_parity import compare, parity_frames
    from train.engine.checkpoint import model_from_checkpoint, training_data

    kind = output_kind(output, argmax)
    labels = kind in ("labels", "native-labels")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint {checkpoint} does not exist; pass a student .pt written by train.distill")
    model, info, ckpt = model_from_checkpoint(checkpoint, device="cpu")
    config = (ckpt.get("train") or {}).get("config") or {}
    trained = (int(info.input_size[0]), int(info.input_size[1]))
    if size is None:
        export_size = (config.get("export") or {}).get("size") or trained
        size = (int(export_size[0]), int(export_size[1]))
    if tuple(size) != trained and not dynamic:
        print(f"note: exporting at {size[0]}x{size[1]}, but {checkpoint.name} was trained and validated at "
              f"{trained[0]}x{trained[1]}: its accuracy at this scale is not what training measured", file=sys.stderr)
    out = Path(out) if out is not None else default_out(checkpoint, kind, uint8_input)
    check_writable(out, "ONNX model")
    remove_orphans(out)
    source = {
        "checkpoint": checkpoint.name,
        "sha256": sha256_file(checkpoint),
        "options": {"size": list(size), "dynamic": dynamic, "output": kind, "argmax": labels, "opset": opset,
                    "uint8_input": uint8_input},
        "arch": ckpt.get("arch"),
        "method": (ckpt.get("train") or {}).get("method"),
    }
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    try:
        export_graph(model, info, tmp, size=size, dynamic=dynamic, opset=opset, source=source,
                     uint8_input=uint8_input, output=kind)
        export_s = time.perf_counter() - t0
        spec = training_data(ckpt, info, data)
        split = "val" if data else str((config.get("data") or {}).get("val_split", "val"))
        batch, names = parity_frames(spec, size, parity_images, split)
        fmt = f"uint8-{uint8_input}" if uint8_input else "float"
        parity_info = DataInfo(**{**info.__dict__, "input_format": fmt})
        parity = (compare_native(model, tmp, batch, labels, parity_info) if kind.startswith("native")
                  else compare(model, tmp, batch, labels, parity_info))
        good = parity["argmax_agreement"] >= MIN_AGREEMENT and not parity.get("mismatches_outside_ties")
        accepted = good or force
        if accepted:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    report = {"onnx": str(out), "written": accepted, "source": source, "data": spec.text, "frames": names,
              "parity": parity, "min_agreement": MIN_AGREEMENT, "forced": force and not good, "export_seconds": round(export_s, 3),
              "versions": _versions()}
    atomic_write_json(f"{out}.export.json", report)
    if not accepted and parity.get("mismatches_outside_ties"):
        raise UserError(f"{parity['mismatches_outside_ties']} ONNX Runtime label(s) differ from the arg-max of the "
                        f"model's native logits where the top two logits are more than {TIE_TOL} apart; {out} was "
                        f"not written (see {out}.export.json); pass --force to keep it anyway")
    if not accepted:
        raise UserError(f"ONNX Runtime agrees with PyTorch on only {100 * parity['argmax_agreement']:.3f} % of "
                        f"pixels (< {100 * MIN_AGREEMENT:.1f} %); {out} was not written (see {out}.export.json); "
                        "pass --force to keep it anyway")
    return report


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="student checkpoint (.pt) from train.distill / train.teacher")
    p.add_argument("--size", type=parse_size, default=None,
                   help="input H x W, e.g. 512x1024 (default: the config's export.size when set, else the size the "
                        "model was trained and validated at, recorded in the checkpoint; printed)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width (default: static shapes)")
    p.add_argument("--output", choices=OUTPUT_KINDS, default=None,
                   help=f"what the graph outputs (default {DEFAULT_OUTPUT}, the fastest, measured): native-labels "
                        "(uint8 arg-max of the logits at the model's own stride), native (those logits, no final "
                        "Resize), full (logits upsampled to the input size) or labels (uint8 arg-max of those); "
                        "recorded in the metadata with the stride, which the runtime reads")
    p.add_argument("--argmax", action="store_true",
                   help="deprecated: the same as --output labels (N x H x W uint8, int32 above 255 classes)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    p.add_argument("--uint8-input", nargs="?", const="rgb", choices=("rgb", "bgr"), default=None,
                   help="the graph takes uint8 N x H x W x 3 frames (RGB, or BGR as OpenCV captures) and does /255, "
                        "mean/std and the layout itself; the runtime reads the kind from the metadata")
    p.add_argument("--out", default=None, help="output .onnx (default: beside the checkpoint, S.native.labels.onnx / S.native.onnx / "
                        "S.onnx / S.labels.onnx by --output)")
    p.add_argument("--data", default=None,
                   help="frames for the parity check, name:root or synthetic (default: the checkpoint's dataset)")
    p.add_argument("--parity-images", type=int, default=8, help="frames for the parity check (default 8)")
    p.add_argument("--force", action="store_true", help=f"keep the export even below {100 * MIN_AGREEMENT:.1f} %% agreement")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.parity_images < 1:
        raise UserError("--parity-images must be at least 1")
    if args.argmax and args.output is None:
        print("note: --argmax is deprecated; use --output labels (or native-labels)", file=sys.stderr)
    output = args.output or (None if args.argmax else DEFAULT_OUTPUT)
    r = export_checkpoint(args.checkpoint, args.out, size=args.size, dynamic=args.dynamic, argmax=args.argmax,
                          opset=args.opset, data=args.data, parity_images=args.parity_images, force=args.force,
                          uint8_input=args.uint8_input, output=output)
    par = r["parity"]
    diff = "-" if par["max_abs_diff"] is None else f"{par['max_abs_diff']:.2e}"
    print(f"{'onnx':<10} {r['onnx']}\n{'size':<10} {'x'.join(map(str, r['source']['options']['size']))}"
          f"{' (dynamic)' if r['source']['options']['dynamic'] else ''}\n"
          f"{'output':<10} {r['source']['options']['output']}\n"
          f"{'frames':<10} {par['frames']} from {r['data']}\n{'max |diff|':<10} {diff}\n"
          f"{'agreement':<10} {100 * par['argmax_agreement']:.4f} %\n{'report':<10} {r['onnx']}.export.json")
    if r["forced"]:
        print(f"warning: agreement below {100 * MIN_AGREEMENT:.1f} %, kept because of --force")
    print(f"run it:      python -m runtime.infer --model {r['onnx']} --source video.mp4 --show")
    print(f"quantize it: python -m calib.quantize --onnx {r['onnx']} --data {r['data']} --target cpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

