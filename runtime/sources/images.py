"""Still images as a source: one file, every image in a folder (sorted), or a glob pattern."""

from __future__ import annotations

import glob as globlib
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import UserError
from runtime.sources.base import Frame, Source

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageSource(Source):
    kind = "images"
    live = False

    def __init__(self, spec: str, loop: bool = False, size: tuple[int, int] | None = None,
                 fps: float | None = None) -> None:
        super().__init__(spec, size, fps)
        self.loop = loop
        self.paths = list_images(spec)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            for path in self.paths:
                yield Frame(index, self._finish(read_rgb(path)), time.monotonic(), path.stem)
                index += 1
            if not self.loop:
                return


def list_images(spec: str) -> list[Path]:
    """An image file, a folder (its images, sorted by name) or a glob -> the image paths.
    Raises UserError naming the path when nothing matches."""
    p = Path(spec)
    if any(c in spec for c in "*?[") and not p.exists():
        paths = sorted(Path(f) for f in globlib.glob(spec, recursive=True) if f.lower().endswith(IMAGE_SUFFIXES))
        if not paths:
            raise UserError(f"no images match the pattern {spec}")
        return paths
    if p.is_dir():
        paths = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise UserError(f"folder {p} has no images ({', '.join(IMAGE_SUFFIXES)})")
        return paths
    if p.is_file():
        return [p]
    raise UserError(f"source {spec} does not exist; pass a camera index, a video or image file, a folder, "
                    "a glob, a URL or a GStreamer pipeline")


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as uint8 RGB or raise UserError naming it."""
    data = np.fromfile(str(path), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise UserError(f"{path} is not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
