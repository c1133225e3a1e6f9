"""The two measurements of a model that every command shares: accuracy (`evaluate`: mIoU, per-class
IoU and pixel accuracy of a backend on a dataset) and latency (`time_backend`: the backend's own
per-call milliseconds after a warm-up; `time_postprocess`: the host's work from that output to labels). runtime.eval, runtime.bench, runtime.jetson_bench and the
training side's checkpoint evaluation call these, so every backend is scored and timed by the same code.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from runtime.backends import Backend
from runtime.datasets import SegmentationDataset
from runtime.errors import UserError
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
    in_size = backend.run_size(size)
    if dataset.num_classes != info.num_classes:
        raise UserError(f"{backend.path.name} predicts {info.num_classes} classes but the dataset has "
                        f"{dataset.num_classes}; evaluate on the dataset the model was trained for")
    if list(dataset.classes) != list(info.classes) and not force_classes:
        raise UserError(f"{backend.path.name} predicts the classes [{', '.join(info.classes)}] but the dataset "
                        f"names [{', '.join(dataset.classes)}]; evaluate on the dataset the model was trained "
                        f"for, or pass --force-classes to score by class index")
    cm = ConfusionMatrix(info.num_classes, dataset.ignore_index)
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


def time_postprocess(backend: Backend, batch: np.ndarray, size: tuple[int, int], iters: int = 10) -> list[float]:
    """Milliseconds the runtime spends bringing one call's output to labels at `size` (`labels_from_output`
    by the backend's output kind: arg-max of full logits, bilinear upsampling then arg-max of native
    logits, nearest upsampling of native labels, nothing for full-size labels), `iters` times. Output kinds
    differ in how much of the work is left to the host; a latency that ignores it favours the logit kinds."""
    out = backend.infer(batch)
    ms: list[float] = []
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        labels_from_output(out, size, backend.output)
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def time_backend(backend: Backend, batch: np.ndarray, warmup: int = 10, iters: int | None = 100,
                 duration_s: float | None = None) -> list[float]:
    """Warm up, then time calls (ms each, the backend's own `last_ms`) for `iters` calls or `duration_s`
    seconds, whichever comes first (at least one call)."""
    for _ in range(warmup):
        backend.infer(batch)
    ms: list[float] = []
    t_end = time.perf_counter() + duration_s if duration_s else float("inf")
    while True:
        backend.infer(batch)
        ms.append(backend.last_ms)
        if (iters is not None and len(ms) >= iters) or time.perf_counter() >= t_end:
            return ms
