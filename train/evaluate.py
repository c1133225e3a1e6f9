"""`python -m train.evaluate --checkpoint S.pt`: score any checkpoint (student, teacher, last.pt) on a split.

The checkpoint is read with its clear errors (train.checkpoint), then scored by runtime.eval through the
PyTorch backend, so that a .pt file is measured by the same pre-processing (its data block's mean/std
and input size), upsampling, argmax and ConfusionMatrix as its ONNX and TensorRT exports. Without
`--data`, the dataset the checkpoint was trained on is used (with the synthetic generator's options).
"""

from __future__ import annotations

import argparse
import sys

from runtime.errors import UserError, cli_main
from runtime.metadata import DataInfo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python -m train.evaluate --checkpoint runs/demo-lfd-s0/best.pt --json eval.json")
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt (best.pt, final.pt or last.pt of a run)")
    p.add_argument("--data", help="dataset as name:root (cityscapes:/data/cityscapes, voc:, camvid:, ade20k:, "
                   "folder:) or synthetic (default: the dataset the checkpoint was trained on)")
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--size", help="network input H x W, e.g. 512x1024 (default: the checkpoint's input size); "
                   "predictions are upsampled to each label's own size")
    p.add_argument("--max-images", type=int, help="score only the first N images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out corrupt images or labels (counted, listed in the JSON) instead of stopping")
    p.add_argument("--force-classes", action="store_true",
                   help="score a dataset whose class names differ from the checkpoint's (same count) by index")
    p.add_argument("--json", help="write the result (per-class IoU, mIoU, pixel accuracy, environment) here")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from runtime.backends import load_backend
    from runtime.cli import parse_size
    from runtime.io import check_writable
    from runtime.measure import evaluate, format_result
    from runtime.report import write_report
    from train.checkpoint import load_checkpoint, training_data

    args = build_parser().parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images {args.max_images} must be at least 1")
    check_writable(args.json, "--json file")
    ckpt = load_checkpoint(args.checkpoint)  # a missing, corrupt or foreign file fails here, clearly
    size = parse_size(args.size)
    with load_backend(args.checkpoint, "torch", threads=args.threads, device=args.device) as backend:
        dataset = training_data(ckpt, DataInfo.from_dict(ckpt["data"]), args.data).open(
            args.split, skip_bad=args.skip_bad, skip_option="--skip-bad")
        print(f"{args.checkpoint} on {args.data or 'its training dataset'}/{args.split} ({len(dataset)} images)",
              file=sys.stderr)
        result = evaluate(backend, dataset, size, args.max_images, progress=True,
                          force_classes=args.force_classes)
    print(format_result(result))
    if args.json:
        train = ckpt.get("train") or {}
        report = {"checkpoint": str(args.checkpoint), "method": train.get("method"),
                  "iterations": train.get("iterations"), "data": args.data, "split": args.split,
                  "size": list(size or backend.input_size), **result}
        write_report(args.json, report, threads=args.threads)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
