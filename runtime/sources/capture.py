"""OpenCV VideoCapture sources: video files, cameras (index, /dev/videoN), network streams (RTSP, HTTP,
UDP, ... through OpenCV's FFmpeg backend), GStreamer pipelines and the Jetson CSI camera (`csi://N`).

A live source that stops delivering frames is reopened with exponential back-off
(`backoff_s * 2**k` seconds, capped at 10 s, for at most `reconnect` attempts), then ends with a
UserError naming it; the end of a video file ends the iteration cleanly (or starts over with `loop`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2

from runtime.errors import UserError
from runtime.sources.base import Frame, Source

MAX_BACKOFF_S = 10.0
STREAM_TIMEOUT_MS = 5000  # FFmpeg open/read timeout for network streams


def csi_pipeline(sensor_id: int, size: tuple[int, int] | None = None, fps: float | None = None) -> str:
    """The Jetson CSI camera as a GStreamer pipeline (nvarguscamerasrc -> BGR appsink), H x W `size`."""
    h, w = size or (720, 1280)
    rate = int(round(fps or 30))
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM), width={w}, height={h}, framerate={rate}/1, format=NV12 ! "
            f"nvvidconv ! video/x-raw, width={w}, height={h}, format=BGRx ! "
            "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")


def has_gstreamer() -> bool:
    """True when this OpenCV build was compiled with GStreamer (opencv-python from PyPI is not)."""
    return bool(re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))


def redact(url: str) -> str:
    """Hide the password of `scheme://user:password@host` in names and messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


class CaptureSource(Source):
    """Frames from `cv2.VideoCapture(target, api)`; `kind` is video, camera, stream or gstreamer."""

    def __init__(self, target: int | str, kind: str, name: str, api: int = cv2.CAP_ANY, loop: bool = False,
                 size: tuple[int, int] | None = None, fps: float | None = None, reconnect: int = 5,
                 backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(name, size, fps)
        self.target, self.kind, self.api = target, kind, api
        self.live = kind != "video"
        self.loop = loop
        self.reconnect = reconnect
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._closed = threading.Event()
        self._cap: Any = None
        self._iterating = False
        self._cap = self._open_or_fail()

    # --- opening ---------------------------------------------------------------------------
    def _open(self) -> Any:
        params: list[int] = []
        if self.kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
        cap = cv2.VideoCapture(self.target, self.api, params) if params else cv2.VideoCapture(self.target, self.api)
        if not cap.isOpened():
            cap.release()
            return None
        if self.kind == "camera":
            if self.size is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[1])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[0])
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the freshest frame, not a backlog
        return cap

    def _open_or_fail(self) -> Any:
        cap = self._open()
        if cap is not None:
            return cap
        if self.kind == "camera":
            dev = f"{self.target} (/dev/video{self.target})" if isinstance(self.target, int) else self.target
            raise UserError(f"cannot open camera {dev}; check that it is connected (v4l2-ctl --list-devices), "
                            "that no other program uses it, that you may read it (group 'video'), and in Docker "
                            "pass --device /dev/videoN")
        if self.kind == "gstreamer":
            raise UserError(f"cannot start the GStreamer pipeline {self.name}; test it with gst-launch-1.0 "
                            "(ending in fakesink) and check the camera is connected")
        if self.kind == "video":
            raise UserError(f"cannot read video {self.name}; the file is corrupt or its codec is not supported "
                            "by this OpenCV build")
        cap = self._reopen()  # a stream may come up late: retry with back-off
        if cap is None:
            raise UserError(f"cannot open stream {self.name} after {self.reconnect + 1} attempts; check the URL, "
                            "the network and that the server is running")
        return cap

    def _reopen(self) -> Any:
        """Try `reconnect` times with exponential back-off; None when all attempts fail or on close()."""
        for k in range(self.reconnect):
            if self._closed.is_set():
                return None
            self._sleep(min(self.backoff_s * 2 ** k, MAX_BACKOFF_S))
            cap = self._open()
            if cap is not None:
                return cap
        return None

    @property
    def native_fps(self) -> float | None:
        if self.fps:
            return self.fps
        rate = float(self._cap.get(cv2.CAP_PROP_FPS)) if self._cap is not None else 0.0
        return rate if 0 < rate < 1000 else None

    # --- reading ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        index = 0
        stem = _safe_stem(self.name)
        self._iterating = True
        try:
            while not self._closed.is_set():
                if self._cap is None:  # reopened after a loop or a drop
                    return
                ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    self._cap.release()
                    self._cap = None
                    if self.kind == "video":
                        if self.loop and index > 0:
                            self._cap = self._open()
                            continue
                        return
                    self._cap = self._reopen()
                    if self._cap is None:
                        if self._closed.is_set():
                            return
                        raise UserError(f"lost {self.kind} {self.name} and could not reopen it after "
                                        f"{self.reconnect} attempts; check the connection")
                    continue
                ts = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if self.kind == "video" else time.monotonic()
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Frame(index, self._finish(rgb), ts, f"{stem}_{index:06d}")
                index += 1
        finally:
            self._iterating = False
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    def close(self) -> None:
        """Stop the reading loop; the capture is released by the thread that reads it (releasing it under
        a blocked read() can crash some backends), or here when nobody is reading."""
        self._closed.set()
        if not self._iterating and self._cap is not None:
            self._cap.release()
            self._cap = None


def _safe_stem(name: str) -> str:
    stem = Path(name).stem if "://" not in name and "!" not in name else name.split("://")[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:40] or "frame"
