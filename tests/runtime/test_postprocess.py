from __future__ import annotations

import numpy as np
import pytest

from runtime.postprocess import argmax, colorize, labels_from_output, overlay, resize_labels, upsample_logits


def test_colorize_values_and_ignore():
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    palette = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    out = colorize(labels, palette)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out.tolist() == [[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [0, 0, 0]]]
    assert colorize(labels, palette, ignore_color=(1, 2, 3))[1, 1].tolist() == [1, 2, 3]
    wide = colorize(np.array([[0, 300]], np.int32), palette)
    assert wide.tolist() == [[[10, 20, 30], [0, 0, 0]]]


def test_overlay_blend():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.full((2, 2, 3), 200, np.uint8)
    assert (overlay(image, mask, 0.25) == 125).all()
    small = np.full((1, 1, 3), 0, np.uint8)
    assert overlay(image, small, 0.5).shape == (2, 2, 3) and (overlay(image, small, 0.5) == 50).all()


def test_argmax_and_upsample():
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 2, 0, 0] = 5
    logits[0, 1, 1, 1] = 5
    lab = argmax(logits)
    assert lab.dtype == np.uint8 and lab.tolist() == [[[2, 0], [0, 1]]]
    big = upsample_logits(logits, (4, 4))
    assert big.shape == (1, 3, 4, 4)
    # bilinear with half-pixel centres: the corner keeps its value, the inner pixel is 0.75 * 5
    assert big[0, 2, 0, 0] == pytest.approx(5.0) and big[0, 2, 1, 1] == pytest.approx(5 * 0.75 * 0.75)
    many = upsample_logits(np.random.default_rng(0).standard_normal((600, 2, 3)).astype(np.float32), (4, 6))
    assert many.shape == (600, 4, 6)  # more channels than one cv2.resize call takes


def test_labels_from_output_logits_and_labels():
    logits = np.zeros((2, 4, 3, 5), np.float32)
    logits[0, 3] = 1.0
    logits[1, 1, :, :2] = 2.0
    out = labels_from_output(logits, (6, 10))
    assert out.shape == (2, 6, 10)
    assert (out[0] == 3).all() and (out[1][:, :3] == 1).all() and (out[1][:, -4:] == 0).all()
    labels = np.array([[[0, 1], [2, 3]]], np.uint8)
    same = labels_from_output(labels)
    assert same is labels
    up = labels_from_output(labels, (4, 4))
    assert up.shape == (1, 4, 4) and set(np.unique(up)) == {0, 1, 2, 3}
    assert up[0, :2, :2].tolist() == [[0, 0], [0, 0]] and up[0, 3, 3] == 3
    first = labels[0]
    assert resize_labels(first, (2, 2)) is first
    with pytest.raises(ValueError, match="logits or"):
        labels_from_output(np.zeros((4,), np.float32))
