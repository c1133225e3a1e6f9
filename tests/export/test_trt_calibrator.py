"""The legacy INT8 calibrator's pure-numpy core: batching, the last partial batch, the cache file."""

from __future__ import annotations

import numpy as np
import pytest

from export.trt_calibrator import CalibrationBatches, load_calibration_set
from runtime.errors import UserError


def _set(tmp_path, n=7, h=8, w=16):
    data = np.arange(n * 3 * h * w, dtype=np.float32).reshape(n, 3, h, w)
    np.save(tmp_path / "calib.npy", data)
    return data


def test_batches_are_consecutive_and_the_partial_one_is_dropped(tmp_path):
    data = _set(tmp_path)
    arr = load_calibration_set(tmp_path / "calib.npy")
    assert isinstance(arr, np.memmap)
    b = CalibrationBatches(arr, batch_size=3, shape=(3, 3, 8, 16))
    assert (b.num_batches, b.num_images) == (2, 6)
    got = []
    while (x := b.next_batch()) is not None:
        assert x.flags["C_CONTIGUOUS"] and x.dtype == np.float32 and x.shape == (3, 3, 8, 16)
        got.append(x)
    np.testing.assert_array_equal(np.concatenate(got), data[:6])
    assert b.next_batch() is None
    b.reset()
    np.testing.assert_array_equal(b.next_batch(), data[:3])


def test_exact_multiple_uses_every_image(tmp_path):
    data = _set(tmp_path, n=6)
    b = CalibrationBatches(data, batch_size=2)
    seen = []
    while (x := b.next_batch()) is not None:
        seen.append(x)
    assert len(seen) == 3 and b.num_images == 6
    np.testing.assert_array_equal(seen[-1], data[4:6])


def test_errors(tmp_path):
    data = _set(tmp_path, n=2)
    with pytest.raises(UserError, match="fewer than one batch"):
        CalibrationBatches(data, batch_size=4)
    with pytest.raises(UserError, match="8x16 but the engine is built for 64x128"):
        CalibrationBatches(data, batch_size=1, shape=(1, 3, 64, 128))
    with pytest.raises(UserError, match="--calib-cache"):
        CalibrationBatches(None, batch_size=1, cache_path=tmp_path / "missing.cache")
    with pytest.raises(UserError, match="not a calibration set"):
        load_calibration_set(tmp_path / "calib.json")
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(UserError, match=r"expected float32 N x 3 x H x W"):
        load_calibration_set(tmp_path / "bad.npy")


def test_cache_written_then_reused_without_images(tmp_path):
    data = _set(tmp_path, n=2)
    cache = tmp_path / "sub" / "s.calib"
    b = CalibrationBatches(data, batch_size=1, cache_path=cache)
    assert b.cached() is None
    b.save(b"TRT-8502-EntropyCalibration2\nimages: 3c010a14\n")
    reuse = CalibrationBatches(None, batch_size=1, cache_path=cache)
    assert reuse.cached() == cache.read_bytes() and reuse.cached().startswith(b"TRT-8502")
    assert reuse.next_batch() is None and reuse.num_images == 0
