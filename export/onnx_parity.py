"""Parity between the PyTorch model and its ONNX export on real frames.

Frames come from the checkpoint's training dataset (`train.engine.checkpoint.training_data`, its validation
split) or a `--data name:root` override, pre-processed by runtime.preprocess at the export size. Reported:
`max_abs_diff` = max |logits_torch - logits_onnx| over all frames and pixels (None for the argmax
variant, whose output has no logits) and `argmax_agreement` = fraction of pixels where the ONNX labels
equal argmax of the PyTorch logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.datasets import DataSpec
from runtime.metadata import DataInfo
from runtime.preprocess import frames_uint8, preprocess, preprocess_for


def parity_frames(spec: DataSpec, size: tuple[int, int], count: int, split: str = "val"
                  ) -> tuple[np.ndarray, list[str]]:
    """The first `count` frames of `split` resized to `size` (uint8 N x H x W x 3 RGB), with their names."""
    ds = spec.open(split)
    n = min(count, len(ds))
    samples = [ds[i] for i in range(n)]
    return frames_uint8([s[0] for s in samples], size), [s[2] for s in samples]


def compare(model: nn.Module, onnx_path: str | Path, frames: np.ndarray, argmax: bool, info: DataInfo
            ) -> dict[str, Any]:
    """Run `model.segment` on the pre-processed frames and the ONNX file on what it takes (the same float
    batch, or the uint8 frames for a --uint8-input export), frame by frame; return the parity figures."""
    backend = OnnxRuntimeBackend(onnx_path, providers="cpu")  # the runtime's own session, on the CPU
    max_diff = 0.0
    agree = total = 0
    for frame in frames:
        x = preprocess(frame, None, info.mean, info.std)
        with torch.no_grad():
            ref = model.segment(torch.from_numpy(x)).float().numpy()  # type: ignore[operator]
        # a --uint8-input model takes the frame itself, in its channel order, as runtime.preprocess gives it
        got = backend.infer(preprocess_for(backend.info, frame, frame.shape[:2]) if backend.uint8_input else x)
        ref_labels = ref.argmax(1)
        if argmax:
            labels = got.astype(np.int64)
        else:
            max_diff = max(max_diff, float(np.abs(ref - got).max()))
            labels = got.argmax(1)
        agree += int((labels == ref_labels).sum())
        total += ref_labels.size
    return {"frames": int(len(frames)), "max_abs_diff": None if argmax else max_diff,
            "argmax_agreement": agree / max(total, 1)}
