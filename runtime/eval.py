"""Accuracy of any model file on a dataset: mIoU, per-class IoU and pixel accuracy.

    python -m runtime.eval --model student.int8.cpu.onnx --data cityscapes:/data/cityscapes --json eval.json
    python -m runtime.eval --model student.onnx --data synthetic --max-images 20

Each image is pre-processed with the model's own DataInfo (runtime.preprocess) at the model's input size
(or `--size` for dynamic models); the prediction is brought to the label's size (logits: bilinear
upsampling then argmax; label outputs: nearest neighbour) and accumulated in one ConfusionMatrix
(runtime.metrics), so every backend is scored by the same code.

For `--data synthetic`, the generator's parameters come from the model's data block when training
recorded them (`DataInfo.extra["synthetic"]`, e.g. {"size": [256, 512], "seed": 0, "difficulty": 1.0,
"num_val": 60}), so that the model is scored on the scenes it was validated on; else the defaults.
Without `--data`, `DataInfo.extra["dataset"]` is used when present, else `synthetic`.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from runtime.backends import Backend, load_backend
from runtime.cli import add_backend_options, parse_size
from runtime.datasets import DataSpec, SegmentationDataset
from runtime.errors import UserError, cli_main
from runtime.metrics import ConfusionMatrix
from runtime.postprocess import labels_from_output
from runtime.preprocess import preprocess_for


def evaluate(backend: Backend, dataset: SegmentationDataset, size: tuple[int, int] | None = None,
             max_images: int | None = None, progress: bool = False, force_classes: bool = False
             ) -> dict[str, Any]:
    """Score `backend` on `dataset`: ConfusionMatrix.compute() plus image count, seconds and model ms.

    The dataset must name the model's classes in the model's order (`force_classes` scores a dataset whose
    names differ, by index). With `dataset.skip_bad`, corrupt samples are left out and listed in `skipped`."""
    info = backend.info
    if dataset.num_classes != info.num_classes:
        raise UserError(f"{backend.path.name} predicts {info.num_classes} classes but the dataset has "
                        f"{dataset.num_classes}; evaluate on the dataset the model was trained for")
    if list(dataset.classes) != list(info.classes) and not force_classes:
        raise UserError(f"{backend.path.name} predicts the classes [{', '.join(info.classes)}] but the dataset "
                        f"names [{', '.join(dataset.classes)}]; evaluate on the dataset the model was trained "
                        f"for, or pass --force-classes to score by class index")
    cm = ConfusionMatrix(info.num_classes, dataset.ignore_index)
    in_size = size or backend.input_size
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    infer_ms: list[float] = []
    t0 = time.perf_counter()
    bad_before = len(dataset.bad)
    for i in range(n):
        sample = dataset.get_or_skip(i)
        if sample is None:
            continue
        image, label, _name = sample
        out = backend.infer(preprocess_for(info, image, in_size))
        infer_ms.append(backend.last_ms)
        cm.update(labels_from_output(out, label.shape[:2])[0], label)
        if progress and (i + 1) % 10 == 0:
            print(f"  {i + 1}/{n} images", file=sys.stderr)
    result = cm.compute(list(info.classes))
    skipped = dataset.bad[bad_before:]
    if skipped:
        print(f"skipped {len(skipped)} corrupt sample(s) of {n} (skip_bad): {skipped[0]}"
              + (f" (and {len(skipped) - 1} more, listed in the JSON)" if len(skipped) > 1 else ""), file=sys.stderr)
    result.update({"images": n - len(skipped), "skipped": skipped, "seconds": time.perf_counter() - t0,
                   "infer_ms_mean": sum(infer_ms) / len(infer_ms) if infer_ms else None,
                   "confusion_matrix": cm.mat.tolist()})
    return result


def format_result(result: dict[str, Any]) -> str:
    from runtime.report import format_table

    rows = [{"class": k, "IoU": None if v is None else 100 * v} for k, v in result["per_class_iou"].items()]
    rows.append({"class": "mIoU", "IoU": 100 * result["mIoU"]})
    table = format_table(rows, ["class", "IoU"], headers=["class", "IoU %"], digits=1)
    return (f"{table}\npixel accuracy {100 * result['pixel_acc']:.2f} %, mean class accuracy "
            f"{100 * result['mean_acc']:.2f} %, {result['images']} images")


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
        with load_backend(model, args.backend, threads=args.threads, providers=args.providers,
                          device=args.device) as backend:
            dataset = DataSpec.for_model(backend.info, args.data).open(args.split, skip_bad=args.skip_bad)
            print(f"{backend.name}: {model} on {args.data or 'synthetic'}/{args.split} "
                  f"({len(dataset)} images)", file=sys.stderr)
            result = evaluate(backend, dataset, parse_size(args.size), args.max_images, progress=True,
                              force_classes=args.force_classes)
        print(format_result(result))
        report = {"model": str(model), "backend": backend.name, "data": args.data, "split": args.split,
                  "size": list(parse_size(args.size) or backend.input_size), **result}
        dest = args.json or (Path(args.out) / f"{Path(model).name}.json" if args.out else None)
        if dest:
            write_report(dest, report, threads=args.threads)
            print(f"wrote {dest}")
        rows.append({"model": Path(model).name, "backend": backend.name, "mIoU": 100 * result["mIoU"],
                     "pixel_acc": 100 * result["pixel_acc"], "mean_acc": 100 * result["mean_acc"],
                     "images": result["images"]})
    if len(rows) > 1:
        cols, heads = ["model", "backend", "mIoU", "pixel_acc", "mean_acc", "images"], \
            ["model", "backend", "mIoU %", "pixel acc %", "mean acc %", "images"]
        print(format_table(rows, cols, headers=heads))
        if args.out:
            write_report(Path(args.out) / "summary.json", {"models": rows}, threads=args.threads)
            atomic_write_text(Path(args.out) / "summary.md", format_table(rows, cols, markdown=True, headers=heads) + "\n")
            print(f"wrote {Path(args.out) / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
