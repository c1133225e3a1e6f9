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
    return np.stack([normalize(resize_image(f, size) if size else f, mean, std) for f in frame_list(frames)], 0)


def frame_list(frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One frame or several as a list, each checked to be uint8 H x W x 3."""
    items = [frames] if isinstance(frames, np.ndarray) and frames.ndim == 3 else list(frames)
    for f in items:
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"expected uint8 H x W x 3 frames, got {f.dtype} {f.shape}")
    return items


def preprocess_for(info: DataInfo, frames: np.ndarray | Sequence[np.ndarray],
                   size: tuple[int, int] | None = None) -> np.ndarray:
    """What the model file takes, at its input size (or `size` for dynamic models): `preprocess` with its
    mean/std (float models), or the resized uint8 N x H x W x 3 frames in its channel order (models
    exported with --uint8-input, which normalise in the graph)."""
    size = size or tuple(info.input_size)  # type: ignore[assignment]
    if info.uint8_input:
        return frames_uint8(frames, size, bgr=info.input_format == "uint8-bgr")
    return preprocess(frames, size, info.mean, info.std)


def frames_uint8(frames: np.ndarray | Sequence[np.ndarray], size: tuple[int, int] | None, bgr: bool = False
                 ) -> np.ndarray:
    """RGB uint8 frames -> uint8 N x H x W x 3 at `size` (same resize rule), in BGR order with `bgr`."""
    out = [resize_image(f, size) if size else f for f in frame_list(frames)]
    return np.ascontiguousarray(np.stack([r[..., ::-1] if bgr else r for r in out], 0))


def dummy_batch(info: DataInfo, size: tuple[int, int], batch: int = 1, seed: int = 0) -> np.ndarray:
    """A fixed input of the model's kind for timing (speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    if info.uint8_input:
        return rng.integers(0, 256, (batch, size[0], size[1], 3), dtype=np.uint8)
    return rng.standard_normal((batch, 3, size[0], size[1])).astype(np.float32)


class Preprocessor:
    """The live path's pre-processing: one resize (the same rule as `resize_image`) and one fused pass of
    normalisation and HWC -> NCHW into a preallocated float32 buffer (OpenCV's blobFromImageWithParams:
    `(x - 255 mean) * 1 / (255 std)`, within 1 ulp of `normalize`). Keeps `buffers` outputs in a ring, so
    a batch is not overwritten while later stages still hold it."""

    def __init__(self, info: DataInfo, size: tuple[int, int], buffers: int = 4) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.uint8 = info.uint8_input
        self.bgr = info.input_format == "uint8-bgr"
        self.mean = np.asarray(info.mean, np.float64)
        self.std = np.asarray(info.std, np.float64)
        self._ring = [np.empty((1, 3, *self.size), np.float32) for _ in range(max(1, buffers))]
        self._next = 0
        self._params = None
        if hasattr(cv2, "dnn") and hasattr(cv2.dnn, "blobFromImageWithParams"):
            p = cv2.dnn.Image2BlobParams()
            p.scalefactor = tuple(float(v) for v in 1.0 / (255.0 * self.std))
            p.mean = tuple(float(v) for v in 255.0 * self.mean)
            p.size = (self.size[1], self.size[0])
            p.ddepth = cv2.CV_32F
            p.swapRB = False
            self._params = p

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """uint8 H x W x 3 RGB -> float32 1 x 3 x H x W (a ring buffer); uint8-input models: 1 x H x W x 3."""
        image = resize_image(frame, self.size)
        if self.uint8:
            return (cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if self.bgr else np.ascontiguousarray(image))[None]
        out = self._ring[self._next % len(self._ring)]
        self._next += 1
        if self._params is not None:
            cv2.dnn.blobFromImageWithParams(image, out, self._params)
        else:
            out[0] = normalize(image, self.mean, self.std)  # type: ignore[arg-type]
        return out
