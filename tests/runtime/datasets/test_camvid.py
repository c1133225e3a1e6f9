from __future__ import annotations

import pytest

from runtime.datasets.base import BadSample
from runtime.datasets.camvid import CLASSES, CamVid
from runtime.errors import UserError


def make_camvid(root, files, split="val"):
    for k, n in enumerate(["0016E5_08159", "0001TP_006690"]):
        files.image(root / split / f"{n}.png", seed=k)
        files.label(root / f"{split}annot" / f"{n}.png", files.ids([0, 3, 11, 10, 8]))


def test_void_becomes_ignore(tmp_path, files):
    make_camvid(tmp_path, files)
    ds = CamVid(tmp_path, "val")
    assert len(CLASSES) == 11 and CLASSES[3] == "road"
    assert [s[2] for s in ds] == ["0001TP_006690", "0016E5_08159"]
    assert ds[0][1][0, :5].tolist() == [0, 3, 255, 10, 8]


def test_errors(tmp_path, files):
    with pytest.raises(UserError, match=r"train does not exist(.|\n)*trainannot"):
        CamVid(tmp_path, "train")
    with pytest.raises(UserError, match="unknown CamVid split"):
        CamVid(tmp_path, "validation")
    make_camvid(tmp_path, files, "test")
    bad = tmp_path / "testannot" / "0001TP_006690.png"
    files.label(bad, files.ids([3, 12]))
    bad_img = files.corrupt(tmp_path / "test" / "0016E5_08159.png")
    ds = CamVid(tmp_path, "test", skip_bad=True)
    with pytest.raises(BadSample, match=rf"{bad} has ids \[12\]"):
        ds[0]
    with pytest.raises(BadSample, match=str(bad_img)):
        ds[1]
    assert list(ds) == [] and len(ds.bad) == 2
