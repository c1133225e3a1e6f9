"""INT8 OpenVINO IR by NNCF post-training quantization, with NNCF's accuracy control as the guard.

    record = quantize_ir(src_onnx, dst_xml, calib_images, val_images, val_labels, info, max_drop=None)

Plain (`max_drop=None`): `nncf.quantize` inserts FakeQuantize operations (int8 weights, per channel;
int8 activations, per tensor) with ranges from the calibration images, then applies fast bias
correction; OpenVINO's CPU plugin runs the result in int8 where the CPU has the instructions for it.

Guarded (`max_drop=D`, points of mIoU): `nncf.quantize_with_accuracy_control` quantizes as above, then
measures the drop with `validation_fn` below on the held-out images and, while
`mIoU_fp32 - mIoU_int8 > D / 100` (an absolute drop; both in [0, 1]), ranks the quantized groups by
how much reverting each alone brings the per-image scores back and reverts the worst, re-measuring
after each step. `validation_fn` is this project's mIoU (runtime.metrics.ConfusionMatrix) over the
images NNCF passes, and the per-image mIoU that NNCF uses to pick the images its ranking looks at.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.openvino_backend import core
from runtime.errors import UserError
from runtime.lazy import lazy_import, require
from runtime.metadata import DataInfo
from runtime.metrics import ConfusionMatrix
from runtime.postprocess import labels_from_output


def image_miou(compiled: Any, items: Iterable[tuple[np.ndarray, np.ndarray]], info: DataInfo
               ) -> tuple[float, list[float]]:
    """NNCF's `validation_fn` contract: (mIoU over all `items`, the mIoU of each item alone), both in
    [0, 1]. `compiled` is an openvino.CompiledModel; each item is (3 x H x W float32 image, H x W labels)."""
    total = ConfusionMatrix(info.num_classes, info.ignore_index)
    per_item: list[float] = []
    for image, label in items:
        out = np.asarray(compiled(image[None])[0])
        pred = labels_from_output(out, label.shape[-2:])[0]
        one = ConfusionMatrix(info.num_classes, info.ignore_index)
        one.update(pred, label)
        total.merge(one)
        per_item.append(float(one.compute()["mIoU"]))
    return float(total.compute()["mIoU"]), per_item


class _Records(logging.Handler):
    """Keeps NNCF's log lines (the accuracy-control rounds, what it reverted) for the report."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def quantized_ops(model: Any) -> list[str]:
    """Names of the operations of an openvino.Model that take a FakeQuantize output: what runs in int8."""
    names = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            continue
        if any(inp.get_source_output().get_node().get_type_name() == "FakeQuantize" for inp in op.inputs()):
            names.add(op.get_friendly_name())
    return sorted(names)


def quantize_ir(src: str | Path, dst: str | Path, calib_images: np.ndarray, val_images: np.ndarray,
                val_labels: np.ndarray, info: DataInfo, max_drop: float | None = None, preset: str = "performance",
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Quantize the ONNX model `src` into the INT8 IR `dst` (`write_ir`, with `info` and `extra` in its
    runtime info) and return a record of how: `fake_quantize` (count), `quantized_ops`, and for the
    guarded path `reverted_ops` (quantized by plain PTQ, float here), plus `nncf_log`.
    `calib_images`/`val_images`: float32 N x 3 x H x W, pre-processed; `preset`: performance
    (symmetric activations) or mixed (asymmetric activations).

    NNCF runs in a spawned worker process: importing and running it changes the state of the process
    it runs in (it imports torch and its own torch integration, keeps OpenVINO Cores), which crashed a
    later torch.multiprocessing.spawn in the same process. The caller's process stays as it was."""
    import concurrent.futures
    import multiprocessing

    require("nncf", "OpenVINO INT8 models")
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        job = pool.submit(_quantize_here, str(src), str(dst), calib_images, val_images, val_labels, info, max_drop,
                          preset, extra)
        return job.result()


def _quantize_here(src: str, dst: str, calib_images: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
                   info: DataInfo, max_drop: float | None, preset: str, extra: dict[str, Any] | None) -> dict[str, Any]:
    """quantize_ir's work, in the worker process."""
    from runtime.backends.openvino_backend import write_ir

    nncf = lazy_import("nncf", "OpenVINO INT8 models")
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    if preset not in presets:
        raise UserError(f"NNCF preset '{preset}': choose performance or mixed")
    model = core().read_model(src)
    calibration = nncf.Dataset(list(calib_images), _batch_of_one)
    common = {"preset": presets[preset], "target_device": nncf.TargetDevice.CPU, "subset_size": len(calib_images)}
    handler = _Records()
    logger = logging.getLogger("nncf")
    logger.addHandler(handler)
    try:
        plain = nncf.quantize(model.clone(), calibration, **common)
        record: dict[str, Any] = {"preset": preset, "quantized_ops_plain": len(quantized_ops(plain))}
        if max_drop is None:
            quantized = plain
        else:
            validation = nncf.Dataset(list(zip(val_images, val_labels)), lambda item: item[0][None])
            quantized = nncf.quantize_with_accuracy_control(
                model, calibration, validation, lambda compiled, items: image_miou(compiled, items, info),
                max_drop=max_drop / 100.0, drop_type=nncf.DropType.ABSOLUTE, **common)
            record["reverted_ops"] = sorted(set(quantized_ops(plain)) - set(quantized_ops(quantized)))
    finally:
        logger.removeHandler(handler)
    record.update({"fake_quantize": sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops()),
                   "quantized_ops": quantized_ops(quantized), "nncf_log": handler.lines})
    write_ir(quantized, dst, info, extra)
    return record


def _batch_of_one(x: np.ndarray) -> np.ndarray:
    return x[None]

