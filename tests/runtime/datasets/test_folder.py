from __future__ import annotations

import numpy as np
import pytest

from runtime.datasets import build_dataset
from runtime.datasets.base import BadSample
from runtime.datasets.folder import FolderDataset, write_classes_yaml, write_sample
from runtime.errors import UserError


def test_split_folders_with_classes_yaml(tmp_path, files):
    (tmp_path / "classes.yaml").write_text("names: [road, car, person]\npalette: [[1, 2, 3], [4, 5, 6], [7, 8, 9]]\n")
    for n in ("b", "a"):
        files.image(tmp_path / "images" / "val" / f"{n}.jpg")
        files.label(tmp_path / "labels" / "val" / f"{n}.png", files.ids([2, 0, 255, 1]))
    ds = build_dataset(f"folder:{tmp_path}", split="val")
    assert isinstance(ds, FolderDataset)
    assert ds.classes == ["road", "car", "person"] and ds.palette == [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    assert [s[2] for s in ds] == ["a", "b"]
    assert ds[0][1][0, :4].tolist() == [2, 0, 255, 1]
    with pytest.raises(UserError, match="split 'train' not found.*val"):
        FolderDataset(tmp_path, "train")


def test_flat_layout_needs_classes(tmp_path, files):
    files.image(tmp_path / "images" / "x.png")
    files.label(tmp_path / "labels" / "x.png", files.ids([0, 4]))
    with pytest.raises(UserError, match=r"classes.yaml does not exist: write it with 'names: \[...\]'") as e:
        FolderDataset(tmp_path, "train")
    assert "num_classes" not in str(e.value)  # no command-line option or config key sets it
    ds = FolderDataset(tmp_path, "anything", num_classes=5)
    assert ds.classes == [f"class{i}" for i in range(5)] and len(ds.palette) == 5
    assert len(ds) == 1 and ds[0][1].max() == 4
    with pytest.raises(BadSample, match=r"x.png has ids \[4\] outside the 3 classes"):
        FolderDataset(tmp_path, "train", num_classes=3)[0]


def test_bad_classes_yaml_and_size_mismatch(tmp_path, files):
    files.image(tmp_path / "images" / "x.png")
    files.label(tmp_path / "labels" / "x.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "classes.yaml").write_text("names: [a, b]\npalette: [[1, 2, 3]]\n")
    with pytest.raises(UserError, match="one \\[r, g, b\\]"):
        FolderDataset(tmp_path)
    (tmp_path / "classes.yaml").write_text("classes: 3\n")
    with pytest.raises(UserError, match="needs 'names:'"):
        FolderDataset(tmp_path)
    (tmp_path / "classes.yaml").write_text("names: [a, b]\n")
    with pytest.raises(BadSample, match=r"label size 8x8 differs from image size 16x32 of "):  # H x W, as elsewhere
        FolderDataset(tmp_path)[0]
    with pytest.raises(UserError, match=r"nowhere(.|\n)*classes.yaml"):
        FolderDataset(tmp_path / "nowhere")


def test_writer_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (16, 32), dtype=np.uint8)
    label[0] = 255
    write_sample(tmp_path, "train", "s0", image, label)
    write_classes_yaml(tmp_path, ["a", "b", "c"], [(1, 1, 1), (2, 2, 2), (3, 3, 3)])
    img2, lbl2, name = FolderDataset(tmp_path, "train")[0]
    assert name == "s0" and np.array_equal(img2, image) and np.array_equal(lbl2, label)


def test_a_corrupt_sample_names_the_skip_option_of_the_command_that_reads_it(tmp_path, files):
    """`--skip-bad` for runtime.eval, train.evaluate and calib.quantize, `data.skip_bad=true` for training
    (train/data.py), nothing where the command has no such option (runtime.bench, runtime.select)."""
    write_classes_yaml(tmp_path, ["a", "b"], [(1, 1, 1), (2, 2, 2)])
    bad = files.corrupt(tmp_path / "images" / "x.png")
    files.label(tmp_path / "labels" / "x.png", np.zeros((16, 32), np.uint8))
    for option, tail in (("--skip-bad", ", or pass --skip-bad to skip it"),
                         ("data.skip_bad=true", ", or pass data.skip_bad=true to skip it"), (None, "")):
        ds = build_dataset(f"folder:{tmp_path}", skip_option=option)
        with pytest.raises(BadSample) as e:
            ds[0]
        assert str(e.value) == f"image {bad} is corrupt or not an image; replace it{tail}"
        assert "skip_bad to" not in str(e.value)
    skipping = build_dataset(f"folder:{tmp_path}", skip_bad=True, skip_option="--skip-bad")
    assert list(skipping) == [] and skipping.bad == [f"image {bad} is corrupt or not an image; replace it"]
