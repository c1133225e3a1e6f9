"""Post-processing: logits -> labels -> colours -> overlay.

Two definitions of "the labels of a frame", on purpose:

- exact (`labels_at` / `labels_from_output`, used by runtime.eval, calibration and every mIoU): the logits
  (full-size or at the model's own stride, `export.onnx --output native`) are upsampled bilinearly to the
  label's size, then arg-maxed. This is the definition training validates with. Label outputs (`labels`,
  `native-labels`) are nearest-upsampled: at native stride that differs from the exact labels on boundaries.
- fast (`Painter`, used by runtime.infer for drawing): arg-max at the model's output size, then the label
  map (or, with `filter="linear"`, the colour mask) is resized to the frame. At 16 classes and a 4x
  smaller output this does 1/16 of the resize work and 1/16 of the arg-max; it equals the exact labels
  where the output size equals the frame size, and elsewhere differs only on class boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def upsample_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of K x H x W (or N x K x H x W) float logits to `size` = (H, W)."""
    if logits.ndim == 4:
        return np.stack([upsample_logits(x, size) for x in logits], 0)
    k, h, w = logits.shape
    if (h, w) == tuple(size):
        return logits
    out = np.empty((k, size[0], size[1]), np.float32)
    # cv2.resize takes at most CV_CN_MAX channels per call: 512 in OpenCV 4, 128 in OpenCV 5 (ADE20K has 150).
    for s in range(0, k, 128):
        chunk = np.ascontiguousarray(logits[s:s + 128].transpose(1, 2, 0).astype(np.float32))
        r = cv2.resize(chunk, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        out[s:s + 128] = r.reshape(size[0], size[1], -1).transpose(2, 0, 1)
    return out


def argmax(logits: np.ndarray) -> np.ndarray:
    """Class axis argmax: K x H x W -> H x W, or N x K x H x W -> N x H x W (uint8 when K <= 256).

    Ties go to the lowest class, as in `np.argmax`. A running maximum over the K contiguous planes is
    about 2.5x faster than `np.argmax(axis=0)`, whose reduction strides across planes; at 19 x 512 x 1024
    this is the costliest step of drawing a frame."""
    if logits.ndim == 4:
        return np.stack([argmax(x) for x in logits], 0)
    k = logits.shape[0]
    if k > 256:
        return logits.argmax(axis=0).astype(np.int32)
    best = logits[0].copy()
    labels = np.zeros(logits.shape[1:], np.uint8)
    mask = np.empty(logits.shape[1:], bool)
    for i in range(1, k):
        np.greater(logits[i], best, out=mask)
        np.maximum(best, logits[i], out=best)
        np.putmask(labels, mask, np.uint8(i))
    return labels


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an H x W label map to `size` = (H, W)."""
    if labels.shape[:2] == tuple(size):
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]], ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """H x W ids -> H x W x 3 uint8 RGB through a lookup table; ids outside the palette get `ignore_color`."""
    lut = np.tile(np.asarray(ignore_color, np.uint8), (256 if labels.dtype == np.uint8 else labels.max() + 1, 1))
    n = min(len(palette), len(lut))
    lut[:n] = np.asarray(palette[:n], np.uint8)
    return lut[labels]


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend: `(1 - alpha) * image + alpha * color_mask` (both uint8 H x W x 3, same colour order)."""
    if color_mask.shape[:2] != image.shape[:2]:
        color_mask = cv2.resize(color_mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)
    return cv2.addWeighted(image, 1.0 - alpha, color_mask, alpha, 0.0)


def labels_at(output: np.ndarray, kind: str | None, size: tuple[int, int] | None) -> np.ndarray:
    """One frame's model output -> its H x W labels at `size` (the frame's or the label's), by output kind
    (runtime.metadata.OUTPUT_KINDS; the backend's `output`):

    - full, native: K x h x w float logits, bilinearly upsampled to `size`, then arg-maxed (the exact
      definition: for native logits this is what the full graph computes inside, so both score alike);
    - labels, native-labels: h x w integer labels, nearest-upsampled (cv2.INTER_NEAREST_EXACT) to `size`.

    `kind` None reads logits or labels from the array's rank (3 = logits, 2 = labels). `size` None keeps the
    output's own size. Labels are uint8 for up to 256 classes (int32 above)."""
    if kind is None:
        kind = "full" if output.ndim == 3 else "labels"
    if kind in ("full", "native"):
        if output.ndim != 3:
            raise ValueError(f"{kind} output: expected K x H x W logits, got shape {output.shape}")
        if size is not None and output.shape[1:] != tuple(size):
            output = upsample_logits(output, size)
        return argmax(output)
    if kind in ("labels", "native-labels"):
        if output.ndim != 2:
            raise ValueError(f"{kind} output: expected H x W labels, got shape {output.shape}")
        return output if size is None else resize_labels(output, size)
    raise ValueError(f"unknown output kind {kind!r}; expected full, native, labels or native-labels")


def labels_from_output(output: np.ndarray, size: tuple[int, int] | None = None, kind: str | None = None
                       ) -> np.ndarray:
    """A backend's batched output -> N x H x W labels at `size`, item by item through `labels_at`.

    `kind` is the backend's `output`; None reads it from the rank: float N x K x h x w logits are upsampled
    then arg-maxed, integer N x h x w labels are nearest-resized."""
    if output.ndim not in (3, 4):
        raise ValueError(f"expected N x K x H x W logits or N x H x W labels, got shape {output.shape}")
    if kind is None:
        kind = "full" if output.ndim == 4 else "labels"
    if kind in ("labels", "native-labels") and output.ndim == 3 and (size is None or output.shape[1:] == tuple(size)):
        return output  # already the labels asked for: no copy
    return np.stack([labels_at(o, kind, size) for o in output], 0)


FILTERS = ("nearest", "linear")


class Painter:
    """The fast drawing path of runtime.infer: model output -> labels at the model's size -> colour mask
    through a uint8 look-up table -> resized to the frame (nearest, or linear for smooth edges) -> blended
    into a preallocated buffer. `paint` returns (labels at the model's size, RGB picture); the picture
    buffer is reused only after the caller is done with it (one per frame in flight is kept)."""

    def __init__(self, palette: Sequence[Sequence[int]], mode: str = "overlay", alpha: float = 0.5,
                 filter: str = "nearest", buffers: int = 4) -> None:
        if filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}")
        self.lut = np.zeros((256, 3), np.uint8)
        n = min(len(palette), 256)
        self.lut[:n] = np.asarray(palette[:n], np.uint8)
        self.mode, self.alpha, self.filter = mode, float(alpha), filter
        self._buffers: list[np.ndarray] = []
        self._next = 0
        self._count = max(1, buffers)

    def labels(self, output: np.ndarray) -> np.ndarray:
        """N x K x h x w logits (arg-max at h x w) or N x h x w labels -> the first item's h x w labels."""
        if output.ndim == 4:
            return argmax(output[0])
        if output.ndim == 3:
            return output[0]
        raise ValueError(f"expected N x K x H x W logits or N x H x W labels, got shape {output.shape}")

    def colour(self, labels: np.ndarray) -> np.ndarray:
        if labels.dtype == np.uint8:
            return self.lut[labels]
        return self.lut[np.clip(labels, 0, 255).astype(np.uint8)]

    def _buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        if not self._buffers or self._buffers[0].shape != shape:
            self._buffers = [np.empty(shape, np.uint8) for _ in range(self._count)]
        buf = self._buffers[self._next % self._count]
        self._next += 1
        return buf

    def paint(self, image: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels at the model's output size, RGB picture of the frame's size) for one frame."""
        labels = self.labels(output)
        h, w = image.shape[:2]
        mask = self.colour(labels)
        if mask.shape[:2] != (h, w):
            interp = cv2.INTER_LINEAR if self.filter == "linear" else cv2.INTER_NEAREST_EXACT
            mask = cv2.resize(mask, (w, h), interpolation=interp)
        if self.mode == "mask":
            return labels, mask
        if self.mode == "side-by-side":
            out = self._buffer((h, 2 * w, 3))
            out[:, :w] = image
            out[:, w:] = cv2.addWeighted(image, 1.0 - self.alpha, mask, self.alpha, 0.0)
            return labels, out
        out = self._buffer((h, w, 3))
        cv2.addWeighted(image, 1.0 - self.alpha, mask, self.alpha, 0.0, dst=out)
        return labels, out
