"""Unlabeled footage: the frames of a transfer set for distillation, as a reader of the usual contract.

`FootageReader(sources)` reads frames, not labeled samples: each sample is `(image, label, name)` with the
label all ignore (255), so that everything that reads a SegmentationDataset reads footage too. A source is

    synthetic, synthetic:N     N frames (default 2000) of the synthetic generator's own "footage" split
    DIR                        the folder's image files (IMAGE_EXTS), sorted, not recursive
    'clips/*.mp4', 'a/*.png'   a glob (contains *, ? or [): the sorted matching image and video files
    FILE.png                   one image file
    FILE.mp4                   every `stride`-th frame of a video (VIDEO_EXTS)

A video is decoded once, sequentially, into a frame folder `<frame_cache>/<sha256[:16]>-stride<k>/`: one PNG
per kept frame (`<frame index:06d>.png`, each written to a temp name and renamed, so none is half-written)
and `frames.json` (the kept and the skipped frame indices), written last. A folder with its frames.json is
reused without decoding; a folder without one (an interrupted extraction) is completed by decoding the
video again, keeping the PNGs that were already renamed into place.
"""

from __future__ import annotations

import glob
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.datasets.base import BadSample, Sample, SegmentationDataset, read_image
from runtime.datasets.folder import IMAGE_EXTS
from runtime.datasets.synthetic import SyntheticStreets
from runtime.errors import UserError
from runtime.io import atomic_write_json, check_writable, pid_alive, sha256_file
from runtime.metadata import DataInfo

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
SYNTHETIC_FRAMES = 2000  # frames of a bare `synthetic` source
INDEX_FILE = "frames.json"
ACCEPTED = ("give an image folder, a glob such as 'clips/*.mp4', an image file "
            f"({', '.join(e[1:] for e in IMAGE_EXTS)}), a video file ({', '.join(e[1:] for e in VIDEO_EXTS)}) "
            "or synthetic[:N]")


@dataclass(frozen=True)
class Frame:
    """One frame of a source: `kind` "image" (the image file `path`), "video" (frame `index` of the video
    `file`, extracted to the PNG `path`) or "synthetic" (index `index` of the synthetic footage split)."""

    kind: str
    name: str
    path: Path | None = None
    file: Path | None = None
    index: int = 0


@dataclass(frozen=True)
class VideoFrames:
    """What `extract_video_frames` made of a video: its sha256, the frame folder, the frame indices kept
    (one PNG each) and those the decoder could not read before the container's frame count."""

    sha256: str
    folder: Path
    kept: list[int]
    skipped: list[int]

    def png(self, index: int) -> Path:
        return self.folder / f"{index:06d}.png"


class FootageReader(SegmentationDataset):
    """Unlabeled frames of `sources` (one string or a list, see the module docstring), in the sources'
    order: `(uint8 H x W x 3 RGB, uint8 H x W all 255, name)`, resized to `size` (H, W) when given.

    Names: `"<video file name>#<frame:06d>"`, the image file's stem, or `footage_<i:05d>` for synthetic.
    `synthetic`: the options of the synthetic generator (the labeled data's size, seed, difficulty, cache);
    keys SyntheticStreets does not take are left out. `classes`/`palette`: the labeled data's, for
    `data_info()`. `frame_cache`: where videos are extracted (default `$LFD_EDGE_CACHE/footage` or
    `data/cache/footage`). Frames a video's decoder cannot read are listed in `skipped`
    ("<file> frame <n>"); corrupt image files raise BadSample, which `get_or_skip` counts in `bad` with
    `skip_bad`. Bad sources (missing, empty, unknown suffix, unopenable video) raise a UserError."""

    needs_root = False
    layout = "(none: footage sources are folders, globs, image or video files, or synthetic[:N])"

    def __init__(self, sources: str | Sequence[str], stride: int = 1, size: tuple[int, int] | None = None,
                 classes: Sequence[str] = (), palette: Sequence[tuple[int, int, int]] = (),
                 synthetic: Mapping[str, Any] | None = None, frame_cache: str | Path | None = None,
                 skip_bad: bool = True) -> None:
        super().__init__(None, "footage", skip_bad)
        self.sources = [str(sources)] if isinstance(sources, (str, os.PathLike)) else [str(s) for s in sources]
        if not self.sources:
            raise UserError(f"no footage sources given (data.unlabeled is empty); {ACCEPTED}")
        if int(stride) < 1:
            raise UserError(f"data.unlabeled_stride must be at least 1, got {stride}")
        self.stride = int(stride)
        self.size = _check_size(size)
        self.classes = list(classes)
        self.palette = [tuple(int(v) for v in c) for c in palette]  # type: ignore[misc]
        self.synthetic_options = dict(synthetic or {})
        self.frame_cache = Path(frame_cache) if frame_cache is not None else default_frame_cache()
        self.skipped: list[str] = []
        self._frames: list[Frame] = []
        self._sha: dict[Path, str] = {}
        self._synthetic: SyntheticStreets | None = None
        self._size_note: str | None = None
        first_sizes: list[tuple[str, tuple[int, int]]] = []
        for source in self.sources:
            frames = self._expand(source)
            self._frames.extend(frames)
            if (hw := self._first_size(frames)) is not None:
                first_sizes.append((source, hw))
        self._size_note = _size_note(first_sizes, self.size)

    # the reader contract ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._frames)

    def load(self, i: int) -> Sample:
        frame = self._frames[i]
        if frame.kind == "synthetic":
            assert self._synthetic is not None
            image = self._synthetic.load(frame.index)[0]
        elif frame.kind == "video":
            assert frame.path is not None
            try:
                image = read_image(frame.path)
            except BadSample as e:
                raise BadSample(f"frame {frame.index} of video {frame.file}: its extracted file {frame.path} is "
                                f"missing or corrupt; delete the folder {frame.path.parent} to extract the video "
                                "again") from e
        else:
            assert frame.path is not None
            image = read_image(frame.path)
        image = self._fit(image)
        return image, np.full(image.shape[:2], self.ignore_index, np.uint8), frame.name

    def data_info(self, input_size: tuple[int, int] | None = None) -> DataInfo:  # type: ignore[override]
        return super().data_info(input_size or self.size or (512, 1024))

    # identity and provenance -----------------------------------------------------------------
    def frame_ids(self) -> list[str]:
        """One stable identity per frame, in index order, for a cache manifest: `"<sha256>:<frame index>"`
        for a video frame, the image file's sha256, `"synthetic:footage:<i>"` (the generator's options are
        in `provenance()`). Each file is hashed once per reader."""
        out = []
        for f in self._frames:
            if f.kind == "synthetic":
                out.append(f"synthetic:footage:{f.index}")
            elif f.kind == "video":
                assert f.file is not None
                out.append(f"{self._file_sha(f.file)}:{f.index}")
            else:
                assert f.path is not None
                out.append(self._file_sha(f.path))
        return out

    def provenance(self) -> dict[str, Any]:
        """A JSON-able description for a cache key: the sources as given, the stride, the target size and,
        with a synthetic source, the generator's parameters (version, size, seed, difficulty)."""
        out: dict[str, Any] = {"sources": list(self.sources), "stride": self.stride,
                               "size": list(self.size) if self.size else None}
        if self._synthetic is not None:
            out["synthetic"] = self._synthetic.params()
        return out

    def size_note(self) -> str | None:
        """With `size`, one sentence naming the sources whose (first) frames have another size and are
        resized to it; else None."""
        return self._size_note

    # sources ---------------------------------------------------------------------------------
    def _expand(self, source: str) -> list[Frame]:
        """The frames of one source string, or a UserError naming it and what is accepted."""
        if source == "synthetic" or source.startswith("synthetic:"):
            return self._synthetic_frames(source)
        path = Path(source).expanduser()
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
            if not images:
                raise UserError(f"footage folder {path} has no image files ({', '.join(IMAGE_EXTS)}); for the "
                                f"videos in it give a glob such as '{path / '*.mp4'}'")
            return [self._image_frame(p) for p in images]
        if path.is_file():
            return self._file_frames(path, source)
        if any(c in source for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS]
            if not files:
                raise UserError(f"footage glob '{source}' matches no image or video file; {ACCEPTED}")
            return [f for p in files for f in self._file_frames(p, source)]
        raise UserError(f"footage source {source} does not exist; {ACCEPTED}")

    def _file_frames(self, path: Path, source: str) -> list[Frame]:
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTS:
            return [self._image_frame(path)]
        if suffix in VIDEO_EXTS:
            return self._video_frames(path)
        raise UserError(f"footage file {path} (from '{source}') has the unknown suffix '{path.suffix}'; {ACCEPTED}")

    def _image_frame(self, path: Path) -> Frame:
        return Frame("image", path.stem, path=path)

    def _video_frames(self, path: Path) -> list[Frame]:
        video = extract_video_frames(path, self.stride, self.frame_cache)
        self._sha[path] = video.sha256
        self.skipped.extend(f"{path} frame {n}" for n in video.skipped)
        return [Frame("video", f"{path.name}#{n:06d}", path=video.png(n), file=path, index=n) for n in video.kept]

    def _synthetic_frames(self, source: str) -> list[Frame]:
        count = _synthetic_count(source)
        if self._synthetic is None or len(self._synthetic) < count:
            self._synthetic = self._synthetic_reader(count)
        return [Frame("synthetic", f"footage_{i:05d}", index=i) for i in range(count)]

    def _synthetic_reader(self, count: int) -> SyntheticStreets:
        """SyntheticStreets' "footage" split with the generator options it takes (root: its cache folder)."""
        takes = set(inspect.signature(SyntheticStreets.__init__).parameters) - {"self", "split", "skip_bad",
                                                                                   "num_footage"}
        opts = {k: v for k, v in self.synthetic_options.items() if k in takes}
        return SyntheticStreets(split="footage", num_footage=count, **opts)

    # helpers ---------------------------------------------------------------------------------
    def _file_sha(self, path: Path) -> str:
        if path not in self._sha:
            try:
                self._sha[path] = sha256_file(path)
            except OSError as e:
                raise UserError(f"cannot read footage file {path} ({e.strerror or e}); restore it or remove it "
                                "from data.unlabeled") from e
        return self._sha[path]

    def _first_size(self, frames: list[Frame]) -> tuple[int, int] | None:
        """(H, W) of the first readable frame of a source (a few tries), or None when none of them reads."""
        if not frames:
            return None
        if frames[0].kind == "synthetic":
            assert self._synthetic is not None
            return self._synthetic.size
        for f in frames[:5]:
            image = cv2.imread(str(f.path), cv2.IMREAD_UNCHANGED)
            if image is not None:
                return int(image.shape[0]), int(image.shape[1])
        return None

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """`image` resized to exactly `size` (INTER_AREA when shrinking both sides, else INTER_LINEAR)."""
        if self.size is None or image.shape[:2] == self.size:
            return image
        (th, tw), (h, w) = self.size, image.shape[:2]
        interp = cv2.INTER_AREA if th <= h and tw <= w else cv2.INTER_LINEAR
        return cv2.resize(image, (tw, th), interpolation=interp)


def default_frame_cache() -> Path:
    """`$LFD_EDGE_CACHE/footage`, else `data/cache/footage` (as synthetic's default_cache_dir)."""
    return Path(os.environ.get("LFD_EDGE_CACHE", "data/cache")) / "footage"


def extract_video_frames(path: Path, stride: int, cache_root: Path) -> VideoFrames:
    """Every `stride`-th frame (0, stride, 2·stride, ...) of the video `path` as PNGs in
    `<cache_root>/<sha256[:16]>-stride<stride>/`, decoded once and sequentially (`grab()` for the frames
    between), and `frames.json` written last. A folder whose frames.json matches (sha256, stride, every PNG
    there) is returned as it is, without decoding.

    Frames are read up to the container's frame count; a kept frame the decoder cannot read before it is
    recorded in `skipped`. When the count is unknown (0), the first failed read ends the video. A video that
    OpenCV cannot open, or with no readable kept frame, is a UserError naming it."""
    try:
        sha = sha256_file(path)
    except OSError as e:
        raise UserError(f"cannot read video {path} ({e.strerror or e}); make it readable or remove it from "
                        "data.unlabeled") from e
    folder = Path(cache_root) / f"{sha[:16]}-stride{stride}"
    done = _read_index(folder, sha, stride)
    if done is not None:
        return done
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise UserError(f"OpenCV cannot open video {path}: it is truncated, corrupt or in a format this OpenCV "
                            "build cannot decode; convert it (ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it from "
                            "data.unlabeled")
        check_writable(folder, "footage frame cache", folder=True)
        _remove_stale_temps(folder)
        count = _frame_count(cap)
        kept, skipped = _decode(cap, folder, stride, count)
    finally:
        cap.release()
    if not kept:
        raise UserError(f"no frame of video {path} could be decoded (stride {stride}); check that it plays, or "
                        "remove it from data.unlabeled")
    atomic_write_json(folder / INDEX_FILE, {"file": path.name, "sha256": sha, "stride": stride, "frame_count": count,
                                            "kept": kept, "skipped": skipped}, "footage frame index")
    return VideoFrames(sha, folder, kept, skipped)


def _decode(cap: Any, folder: Path, stride: int, count: int) -> tuple[list[int], list[int]]:
    """Walk the video sequentially; write kept frames (PNGs already there from an interrupted run are kept
    and only grabbed past). Returns (kept, skipped) frame indices."""
    kept: list[int] = []
    skipped: list[int] = []
    n = 0
    while count <= 0 or n < count:
        png = folder / f"{n:06d}.png"
        if n % stride or png.is_file():
            ok = cap.grab()
        else:
            ok, bgr = cap.read()
            if ok:
                _write_png(png, bgr)
        if not ok and count <= 0:
            break
        if n % stride == 0:
            (kept if ok else skipped).append(n)
        n += 1
    return kept, skipped


def _write_png(path: Path, bgr: np.ndarray) -> None:
    """Write a frame to a temp name in its folder, then rename it into place: readers never see half a PNG.
    (Not runtime.io.atomic_write: its fsync and folder scan per file are too slow for 10^4 frames; a frame
    lost to a crash is caught by frames.json, written last, or read as a BadSample.)"""
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise UserError(f"could not encode the video frame {path} as PNG")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write the video frame {path} ({e.strerror or e}); free space or set "
                        "LFD_EDGE_CACHE to a folder you can write") from e


def _remove_stale_temps(folder: Path) -> None:
    """Remove `.NAME.PID.tmp` files left in `folder` by an extraction whose process has exited."""
    for p in folder.glob(".*.tmp"):
        pid = p.name.rsplit(".", 2)[-2] if p.name.count(".") >= 3 else ""
        if pid.isdigit() and not pid_alive(int(pid)):
            p.unlink(missing_ok=True)


def _read_index(folder: Path, sha: str, stride: int) -> VideoFrames | None:
    """The complete extraction in `folder` (frames.json for this sha256 and stride, every kept PNG there),
    or None (absent, interrupted, or damaged: extract again)."""
    try:
        doc = json.loads((folder / INDEX_FILE).read_text())
        kept = [int(n) for n in doc["kept"]]
        skipped = [int(n) for n in doc["skipped"]]
        if doc["sha256"] != sha or int(doc["stride"]) != stride:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    video = VideoFrames(sha, folder, kept, skipped)
    return video if kept and all(video.png(n).is_file() for n in kept) else None


def _frame_count(cap: Any) -> int:
    """The container's frame count, 0 when unknown (OpenCV gives -1, 0 or NaN)."""
    value = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(value) if value == value and value > 0 else 0


def _synthetic_count(source: str) -> int:
    if source == "synthetic":
        return SYNTHETIC_FRAMES
    text = source.split(":", 1)[1]
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"footage source '{source}': N in synthetic:N must be a positive number of frames, "
                        "e.g. synthetic:2000")
    return int(text)


def _check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"footage size {size!r} is not (H, W); give two positive integers") from None
    if h < 1 or w < 1:
        raise UserError(f"footage size {h}x{w} is not positive; give two positive integers (H, W)")
    return h, w


def _size_note(first_sizes: list[tuple[str, tuple[int, int]]], size: tuple[int, int] | None) -> str | None:
    """'footage frames of 480x640 (aspect 1.33) in clip.mp4 are resized to the labeled data's 192x384
    (aspect 2.00)', for the sources whose first frame differs from `size`; None when none does."""
    if size is None:
        return None
    differ = [f"{h}x{w} (aspect {w / h:.2f}) in {source}" for source, (h, w) in first_sizes if (h, w) != size]
    if not differ:
        return None
    return (f"footage frames of {', '.join(differ)} are resized to the labeled data's {size[0]}x{size[1]} "
            f"(aspect {size[1] / size[0]:.2f})")
