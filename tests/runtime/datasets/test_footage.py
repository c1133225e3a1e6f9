"""FootageReader: unlabeled frames from folders, globs, images, videos and the synthetic footage split."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import runtime.datasets.footage as footage
from runtime.datasets.base import BadSample
from runtime.datasets.footage import FootageReader
from runtime.datasets.synthetic import SyntheticStreets, write_video
from runtime.errors import UserError
from runtime.io import sha256_file

SMALL = (32, 64)
VIDEO_SIZE = (64, 128)  # mp4v wants sides that are multiples of 16


def reader(sources, tmp_path: Path, **kw) -> FootageReader:
    kw.setdefault("frame_cache", tmp_path / "frames")
    return FootageReader(sources, **kw)


def plain_decode(path: Path) -> list[np.ndarray]:
    """Every frame of a video, read sequentially by a bare cv2.VideoCapture loop, as RGB."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / "clips" / "street.mp4", frames=10, size=VIDEO_SIZE)


def test_image_folder_with_a_corrupt_file(tmp_path, files):
    folder = tmp_path / "shots"
    written = [files.image(folder / f"{n}.png", seed=k, size=SMALL) for k, n in enumerate(("c", "a", "b"))]
    bad = files.corrupt(folder / "d.png")
    (folder / "notes.txt").write_text("not an image")
    ds = reader(str(folder), tmp_path)
    assert len(ds) == 4
    for i, (name, rgb) in enumerate(zip("abc", (written[1], written[2], written[0]))):
        image, label, got = ds[i]
        assert got == name and image.dtype == np.uint8 and np.array_equal(image, rgb)
        assert label.shape == SMALL and label.dtype == np.uint8 and (label == 255).all()
    with pytest.raises(BadSample, match="d.png is corrupt"):
        ds[3]
    assert ds.get_or_skip(3) is None and len(ds.bad) == 1 and str(bad) in ds.bad[0]
    assert [s[2] for s in ds] == ["a", "b", "c"]
    assert ds.frame_ids()[:3] == [sha256_file(folder / f"{n}.png") for n in "abc"]


def test_video_every_stride_th_frame_extracted_once(tmp_path, video, monkeypatch):
    ds = reader(str(video), tmp_path, stride=3)
    assert len(ds) == 4 and ds.skipped == []
    plain = plain_decode(video)
    assert len(plain) == 10
    for k, n in enumerate((0, 3, 6, 9)):
        image, label, name = ds[k]
        assert name == f"street.mp4#{n:06d}"
        assert np.array_equal(image, plain[n]) and (label == 255).all()
    sha = sha256_file(video)
    assert ds.frame_ids() == [f"{sha}:{n}" for n in (0, 3, 6, 9)]
    folder = tmp_path / "frames" / f"{sha[:16]}-stride3"
    index = json.loads((folder / "frames.json").read_text())
    assert index["kept"] == [0, 3, 6, 9] and index["skipped"] == [] and index["sha256"] == sha
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{n:06d}.png" for n in (0, 3, 6, 9)]
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def no_decoding(*args, **kwargs):
        raise AssertionError("a complete frame folder is reused without opening the video")

    monkeypatch.setattr(footage.cv2, "VideoCapture", no_decoding)
    again = reader(str(video), tmp_path, stride=3)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    assert again.frame_ids() == ds.frame_ids() and np.array_equal(again[2][0], plain[6])
    monkeypatch.undo()
    other = reader(str(video), tmp_path, stride=4)  # another stride: its own folder
    assert [s[2] for s in other] == [f"street.mp4#{n:06d}" for n in (0, 4, 8)]


def test_interrupted_extraction_is_completed(tmp_path, video):
    first = reader(str(video), tmp_path, stride=2)
    folder = tmp_path / "frames" / f"{sha256_file(video)[:16]}-stride2"
    (folder / "frames.json").unlink()
    (folder / "000004.png").unlink()
    stale = folder / ".000006.png.999999999.tmp"  # left by a writer that was killed
    stale.write_bytes(b"half a png")
    again = reader(str(video), tmp_path, stride=2)
    assert (folder / "frames.json").is_file() and (folder / "000004.png").is_file() and not stale.exists()
    assert len(again) == 5
    for i in range(5):
        assert np.array_equal(again[i][0], first[i][0])


def test_truncated_videos(tmp_path, video):
    mp4 = tmp_path / "half.mp4"
    data = video.read_bytes()
    mp4.write_bytes(data[:len(data) // 2])  # mp4v keeps its index (moov) at the end: it does not open
    with pytest.raises(UserError, match=r"OpenCV cannot open video .*half\.mp4"):
        reader(str(mp4), tmp_path)
    # An AVI states its frame count up front: the frames past the cut are skipped and recorded.
    avi = tmp_path / "full.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter.fourcc(*"MJPG"), 10, (VIDEO_SIZE[1], VIDEO_SIZE[0]))
    rng = np.random.default_rng(0)
    for _ in range(10):
        writer.write(rng.integers(0, 256, (*VIDEO_SIZE, 3), dtype=np.uint8))
    writer.release()
    cut = tmp_path / "cut.avi"
    data = avi.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    ds = reader(str(cut), tmp_path, stride=3)
    assert [s[2] for s in ds] == ["cut.avi#000000", "cut.avi#000003"]
    assert ds.skipped == [f"{cut} frame 6", f"{cut} frame 9"]
    assert np.array_equal(ds[1][0], plain_decode(avi)[3])


def test_synthetic_footage_split(tmp_path):
    opts = {"size": SMALL, "seed": 0, "cache": False, "num_train": 7, "not_an_option": 1}
    ds = reader("synthetic:5", tmp_path, synthetic=opts)
    assert len(ds) == 5 and [s[2] for s in ds][:2] == ["footage_00000", "footage_00001"]
    image, label, _ = ds[0]
    assert image.shape == (*SMALL, 3) and (label == 255).all()
    train0 = SyntheticStreets(split="train", size=SMALL, seed=0, cache=False)[0][0]
    assert not np.array_equal(image, train0)
    assert np.array_equal(reader("synthetic:5", tmp_path, synthetic=opts)[0][0], image)
    assert ds.frame_ids() == [f"synthetic:footage:{i}" for i in range(5)]
    prov = json.loads(json.dumps(ds.provenance()))
    assert prov["sources"] == ["synthetic:5"] and prov["stride"] == 1 and prov["size"] is None
    assert prov["synthetic"]["size"] == list(SMALL) and prov["synthetic"]["seed"] == 0
    assert len(reader("synthetic", tmp_path, synthetic=opts)) == 2000
    assert len(SyntheticStreets(split="footage", num_footage=3, cache=False)) == 3


def test_synthetic_footage_cache_is_a_split_of_the_synthetic_cache(tmp_path):
    cache = tmp_path / "syn"
    ds = reader("synthetic:2", tmp_path, synthetic={"size": SMALL, "cache_dir": cache})
    assert np.array_equal(ds[1][0], reader("synthetic:2", tmp_path, synthetic={"size": SMALL, "cache": False})[1][0])
    assert (cache / "images" / "footage" / "footage_00001.png").is_file()


def test_frames_resized_to_the_labeled_size(tmp_path, files):
    folder = tmp_path / "square"
    files.image(folder / "x.png", size=(40, 40))
    ds = reader(str(folder), tmp_path, size=SMALL)
    image, label, _ = ds[0]
    assert image.shape == (*SMALL, 3) and label.shape == SMALL
    note = ds.size_note()
    assert note is not None and str(folder) in note and "40x40 (aspect 1.00)" in note
    assert "32x64 (aspect 2.00)" in note
    assert reader(str(folder), tmp_path, size=(40, 40)).size_note() is None
    assert reader(str(folder), tmp_path).size_note() is None
    syn = reader("synthetic:1", tmp_path, size=(16, 16), synthetic={"size": SMALL, "cache": False})
    assert syn[0][0].shape == (16, 16, 3) and "32x64" in (syn.size_note() or "")


def test_bad_sources_name_the_path_or_value(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=f"{missing} does not exist"):
        reader(str(missing), tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"folder {empty} has no image files"):
        reader(str(empty), tmp_path)
    with pytest.raises(UserError, match=r"glob '.*empty/\*\.mp4' matches no image or video"):
        reader(str(empty / "*.mp4"), tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(UserError, match=r"notes\.txt .*unknown suffix '\.txt'"):
        reader(str(text), tmp_path)
    with pytest.raises(UserError, match="data.unlabeled_stride must be at least 1, got 0"):
        reader(str(empty), tmp_path, stride=0)
    with pytest.raises(UserError, match="synthetic:many"):
        reader("synthetic:many", tmp_path)
    with pytest.raises(UserError, match="no footage sources"):
        reader([], tmp_path)


def test_sources_in_order_and_default_cache(tmp_path, files, video, monkeypatch):
    folder = tmp_path / "shots"
    for n in ("p", "q"):
        files.image(folder / f"{n}.png", size=SMALL)
    monkeypatch.setenv("LFD_EDGE_CACHE", str(tmp_path / "cache"))
    ds = FootageReader([str(video), str(folder)], stride=5, classes=["road", "car"],
                       palette=[(1, 2, 3), (4, 5, 6)])
    assert [s[2] for s in ds] == ["street.mp4#000000", "street.mp4#000005", "p", "q"]
    assert (tmp_path / "cache" / "footage" / f"{sha256_file(video)[:16]}-stride5" / "frames.json").is_file()
    info = ds.data_info()
    assert info.classes == ["road", "car"] and info.palette == [(1, 2, 3), (4, 5, 6)]
    globbed = reader(str(tmp_path / "*" / "*.[mp][pn]*"), tmp_path, stride=5)  # the clip, then the shots
    assert [s[2] for s in globbed] == ["street.mp4#000000", "street.mp4#000005", "p", "q"]
