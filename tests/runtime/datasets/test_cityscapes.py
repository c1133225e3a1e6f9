from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.datasets import build_dataset
from runtime.datasets.base import BadSample
from runtime.datasets.cityscapes import CLASSES, PALETTE, Cityscapes, id_to_train_id_lut
from runtime.errors import UserError


def make_city(root: Path, files, split: str = "train", labels: bool = True) -> list[np.ndarray]:
    """Two images in two cities; labels hold labelIds 7 (road), 26 (car), 0 (unlabeled), 8, 24."""
    raws = []
    for k, (city, name) in enumerate([("zurich", "zurich_000001_000019"), ("aachen", "aachen_000000_000019")]):
        files.image(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", seed=k)
        raw = files.ids([7, 26, 0, 8, 24, 33][k:] + [7])
        if labels:
            files.label(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", raw)
        raws.append(raw)
    return raws


def test_label_table_matches_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels, trainId2label  # type: ignore[import-untyped]

    lut = id_to_train_id_lut()
    for lab in labels:
        if lab.id >= 0:
            assert lut[lab.id] == (lab.trainId if lab.trainId not in (-1, 255) else 255), lab.name
    assert CLASSES == [trainId2label[i].name for i in range(19)]
    assert PALETTE == [trainId2label[i].color for i in range(19)]


def test_reads_sorted_and_converts_label_ids(tmp_path, files):
    make_city(tmp_path, files)
    ds = Cityscapes(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 19
    assert [s[2] for s in ds] == ["aachen/aachen_000000_000019", "zurich/zurich_000001_000019"]
    image, label, name = ds[1]  # zurich: ids 7, 26, 0, 8, 24, 33, 7 cycling over columns
    assert image.shape == (16, 32, 3) and image.dtype == np.uint8 and label.dtype == np.uint8
    assert label[0, :7].tolist() == [0, 13, 255, 1, 11, 18, 0]  # road, car, ignore, sidewalk, person, bicycle
    assert np.array_equal(image, files.image(tmp_path / "again.png", seed=0))


def test_test_split_without_labels_is_all_ignore(tmp_path, files):
    make_city(tmp_path, files, split="test", labels=False)
    _, label, _ = Cityscapes(tmp_path, "test")[0]
    assert (label == 255).all()


def test_missing_root_names_folder_and_layout(tmp_path):
    with pytest.raises(UserError, match=r"leftImg8bit.*does not exist(.|\n)*gtFine_labelIds"):
        Cityscapes(tmp_path / "nowhere", "val")
    with pytest.raises(UserError, match="Cityscapes needs a root folder"):
        Cityscapes(None, "val")


def test_corrupt_image_and_out_of_range_id_name_the_file(tmp_path, files):
    make_city(tmp_path, files)
    bad_img = files.corrupt(tmp_path / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    bad_lbl = tmp_path / "gtFine/train/zurich/zurich_000001_000019_gtFine_labelIds.png"
    files.label(bad_lbl, files.ids([7, 40]))
    ds = Cityscapes(tmp_path, "train")
    with pytest.raises(BadSample, match=str(bad_img)):
        ds[0]
    with pytest.raises(BadSample, match=rf"{bad_lbl}.*\[40\]"):
        ds[1]
    skipping = Cityscapes(tmp_path, "train", skip_bad=True)
    assert list(skipping) == [] and len(skipping.bad) == 2


def test_build_dataset_and_data_info(tmp_path, files):
    make_city(tmp_path, files)
    ds = build_dataset(f"cityscapes:{tmp_path}", split="train")
    info = ds.data_info((8, 16))
    assert info.classes[13] == "car" and info.palette[0] == (128, 64, 128) and info.input_size == (8, 16)
