"""Accuracy of any model file on a dataset: mIoU, per-class IoU and pixel accuracy.

    python -m runtime.eval --model student.int8.cpu.onnx --data cityscapes:/data/cityscapes --json eval.json
    python -m runtime.eval --model student.onnx --data synthetic --max-images 20

Each image is pre-processed with the model's own DataInfo (runtime.preprocess) at the model's input size
(or `--size` for dynamic models); the prediction is brought to the label's full size, never the label
down to the model's (runtime.postprocess.labels_at, by the model's output kind: full or native-stride
logits are upsampled bilinearly then arg-maxed, so both score alike; labels and native labels are
nearest-upsampled) and accumulated in one ConfusionMatrix (runtime.metrics) by `runtime.measure.evaluate`,
so every backend is scored by the same code. The report names the output kind and its stride.

For `--data synthetic`, the generator's parameters come from the model's data block when training
recorded them (`DataInfo.extra["synthetic"]`, e.g. {"size": [256, 512], "seed": 0, "difficulty": 1.0,
"num_val": 60}), so that the model is scored on the scenes it was validated on; else the defaults.
Without `--data`, a checkpoint (.pt) is scored on the dataset it was trained on (its resolved config's
data block), other models on `DataInfo.extra["dataset"]` when present, else `synthetic`.
"""

from __future__ import annotations

import argparse
import sys

from runtime.backends import load_backend
from runtime.cli import add_backend_options, backend_options, parse_size
from runtime.datasets import DataSpec
from runtime.errors import UserError, cli_main
from runtime.measure import evaluate, format_result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, nargs="+",
                   help="one or more .pt checkpoints, .onnx models or TensorRT .engine files; with several, "
                        "a summary table compares them")
    p.add_argument("--data", help="dataset as name:root (cityscapes:/data/cityscapes, voc:, camvid:, ade20k:, "
                   "folder:) or synthetic (default: the model's training dataset when recorded, else synthetic)")
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--size", help="network input H x W for dynamic models (default: the model's input size)")
    p.add_argument("--max-images", type=int, help="score only the first N images")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out corrupt images or labels (counted, listed in the JSON) instead of stopping")
    p.add_argument("--force-classes", action="store_true",
                   help="score a dataset whose class names differ from the model's (same count) by index")
    add_backend_options(p)
    p.add_argument("--json", help="write the result (with the environment) to this JSON file (one model)")
    p.add_argument("--out", help="folder for one <model file name>.json per model and summary.md/.json")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from runtime.io import atomic_write_text, check_writable
    from runtime.report import format_table, write_report

    args = build_parser().parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images {args.max_images} must be at least 1")
    if args.json and len(args.model) > 1:
        raise UserError("--json names one file; with several models use --out DIR")
    check_writable(args.json, "--json file")
    check_writable(args.out, "--out folder", folder=True)
    rows = []
    for model in args.model:
        with load_backend(model, args.backend, **backend_options(args)) as backend:
            spec = (backend.data_spec.with_override(args.data) if backend.data_spec is not None
                    else DataSpec.for_model(backend.info, args.data))
            dataset = spec.open(args.split, skip_bad=args.skip_bad, skip_option="--skip-bad")
            print(f"{backend.name}: {model} ({backend.output} output, stride {backend.output_stride}) on "
                  f"{args.data or spec.text}/{args.split} ({len(dataset)} images)", file=sys.stderr)
            output = {"output": backend.output, "output_stride": backend.output_stride}
            result = evaluate(backend, dataset, parse_size(args.size), args.max_images, progress=True,
                              force_classes=args.force_classes)
        print(format_result(result))
        report = {"model": str(model), "backend": backend.name, **backend.training, "data": args.data,
                  "split": args.split,
                  "size": list(parse_size(args.size) or backend.input_size), **output, **result}
        dest = args.json or (Path(args.out) / f"{Path(model).name}.json" if args.out else None)
        if dest:
            write_report(dest, report, threads=args.threads)
            print(f"wrote {dest}")
        rows.append({"model": Path(model).name, "backend": backend.name, "output": output["output"],
                     "mIoU": 100 * result["mIoU"],
                     "pixel_acc": 100 * result["pixel_acc"], "mean_acc": 100 * result["mean_acc"],
                     "images": result["images"]})
    if len(rows) > 1:
        cols, heads = ["model", "backend", "output", "mIoU", "pixel_acc", "mean_acc", "images"], \
            ["model", "backend", "output", "mIoU %", "pixel acc %", "mean acc %", "images"]
        print(format_table(rows, cols, headers=heads))
        if args.out:
            write_report(Path(args.out) / "summary.json", {"models": rows}, threads=args.threads)
            atomic_write_text(Path(args.out) / "summary.md", format_table(rows, cols, markdown=True, headers=heads) + "\n")
            print(f"wrote {Path(args.out) / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
