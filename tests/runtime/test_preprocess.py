from __future__ import annotations

import numpy as np
import pytest

from runtime.metadata import DataInfo
from runtime.preprocess import bgr_to_rgb, normalize, preprocess, preprocess_for, resize_image, resize_label


def test_normalize_matches_hand_computation():
    img = np.array([[[0, 128, 255], [10, 20, 30]]], np.uint8)  # 1 x 2 x 3
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = normalize(img, mean, std)
    assert x.shape == (3, 1, 2) and x.dtype == np.float32
    # channel 1 of pixel 0: (128 / 255 - 0.456) / 0.224
    assert x[1, 0, 0] == pytest.approx((128 / 255 - 0.456) / 0.224, rel=1e-5)
    assert x[2, 0, 0] == pytest.approx((1.0 - 0.406) / 0.225, rel=1e-5)
    assert x[0, 0, 1] == pytest.approx((10 / 255 - 0.485) / 0.229, rel=1e-5)
    assert x.flags["C_CONTIGUOUS"]


def test_preprocess_batches_and_resizes():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (20, 40, 3), dtype=np.uint8) for _ in range(2)]
    x = preprocess(frames, (10, 20), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (2, 3, 10, 20) and x.dtype == np.float32
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6
    one = preprocess(frames[0], None, (0, 0, 0), (1, 1, 1))
    assert one.shape == (1, 3, 20, 40)
    assert np.allclose(one[0].transpose(1, 2, 0) * 255, frames[0], atol=1e-3)
    with pytest.raises(ValueError, match="uint8"):
        preprocess([frames[0].astype(np.float32)], None, (0, 0, 0), (1, 1, 1))


def test_preprocess_for_uses_model_info():
    info = DataInfo(classes=["a"], palette=[(0, 0, 0)], mean=(0, 0, 0), std=(1, 1, 1), input_size=(4, 6))
    frame = np.full((8, 12, 3), 51, np.uint8)
    x = preprocess_for(info, frame)
    assert x.shape == (1, 3, 4, 6) and np.allclose(x, 0.2)
    assert preprocess_for(info, frame, size=(2, 2)).shape == (1, 3, 2, 2)


def test_resize_label_introduces_no_new_ids():
    rng = np.random.default_rng(1)
    label = rng.choice(np.array([0, 3, 7, 255], np.uint8), size=(37, 53))
    for size in [(16, 16), (100, 71), (37, 53)]:
        out = resize_label(label, size)
        assert out.shape == size and out.dtype == np.uint8
        assert set(np.unique(out)) <= {0, 3, 7, 255}
    # a bilinear image resize of the same map would invent ids: the test would notice a mix-up
    assert not set(np.unique(resize_image(label[..., None].repeat(3, 2), (100, 71)))) <= {0, 3, 7, 255}


def test_resize_image_bilinear_and_noop():
    img = np.zeros((2, 2, 3), np.uint8)
    img[:, 1] = 200
    assert resize_image(img, (2, 2)) is img
    up = resize_image(img, (2, 4))
    assert up[0, :, 0].tolist() == [0, 50, 150, 200]  # half-pixel-centred linear interpolation


def test_bgr_to_rgb():
    frame = np.array([[[1, 2, 3]]], np.uint8)
    assert bgr_to_rgb(frame).tolist() == [[[3, 2, 1]]]
