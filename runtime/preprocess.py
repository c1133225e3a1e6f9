"""The one definition of pre-processing, shared by training, calibration and every runtime backend.

A frame is uint8 H x W x 3 **RGB**. The network input is float32 N x 3 x H x W:
`x = (resize(frame) / 255 - mean) / std`, resize bilinear (cv2.INTER_LINEAR), mean/std on 0..1 RGB.
Labels are resized with nearest neighbour so that no new ids appear.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from runtime.metadata import DataInfo


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV captures BGR; everything downstream of a source is RGB."""
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an H x W x C uint8/float image to `size` = (H, W); a no-op at that size."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    interp = cv2.INTER_AREA if image.shape[0] > 2 * h else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an H x W label map to `size` = (H, W).

    INTER_NEAREST_EXACT samples pixel centres, so labels stay aligned with the bilinearly resized image
    (plain INTER_NEAREST is shifted by up to half a pixel); training uses the same rule (NEAREST_EXACT)."""
    h, w = size
    if label.shape[:2] == (h, w):
        return label
    return cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 H x W x 3 RGB -> float32 3 x H x W, `(x / 255 - mean) / std`."""
    scale = np.asarray(std, np.float32) * 255.0
    x = (image.astype(np.float32) - np.asarray(mean, np.float32) * 255.0) / scale
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(
    frames: np.ndarray | Sequence[np.ndarray],
    size: tuple[int, int] | None,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """One RGB frame (H x W x 3) or a list of them -> float32 N x 3 x size[0] x size[1].

    `size=None` keeps each frame's own size (then all frames must share it)."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = [frames]
    out = []
    for f in frames:
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"expected uint8 H x W x 3 frames, got {f.dtype} {f.shape}")
        out.append(normalize(resize_image(f, size) if size else f, mean, std))
    return np.stack(out, 0)


def preprocess_for(info: DataInfo, frames: np.ndarray | Sequence[np.ndarray],
                   size: tuple[int, int] | None = None) -> np.ndarray:
    """`preprocess` with the model's own mean/std and input size (or `size` for dynamic models)."""
    return preprocess(frames, size or tuple(info.input_size), info.mean, info.std)  # type: ignore[arg-type]
