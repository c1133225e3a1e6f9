"""The frame-source contract: iterate `Frame(index, image, timestamp, name)`, image uint8 H x W x 3 RGB."""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator
from types import TracebackType
from typing import NamedTuple

import cv2
import numpy as np


class Frame(NamedTuple):
    index: int  # 0, 1, 2, ... in delivery order
    image: np.ndarray  # uint8 H x W x 3 RGB
    timestamp: float  # seconds: the position in a video file, else time.monotonic() at capture
    name: str  # file stem for images, "<source>_<index>" for videos and streams (safe as a file name)


class Source(abc.ABC):
    """A source of frames. `live` sources (cameras, streams) produce frames whether or not anyone reads
    them, so the pipeline drops the oldest frame when it falls behind; files wait for the reader."""

    kind: str = "base"
    live: bool = False

    def __init__(self, name: str, size: tuple[int, int] | None = None, fps: float | None = None) -> None:
        self.name = name
        self.size = size  # (H, W) to resize frames to, None to keep the native size
        self.fps = fps  # requested rate (cameras) or playback pacing (files); None: as fast as read
        self._next_time: float | None = None

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield frames until the source ends (files) or `close()` is called."""

    @property
    def native_fps(self) -> float | None:
        """The source's own frame rate when known (used to write videos at the right speed)."""
        return self.fps

    def close(self) -> None:  # noqa: B027 (optional hook: image sources hold nothing open)
        """Release the device or file; safe to call twice."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _finish(self, rgb: np.ndarray) -> np.ndarray:
        """Resize to the requested size and pace non-live playback to the requested frame rate."""
        if self.size is not None and rgb.shape[:2] != tuple(self.size):
            rgb = cv2.resize(rgb, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        if self.fps and not self.live:
            now = time.monotonic()
            if self._next_time is not None and now < self._next_time:
                time.sleep(self._next_time - now)
            self._next_time = max(now, self._next_time or now) + 1.0 / self.fps
        return rgb
