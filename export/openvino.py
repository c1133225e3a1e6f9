"""`python -m export.openvino --onnx S.onnx`: an exported ONNX model -> OpenVINO IR `S.openvino.xml` + `.bin`.

The IR keeps the ONNX model's weights in their own precision (no FP16 compression) and carries its
`lfd_edge.data` block (class names, palette, normalisation, input size) and `lfd_edge.source` in the
IR's runtime info, so `python -m runtime.infer --model S.openvino.xml` needs nothing else. OpenVINO
can also run the `.onnx` itself (`--backend openvino`); the IR skips the ONNX import at start-up and
is what OpenVINO's tools take. Before the IR is written, OpenVINO's logits on a few frames are
compared with ONNX Runtime's (the reference) and reported in `S.openvino.xml.export.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from runtime.cli import int_at_least
from runtime.errors import UserError, cli_main
from runtime.io import atomic_write_json, check_writable
from runtime.lazy import lazy_import
from runtime.metadata import ONNX_SOURCE_KEY, onnx_metadata

MIN_AGREEMENT = 0.999  # argmax agreement with ONNX Runtime below which the IR is not written


def default_ir_path(onnx: Path) -> Path:
    """S.onnx -> S.openvino.xml (S.int8.cpu.onnx -> S.int8.cpu.openvino.xml)."""
    return onnx.with_name(f"{onnx.name.removesuffix('.onnx')}.openvino.xml")


def convert(onnx_path: str | Path, out: str | Path | None = None, frames: int = 4, seed: int = 0,
            force: bool = False) -> dict[str, object]:
    """Write the IR of `onnx_path` (default name `default_ir_path`) after checking OpenVINO against ONNX
    Runtime on `frames` random frames; returns the report (also written as `<xml>.export.json`)."""
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from runtime.backends.openvino_backend import OpenVINOBackend, core, write_ir

    ov = lazy_import("openvino", "OpenVINO export")
    src = Path(onnx_path)
    xml = Path(out) if out is not None else default_ir_path(src)
    check_writable(xml, "OpenVINO IR")
    with OnnxRuntimeBackend(src, providers="cpu") as ref_backend:
        info = ref_backend.info  # the lfd_edge.data block (the backend refuses a model without one)
        source = onnx_metadata(ref_backend.session).get(ONNX_SOURCE_KEY)
        h, w = ref_backend.input_size
        rng = np.random.default_rng(seed)
        batches = [rng.standard_normal((1, 3, h, w)).astype(np.float32) if not info.uint8_input
                   else rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8) for _ in range(frames)]
        refs = [ref_backend.infer(b) for b in batches]
    with OpenVINOBackend(src, precision_hint="f32") as ovb:
        gots = [ovb.infer(b) for b in batches]
    labels = ref_backend.output_kind == "labels"
    agree = float(np.mean([(g == r).mean() if labels else (g.argmax(1) == r.argmax(1)).mean()
                           for g, r in zip(gots, refs)]))
    max_diff = None if labels else float(max(np.abs(g - r).max() for g, r in zip(gots, refs)))
    model = core().read_model(str(src))
    report: dict[str, object] = {"onnx": str(src), "ir": str(xml), "frames": frames, "argmax_agreement": agree,
                                 "max_abs_diff": max_diff, "min_agreement": MIN_AGREEMENT,
                                 "openvino": ov.__version__, "written": agree >= MIN_AGREEMENT or force}
    if report["written"]:
        write_ir(model, xml, info, {ONNX_SOURCE_KEY: source} if source else None)
    atomic_write_json(f"{xml}.export.json", report)
    if not report["written"]:
        raise UserError(f"OpenVINO agrees with ONNX Runtime on only {100 * agree:.3f} % of pixels (< "
                        f"{100 * MIN_AGREEMENT:.1f} %); {xml} was not written (see {xml}.export.json); pass --force "
                        "to keep it anyway")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.openvino", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="ONNX model written by python -m export.onnx (or calib.quantize)")
    p.add_argument("--out", help="output .xml (default: S.openvino.xml beside the ONNX model; the .bin goes beside it)")
    p.add_argument("--frames", type=int_at_least(1), default=4, help="random frames for the check against ONNX Runtime (default 4)")
    p.add_argument("--force", action="store_true", help=f"write the IR even below {100 * MIN_AGREEMENT:.1f} %% agreement")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rep = convert(args.onnx, args.out, args.frames, force=args.force)
    diff = rep["max_abs_diff"]
    print(f"wrote {rep['ir']} (+ .bin): argmax agreement with ONNX Runtime {100 * float(rep['argmax_agreement']):.3f} %"
          + (f", max |logit diff| {float(diff):.2e}" if diff is not None else ""), file=sys.stderr)
    print(f"run it: python -m runtime.infer --model {rep['ir']} --source 0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
