from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.datasets.base import BadSample
from runtime.datasets.voc import CLASSES, PALETTE, PascalVOC
from runtime.errors import UserError


def palette_png(path: Path, ids: np.ndarray) -> None:
    """A VOC-style palette ("P" mode) PNG whose indices are `ids`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    flat = [v for c in PALETTE for v in c] + [224, 224, 192] * (256 - len(PALETTE))
    im.putpalette(flat)
    im.save(path)


def make_voc(root: Path, files) -> None:
    for k, n in enumerate(["2007_000033", "2007_000032", "2008_000001"]):
        files.image(root / "JPEGImages" / f"{n}.jpg", seed=k)
        ids = files.ids([0, 15, 255, 20][k:] + [k])
        palette_png(root / "SegmentationClass" / f"{n}.png", ids)
        files.label(root / "SegmentationClassAug" / f"{n}.png", ids)  # SBD labels: plain grey PNGs
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000033\n2007_000032\n")
    (lists / "val.txt").write_text("2008_000001\n")
    (lists / "train_aug.txt").write_text("/JPEGImages/2008_000001.jpg /SegmentationClassAug/2008_000001.png\n"
                                         "/JPEGImages/2007_000033.jpg /SegmentationClassAug/2007_000033.png\n")


def test_palette_labels_give_indices_and_sorted_splits(tmp_path, files):
    make_voc(tmp_path, files)
    ds = PascalVOC(tmp_path, "train")
    assert len(CLASSES) == 21 and PALETTE[15] == (192, 128, 128) and PALETTE[1] == (128, 0, 0)
    assert [s[2] for s in ds] == ["2007_000032", "2007_000033"]
    image, label, _ = ds[1]
    assert image.shape == (16, 32, 3)
    assert label[0, :5].tolist() == [0, 15, 255, 20, 0]  # 255 (border) stays ignore
    assert [s[2] for s in PascalVOC(tmp_path, "train_aug")] == ["2007_000033", "2008_000001"]
    _, aug_label, _ = PascalVOC(tmp_path, "train_aug")[1]
    assert aug_label[0, :4].tolist() == [255, 20, 2, 255]


def test_missing_split_list_and_root(tmp_path, files):
    make_voc(tmp_path, files)
    with pytest.raises(UserError, match="trainval.txt does not exist"):
        PascalVOC(tmp_path, "trainval")
    with pytest.raises(UserError, match=r"JPEGImages does not exist(.|\n)*SegmentationClass"):
        PascalVOC(tmp_path / "VOC2012", "train")


def test_bad_samples_name_the_file_and_are_skipped(tmp_path, files):
    make_voc(tmp_path, files)
    bad = tmp_path / "SegmentationClass" / "2007_000032.png"
    palette_png(bad, files.ids([0, 21]))
    ds = PascalVOC(tmp_path, "train", skip_bad=True)
    with pytest.raises(BadSample, match=rf"{bad}.*\[21\]"):
        ds[0]
    assert len(list(ds)) == 1 and len(ds.bad) == 1 and "2007_000032" in ds.bad[0]
