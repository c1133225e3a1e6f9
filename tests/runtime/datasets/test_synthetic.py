from __future__ import annotations

import numpy as np
import pytest

from runtime.datasets import build_dataset
from runtime.datasets.cityscapes import CLASSES as CS_CLASSES
from runtime.datasets.cityscapes import PALETTE as CS_PALETTE
from runtime.datasets.folder import FolderDataset
from runtime.datasets.synthetic import CLASSES, PALETTE, SyntheticStreets, write_folder_dataset
from runtime.errors import UserError

SIZE = (64, 128)


def synth(split="train", **kw):
    kw.setdefault("cache", False)
    kw.setdefault("size", SIZE)
    return SyntheticStreets(None, split, **kw)


def test_classes_are_cityscapes_classes_with_their_colours():
    assert len(CLASSES) == 16 and len(set(CLASSES)) == 16
    for name, colour in zip(CLASSES, PALETTE):
        assert colour == CS_PALETTE[CS_CLASSES.index(name)], name


def test_deterministic_per_index_in_any_order():
    a = synth(num_train=6)
    later = [a[i] for i in (5, 2)]
    b = synth(num_train=6)
    first = b[2]  # made alone, before any other index, by a fresh reader
    assert np.array_equal(first[0], later[1][0]) and np.array_equal(first[1], later[1][1])
    assert first[2] == "train_00002"
    assert np.array_equal(a[5][0], later[0][0])
    assert not np.array_equal(a[2][0], a[3][0])
    other_seed = synth(seed=1)[2]
    assert not np.array_equal(other_seed[1], first[1])
    assert not np.array_equal(synth("val")[2][1], first[1])


def test_main_classes_appear_and_ids_are_in_range():
    ds = synth(size=(128, 256))
    seen = np.zeros(256, bool)
    for i in range(10):
        image, label, _ = ds[i]
        assert image.shape == (128, 256, 3) and image.dtype == np.uint8
        assert label.shape == (128, 256) and label.dtype == np.uint8
        ids = np.unique(label)
        assert ((ids < len(CLASSES)) | (ids == 255)).all(), ids
        seen[ids] = True
    missing = [c for k, c in enumerate(CLASSES) if not seen[k]]
    assert missing == []


def test_images_are_not_flat_colour_per_class():
    """Within one class the pixels vary (texture, light, noise), and classes share colours."""
    image, label, _ = synth(size=(128, 256))[0]
    road = image[label == CLASSES.index("road")].astype(np.float32)
    assert road.std(0).mean() > 4.0


def test_cache_round_trip(tmp_path):
    cached = synth(num_train=3, cache=True, cache_dir=tmp_path)
    fresh = [synth(num_train=3)[i] for i in range(3)]
    for i in range(3):
        cached[i]
    assert sorted(p.name for p in (tmp_path / "images" / "train").iterdir()) == [f"train_0000{i}.png" for i in range(3)]
    assert (tmp_path / "classes.yaml").is_file() and (tmp_path / "params.json").is_file()
    again = synth(num_train=3, cache=True, cache_dir=tmp_path)
    (tmp_path / "labels" / "train" / "train_00001.png").write_bytes(b"broken")  # re-rendered, not an error
    for i in range(3):
        img, lbl, name = again[i]
        assert np.array_equal(img, fresh[i][0]) and np.array_equal(lbl, fresh[i][1]) and name == fresh[i][2]
    folder = FolderDataset(tmp_path, "train")
    assert folder.classes == CLASSES and folder.palette == PALETTE
    assert np.array_equal(folder[0][1], fresh[0][1])
    with pytest.raises(UserError, match="made with .*'seed': 0"):
        synth(seed=1, cache=True, cache_dir=tmp_path)


def test_write_folder_dataset(tmp_path):
    out = write_folder_dataset(tmp_path / "synth", num_train=2, num_val=1, size=(32, 64), seed=3)
    val = FolderDataset(out, "val")
    assert len(FolderDataset(out, "train")) == 2 and len(val) == 1
    ref = synth("val", size=(32, 64), seed=3)[0]
    assert np.array_equal(val[0][0], ref[0]) and np.array_equal(val[0][1], ref[1])


def test_options_and_errors(tmp_path):
    ds = build_dataset("synthetic", split="val", num_val=7, size=SIZE, cache=False)
    assert len(ds) == 7 and ds.data_info().input_size == SIZE
    with pytest.raises(UserError, match="unknown synthetic split"):
        synth("training")
    with pytest.raises(UserError, match="difficulty"):
        synth(difficulty=5)
    with pytest.raises(UserError, match="synthetic size 8x32 is too small; use at least 16x16"):
        synth(size=(8, 32))
    hard = synth(difficulty=2.0)[0][0].astype(np.float32)
    easy = synth(difficulty=0.3)[0][0].astype(np.float32)
    assert not np.array_equal(hard, easy)


def test_video_cli_writes_a_playable_video(tmp_path):
    import cv2

    from runtime.datasets.synthetic import main

    out = tmp_path / "syn.mp4"
    assert main(["--video", str(out), "--frames", "3", "--size", "64x128"]) == 0
    cap = cv2.VideoCapture(str(out))
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (64, 128, 3)
        frames += 1
    assert frames == 3
    assert main(["--size", "64x128"]) == 2  # nothing to do: a one-line error, exit code 2
