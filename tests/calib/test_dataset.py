"""Calibration set: class-covering selection, runtime pre-processing, cache, missing classes."""

from __future__ import annotations

import numpy as np
import pytest
from calib_standins import SIZE, InMemory, data_info

from calib.dataset import (
    ArrayDataReader,
    build_calibration_set,
    load_calibration_cache,
    select_images,
)
from runtime.errors import UserError
from runtime.preprocess import preprocess_for


def _samples(n: int, classes_per_image: list[set[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        cls = sorted(classes_per_image[i % len(classes_per_image)])
        label = np.full((32, 48), 255, np.uint8)
        for j, c in enumerate(cls):
            label[:, j * 8:(j + 1) * 8] = c
        out.append((rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), label))
    return out


def test_greedy_selection_covers_every_class_then_fills_by_seed():
    sets = [{0}] * 10 + [{1, 2}] + [{0}] * 5 + [{3}]
    picked = select_images(sets, 4, seed=0)
    assert len(picked) == 4 and len(set(picked)) == 4
    assert set().union(*(sets[i] for i in picked)) == {0, 1, 2, 3}
    assert picked[0] == 10  # the image that adds the most classes first
    assert select_images(sets, 4, seed=0) == picked
    assert select_images(sets, 30, seed=0) == select_images(sets, 30, seed=0)
    assert sorted(select_images(sets, 30, seed=0)) == list(range(len(sets)))


def test_calibration_set_is_preprocessed_by_runtime_and_cached(tmp_path):
    info = data_info(3)
    ds = InMemory(_samples(12, [{0}, {0}, {0}, {1}, {0}, {2}]), info.classes)
    cs = build_calibration_set(ds, "mem", info, SIZE, count=5, seed=0, cache_dir=tmp_path)
    assert cs.images.shape == (5, 3, *SIZE) and cs.images.dtype == np.float32
    idx = [int(n.removeprefix("img")) for n in cs.names]
    assert {1, 2} <= {int(ds[i][1][0, 0]) for i in idx}  # rare classes were picked
    np.testing.assert_array_equal(cs.images, preprocess_for(info, [ds[i][0] for i in idx], SIZE))
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]
    again = load_calibration_cache(cs.path)
    assert again.names == cs.names and again.manifest["classes_missing"] == []
    ds.load = None  # a cache hit must not read the dataset
    np.testing.assert_array_equal(build_calibration_set(ds, "mem", info, SIZE, 5, 0, tmp_path).images, cs.images)


def test_dataset_without_a_model_class_is_a_clear_error(tmp_path):
    info = data_info(3)
    ds = InMemory(_samples(6, [{0}, {1}]), info.classes)
    with pytest.raises(UserError, match=r"classes c2;"):
        build_calibration_set(ds, "mem", info, SIZE, count=3, cache_dir=tmp_path)
    cs = build_calibration_set(ds, "mem", info, SIZE, count=3, cache_dir=tmp_path, allow_missing=True)
    assert cs.manifest["classes_missing"] == ["c2"]
    with pytest.raises(UserError, match="has 3 classes but the model has 4"):
        build_calibration_set(ds, "mem", data_info(4), SIZE, count=3, cache_dir=tmp_path)


def test_reader_yields_each_image_once_and_rewinds():
    x = np.arange(3 * 3 * 2 * 2, dtype=np.float32).reshape(3, 3, 2, 2)
    r = ArrayDataReader(x, "images", batch_size=2)
    got = [r.get_next() for _ in range(3)]
    assert got[2] is None and len(r) == 2
    np.testing.assert_array_equal(np.concatenate([g["images"] for g in got[:2]]), x)
    r.rewind()
    assert r.get_next()["images"].shape == (2, 3, 2, 2)
