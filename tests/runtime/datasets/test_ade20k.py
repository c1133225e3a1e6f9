from __future__ import annotations

import pytest

from runtime.datasets.ade20k import ADE20K, CLASSES, PALETTE
from runtime.datasets.base import BadSample
from runtime.errors import UserError


def make_ade(root, files):
    for k, n in enumerate(["ADE_val_00000002", "ADE_val_00000001"]):
        files.image(root / "images" / "validation" / f"{n}.jpg", seed=k)
        files.label(root / "annotations" / "validation" / f"{n}.png", files.ids([0, 1, 13, 150]))


def test_reduce_zero_label(tmp_path, files):
    make_ade(tmp_path, files)
    ds = ADE20K(tmp_path, "val")
    assert len(CLASSES) == 150 == len(PALETTE) and CLASSES[12] == "person" and CLASSES[149] == "flag"
    assert [s[2] for s in ds] == ["ADE_val_00000001", "ADE_val_00000002"]
    image, label, _ = ds[0]
    assert image.shape == (16, 32, 3)
    assert label[0, :4].tolist() == [255, 0, 12, 149]


def test_errors(tmp_path, files):
    with pytest.raises(UserError, match=r"images/training does not exist(.|\n)*annotations"):
        ADE20K(tmp_path, "train")
    with pytest.raises(UserError, match="choose train or val"):
        ADE20K(tmp_path, "test")
    make_ade(tmp_path, files)
    bad = tmp_path / "annotations" / "validation" / "ADE_val_00000002.png"
    files.label(bad, files.ids([0, 151]))
    ds = ADE20K(tmp_path, "val", skip_bad=True)
    with pytest.raises(BadSample, match=rf"{bad} has ids \[151\]"):
        ds[1]
    assert len(list(ds)) == 1 and len(ds.bad) == 1
