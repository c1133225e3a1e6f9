"""The dataset reader contract shared by training, calibration, evaluation and the demo.

A reader is a sequence of samples `(image, label, name)`: image uint8 H x W x 3 RGB, label uint8 H x W
with train ids 0..K-1 and 255 = ignore, name a string unique within the split. Readers know their
`classes`, `palette` (RGB) and `ignore_index`, and use numpy/OpenCV only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import UserError
from runtime.metadata import IGNORE_INDEX, DataInfo

Sample = tuple[np.ndarray, np.ndarray, str]


class BadSample(UserError):
    """A corrupt image or label file, or a label id outside the classes: `problem` names the file and what
    to do about it. The reader that read it adds `option`, how the command reading it leaves such samples
    out (`--skip-bad`, `data.skip_bad=true`: DataSpec.open's `skip_option`), where the command has one."""

    def __init__(self, problem: str, option: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.option = option

    def __str__(self) -> str:
        return f"{self.problem}, or pass {self.option} to skip it" if self.option else self.problem


class SegmentationDataset:
    """Base class: subclasses fill `self.items` (image path, label path or None, name) and class info,
    or override `load`. With `skip_bad=True`, bad samples are skipped and counted in `self.bad`; without it,
    their BadSample names `skip_option`, the option that would skip them (None: the command has none)."""

    classes: list[str] = []
    palette: list[tuple[int, int, int]] = []
    ignore_index: int = IGNORE_INDEX
    layout: str = ""  # the expected folder layout, shown when the root is missing
    needs_root: bool = True  # False for readers that generate their data (DataSpec.open checks)
    skip_option: str | None = None  # how the command that opened it skips corrupt samples (DataSpec.open)

    def __init__(self, root: str | Path | None, split: str = "train", skip_bad: bool = False) -> None:
        self.root = Path(root) if root is not None else None
        self.split = split
        self.skip_bad = skip_bad
        self.bad: list[str] = []
        self.items: list[tuple[Path, Path | None, str]] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        try:
            return self.load(i)
        except BadSample as e:
            if e.option is None:
                e.option = self.skip_option
            raise

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            sample = self.get_or_skip(i)
            if sample is not None:
                yield sample

    def get_or_skip(self, i: int) -> Sample | None:
        """`self[i]`; with `skip_bad`, None for a corrupt sample, whose sentence is added to `self.bad`."""
        try:
            return self[i]
        except BadSample as e:
            if not self.skip_bad:
                raise
            self.bad.append(e.problem)
            return None

    def load(self, i: int) -> Sample:
        img_path, lbl_path, name = self.items[i]
        image = read_image(img_path)
        if lbl_path is None:
            label = np.full(image.shape[:2], self.ignore_index, np.uint8)
        else:
            label = self.convert_label(read_label(lbl_path), lbl_path)
        if label.shape != image.shape[:2]:
            raise BadSample(f"{lbl_path}: label size {_hxw(label.shape)} differs from image size "
                            f"{_hxw(image.shape)} of {img_path}; fix or remove the pair")
        return image, label, name

    def convert_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw file ids -> train ids (identity by default) and range check."""
        return check_label_range(raw, self.num_classes, self.ignore_index, path)

    def data_info(self, input_size: tuple[int, int] = (512, 1024)) -> DataInfo:
        return DataInfo(classes=list(self.classes), palette=list(self.palette), input_size=input_size,
                        ignore_index=self.ignore_index)

    # helpers for subclasses -------------------------------------------------------------------
    def require_root(self) -> Path:
        if self.root is None:
            raise UserError(f"{type(self).__name__} needs a root folder (--data name:/path); expected layout:\n"
                            f"{self.layout}")
        return self.root

    def require_items(self, where: Path, what: str) -> None:
        if not self.items:
            raise UserError(f"no {what} in {where}; expected layout under the root:\n{self.layout}")

    def require_dir(self, path: Path) -> Path:
        if not path.is_dir():
            raise UserError(f"dataset folder {path} does not exist; expected layout under the root:\n{self.layout}")
        return path


def _hxw(shape: tuple[int, ...]) -> str:
    """'16x32' for an H x W (x C) array shape: how every message writes a size."""
    return f"{shape[0]}x{shape[1]}"


def read_image(path: Path) -> np.ndarray:
    """Read an image file as uint8 H x W x 3 RGB, or raise BadSample naming the file."""
    return cv2.cvtColor(_decode(path, "image", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    """Read a single-channel index PNG as uint8 H x W (palette PNGs give their indices)."""
    lbl = _decode(path, "label", cv2.IMREAD_UNCHANGED)
    if lbl.ndim == 3:
        # OpenCV expands palette PNGs to colour; read the indices through PIL when it is there.
        lbl = _read_palette_png(path, lbl)
    if lbl.dtype != np.uint8:
        if lbl.max() > 255:
            raise BadSample(f"label {path} has ids above 255 ({int(lbl.max())}); labels must be 8-bit index images")
        lbl = lbl.astype(np.uint8)
    return lbl


def _decode(path: Path, what: str, flags: int) -> np.ndarray:
    """The file decoded by OpenCV with `flags`, or a BadSample naming the missing or corrupt `what` (image, label)."""
    data = np.fromfile(str(path), np.uint8) if Path(path).is_file() else None
    if data is None:
        raise BadSample(f"{what} {path} does not exist; check the dataset root and split")
    decoded = cv2.imdecode(data, flags) if data.size else None
    if decoded is None:
        raise BadSample(f"{what} {path} is corrupt or not an image; replace it")
    return decoded


def _read_palette_png(path: Path, decoded: np.ndarray) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        if _is_gray(decoded):
            return decoded[..., 0]
        raise BadSample(f"label {path} is a colour image; labels must be single-channel index PNGs "
                        "(or install pillow to read palette PNGs)") from None
    with Image.open(path) as im:
        if im.mode in ("P", "L", "I", "I;16"):
            return np.asarray(im)
    if _is_gray(decoded):
        return decoded[..., 0]
    raise BadSample(f"label {path} is an RGB colour image; labels must be single-channel index PNGs")


def _is_gray(decoded: np.ndarray) -> bool:
    """Whether the three channels of an H x W x 3 image are equal (a grey label that OpenCV decoded as colour)."""
    return bool(np.all(decoded[..., 0] == decoded[..., 1]) and np.all(decoded[..., 1] == decoded[..., 2]))


def check_label_range(label: np.ndarray, num_classes: int, ignore_index: int, path: Path | str) -> np.ndarray:
    """Raise BadSample naming the file when an id is neither a class (0..K-1) nor the ignore index."""
    bad = (label >= num_classes) & (label != ignore_index)
    if bad.any():
        ids = sorted(int(v) for v in np.unique(label[bad]))[:10]
        raise BadSample(f"label {path} has ids {ids} outside the {num_classes} classes (0..{num_classes - 1}, "
                        f"{ignore_index} = ignore); fix the file")
    return label
