"""`python -m export.check`: the deployment side of this machine's self-test: export a student to ONNX,
compare ONNX Runtime with PyTorch, and build and run a TensorRT FP16 engine of it.

    python -m export.check                                   # a tiny student trained here (about 1 min on a CPU)
    python -m export.check --device cuda --size 128x256      # train it on the GPU, export at 128x256
    python -m export.check --checkpoint runs/demo/distill/demo-lfd-s0/best.pt   # your own student

Without `--checkpoint`, the student is the tiny one `python -m train.check --speed` trains: the recipe
tiny_lraspp_mobilenetv3 alone on synthetic scenes at `--size`, for `--steps` iterations of `--batch`
images on `--device`, in a temporary folder that is removed afterwards. Rows:

- export / ONNX export + parity: `export.onnx` of the student (its parity gate on 2 frames), then one
  fixed input through PyTorch (CPU) and ONNX Runtime's best provider here (CUDA when present): the largest
  logit difference and the argmax agreement; ok at 99.9 % agreement or more.
- tensorrt / FP16 build + run: `export.trt --precision fp16` of that ONNX model and one inference of the
  engine; skipped, saying why, where TensorRT or a CUDA GPU is missing.

One table, a line per skipped row, and the JSON report (`--json`). Exit code 1 when a row fails, 2 on a
usage error. `make check FULL=1` runs it after `python -m train.check --speed`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from runtime.check import add_json_option, row
from runtime.errors import UserError, cli_main
from train.check import STUDENTS, add_run_options, run_settings, train_tiny_student


def _export_row(work: Path, checkpoint: Path, size: tuple[int, int] | None) -> dict[str, Any]:
    """Export the student and compare ONNX Runtime (its best provider here) with PyTorch (`size` None: the
    checkpoint's own export size)."""
    import numpy as np
    import torch

    from export.onnx import export_checkpoint
    from runtime.backends import load_backend
    from runtime.preprocess import dummy_batch
    from train.engine.checkpoint import model_from_checkpoint

    out = work / "student.onnx"
    try:
        done = export_checkpoint(checkpoint, out, size=size, parity_images=2)
    except UserError as e:
        return row("export", "ONNX export + parity", None, "fail", str(e))
    model, info, _ = model_from_checkpoint(checkpoint, "cpu")
    h, w = done["source"]["options"]["size"]  # `size`, or the one export.onnx chose for the checkpoint
    x = dummy_batch(info, (int(h), int(w)))
    with torch.no_grad():
        ref = model.segment(torch.from_numpy(x)).numpy()
    with load_backend(out) as b:
        got = b.infer(x)
        provider = getattr(b, "providers", ["?"])[0]
    diff = float(np.abs(ref - got).max())
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    return row("export", "ONNX export + parity", f"max |diff| {diff:.2e}, argmax agreement {100 * agree:.3f} %",
               "ok" if agree >= 0.999 else "fail", f"ONNX Runtime {provider}")


def _trt_row(work: Path) -> dict[str, Any]:
    """A TensorRT FP16 build and one run of the exported student, where TensorRT and a GPU exist."""
    import torch

    from runtime.lazy import has_module

    if not has_module("tensorrt"):
        return row("tensorrt", "FP16 build + run", None, "skipped", "TensorRT is not installed here")
    if not torch.cuda.is_available():
        return row("tensorrt", "FP16 build + run", None, "skipped", "no CUDA GPU visible")
    from export.trt import main as trt_main
    from runtime.backends import load_backend
    from runtime.preprocess import dummy_batch

    engine = work / "student.fp16.engine"
    rc = trt_main(["--onnx", str(work / "student.onnx"), "--precision", "fp16", "--out", str(engine)])
    if rc != 0:
        return row("tensorrt", "FP16 build + run", None, "fail", f"export.trt exited {rc} (see above)")
    with load_backend(engine) as b:
        out = b.infer(dummy_batch(b.info, b.input_size))
    return row("tensorrt", "FP16 build + run", f"output {tuple(out.shape)}", "ok")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="student checkpoint (.pt, from train.distill or train.teacher) to export instead of "
                        "training the tiny student; --steps, --batch and --device are then unused")
    add_run_options(p, size_note="; with --checkpoint, the export size (default: the one export.onnx chooses, "
                                 "the config's export.size or the size the model was trained at)")
    add_json_option(p, "export")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.check import finish_report
    from runtime.cli import parse_size
    from runtime.io import check_writable

    check_writable(args.json, "--json file")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UserError(f"--checkpoint {args.checkpoint} does not exist; pass a student .pt written by "
                        "train.distill, or leave --checkpoint out to train a tiny one")
    with tempfile.TemporaryDirectory(prefix="lfd-export-check-") as d:
        work = Path(d)
        if args.checkpoint is not None:
            checkpoint, size, source = Path(args.checkpoint), parse_size(args.size), args.checkpoint
        else:
            size, steps, batch = run_settings(args)
            checkpoint = train_tiny_student(work, size, steps, args.device, batch)
            source = f"{STUDENTS[0]} trained alone here ({steps} steps, batch {batch}, {size[0]}x{size[1]})"
        rows = [_export_row(work, checkpoint, size), _trt_row(work)]
    return finish_report(rows, args.json, checkpoint=source)


if __name__ == "__main__":
    raise SystemExit(main())
