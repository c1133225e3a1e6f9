"""runtime.datasets.base: reading one image or label file, each failure a BadSample naming the file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.datasets.base import BadSample, read_image, read_label


def test_an_image_reads_as_rgb_and_a_missing_or_corrupt_one_is_named(tmp_path, files):
    rgb = files.image(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert got.dtype == np.uint8 and np.array_equal(got, rgb)  # RGB, not OpenCV's BGR
    with pytest.raises(BadSample, match=r"^image .*nope\.png does not exist; check the dataset root and split$"):
        read_image(tmp_path / "nope.png")
    bad = files.corrupt(tmp_path / "bad.png")
    with pytest.raises(BadSample, match=rf"^image {bad} is corrupt or not an image; replace it$"):
        read_image(bad)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadSample, match="is corrupt or not an image"):
        read_image(tmp_path / "empty.png")


def test_a_label_reads_as_its_ids_and_a_missing_corrupt_or_colour_one_is_named(tmp_path, files):
    ids = files.ids([0, 1, 2, 255])
    files.label(tmp_path / "l.png", ids)
    got = read_label(tmp_path / "l.png")
    assert got.dtype == np.uint8 and np.array_equal(got, ids)
    grey3 = np.repeat(ids[..., None], 3, axis=2)  # a grey label saved with three equal channels
    assert cv2.imwrite(str(tmp_path / "g.png"), grey3)
    assert np.array_equal(read_label(tmp_path / "g.png"), ids)
    colour = grey3.copy()
    colour[0, 0] = (1, 2, 3)
    assert cv2.imwrite(str(tmp_path / "c.png"), colour)
    with pytest.raises(BadSample, match="is an RGB colour image; labels must be single-channel index PNGs"):
        read_label(tmp_path / "c.png")
    assert cv2.imwrite(str(tmp_path / "w.png"), np.full((4, 4), 300, np.uint16))
    with pytest.raises(BadSample, match=r"has ids above 255 \(300\)"):
        read_label(tmp_path / "w.png")
    with pytest.raises(BadSample, match=r"^label .*nope\.png does not exist; check the dataset root and split$"):
        read_label(tmp_path / "nope.png")
    bad = files.corrupt(tmp_path / "bad.png")
    with pytest.raises(BadSample, match=rf"^label {bad} is corrupt or not an image; replace it$"):
        read_label(bad)
