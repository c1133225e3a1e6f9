"""The legacy implicit INT8 calibrator for TensorRT 8.5 and 10.x (JetPack 5/6): an
IInt8EntropyCalibrator2 over the calibration set that calib/ caches (a float32 N x 3 x H x W `.npy`).

TensorRT 10.1 deprecated it and 11 removed it; there a Q/DQ model from
`python -m calib.quantize --target trt` is the way to INT8 (export.trt_choices decides).

`CalibrationBatches` (pure numpy, tested without TensorRT) cuts the set into fixed-size batches and
reads/writes the calibration cache; `make_entropy_calibrator` wraps it in the TensorRT class, created
inside the function because tensorrt is imported only there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import UserError
from runtime.io import atomic_write_bytes


def load_calibration_set(path: str | Path) -> np.ndarray:
    """Memory-map the cached calibration set `path` (.npy, float32 N x 3 x H x W)."""
    p = Path(path)
    if p.suffix != ".npy" or not p.is_file():
        raise UserError(f"--calib-data {path} is not a calibration set: pass the float32 N x 3 x H x W .npy that calib/ "
                        "caches (made by python -m calib.quantize --data dataset:root)")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the calibration set {p} ({e}); delete it and let calib/ rebuild it") from e
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.dtype != np.float32:
        raise UserError(f"calibration set {p} is {arr.dtype} {tuple(arr.shape)}, expected float32 N x 3 x H x W")
    return arr


class CalibrationBatches:
    """Fixed-shape batches of `data` (N x 3 x H x W) for a calibrator, plus its cache file.

    Batches are consecutive slices of `batch_size` images. A last partial batch is dropped (TensorRT
    expects every batch at the calibration shape), so `num_images` = batch_size * (N // batch_size).
    `shape`, where given, is the engine's calibration input shape (batch, 3, H, W): H and W must match.
    """

    def __init__(self, data: np.ndarray | None, batch_size: int, cache_path: str | Path | None = None,
                 shape: tuple[int, ...] | None = None) -> None:
        if batch_size < 1:
            raise UserError(f"calibration batch size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.cache_path = Path(cache_path) if cache_path else None
        self.data = data
        self.index = 0
        if data is not None:
            if shape is not None and tuple(data.shape[2:]) != tuple(shape[2:]):
                raise UserError(f"the calibration images are {data.shape[2]}x{data.shape[3]} but the engine is built for "
                                f"{shape[2]}x{shape[3]}; cache the calibration set at the engine's input size")
            if data.shape[0] < batch_size:
                raise UserError(f"the calibration set has {data.shape[0]} images, fewer than one batch of {batch_size}")
        elif self.cached() is None:
            raise UserError("INT8 calibration needs images (--calib-data) or an existing --calib-cache")

    @property
    def num_batches(self) -> int:
        return 0 if self.data is None else self.data.shape[0] // self.batch_size

    @property
    def num_images(self) -> int:
        return self.num_batches * self.batch_size

    def next_batch(self) -> np.ndarray | None:
        """The next contiguous float32 batch, or None when the set is exhausted."""
        if self.data is None or self.index >= self.num_batches:
            return None
        lo = self.index * self.batch_size
        self.index += 1
        return np.ascontiguousarray(self.data[lo:lo + self.batch_size], dtype=np.float32)

    def reset(self) -> None:
        self.index = 0

    def cached(self) -> bytes | None:
        """The calibration cache's bytes if the file exists and is not empty (TensorRT then skips batches)."""
        if self.cache_path is not None and self.cache_path.is_file():
            data = self.cache_path.read_bytes()
            return data or None
        return None

    def save(self, cache: bytes) -> None:
        if self.cache_path is not None:
            atomic_write_bytes(self.cache_path, bytes(cache))


def make_entropy_calibrator(batches: CalibrationBatches, input_name: str) -> Any:
    """A tensorrt.IInt8EntropyCalibrator2 feeding `batches` to input `input_name` through device memory."""
    import tensorrt as trt  # the caller (export.trt_build) imported it with its install hint

    from runtime.backends.tensorrt_cuda import open_cuda

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = batches
            self.cuda = open_cuda()
            self.device = 0
            if batches.data is not None:
                shape = (batches.batch_size, *batches.data.shape[1:])
                self.device = self.cuda.malloc(int(np.prod(shape)) * 4)

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: list[str]) -> list[int]:
            if input_name not in names:
                raise UserError(f"TensorRT asked to calibrate inputs {names}, but the calibration set feeds {input_name!r}")
            batch = batches.next_batch()
            if batch is None:
                return []  # tells TensorRT calibration is done
            self.cuda.h2d(self.device, batch)
            return [self.device]

        def read_calibration_cache(self) -> bytes | None:  # type: ignore[override]
            return batches.cached()

        def write_calibration_cache(self, cache: Any) -> None:
            batches.save(bytes(memoryview(cache)))

        def close(self) -> None:
            if self.device:
                self.cuda.free(self.device)
                self.device = 0
            self.cuda.close()

    return EntropyCalibrator()
