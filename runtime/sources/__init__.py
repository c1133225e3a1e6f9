"""Frame sources, chosen from the `--source` string:

| source                               | kind      | live |
|--------------------------------------|-----------|------|
| `0`, `1`, `/dev/video0`              | camera    | yes  |
| `csi://0`                            | gstreamer (Jetson CSI camera, nvarguscamerasrc) | yes |
| a string containing `!`              | gstreamer pipeline (must end in appsink) | yes |
| `rtsp://`, `rtmp://`, `http(s)://`, `udp://`, `tcp://`, `srt://` | stream (OpenCV's FFmpeg backend) | yes |
| `clip.mp4` (any other file)          | video     | no   |
| `img.png`, a folder, `dir/*.jpg`     | images    | no   |

`open_source(spec, loop=False, size=None, fps=None, reconnect=5)` -> a `Source`; iterate it for
`Frame(index, image RGB uint8, timestamp, name)`.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2

from runtime.errors import UserError
from runtime.sources.base import Frame, Source
from runtime.sources.capture import CaptureSource, csi_pipeline, has_gstreamer, redact
from runtime.sources.images import IMAGE_SUFFIXES, ImageSource

__all__ = ["Frame", "Source", "classify_source", "open_source", "STREAM_SCHEMES"]

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "rtp")


def classify_source(spec: str) -> str:
    """camera | csi | gstreamer | stream | images | video (from the string alone; no I/O but a stat)."""
    s = spec.strip()
    if re.fullmatch(r"\d+", s) or re.fullmatch(r"/dev/video\d+", s):
        return "camera"
    if s.lower().startswith("csi://"):
        return "csi"
    if "!" in s:
        return "gstreamer"
    scheme = s.split("://", 1)[0].lower() if "://" in s else ""
    if scheme in STREAM_SCHEMES:
        return "stream"
    if scheme == "file":
        return classify_source(s[len("file://"):])
    p = Path(s)
    if p.is_dir() or any(c in s for c in "*?[") and not p.exists() or p.suffix.lower() in IMAGE_SUFFIXES:
        return "images"
    return "video"


def open_source(spec: str | int, loop: bool = False, size: tuple[int, int] | None = None, fps: float | None = None,
                reconnect: int = 5, backoff_s: float = 0.5) -> Source:
    """Open `spec` (see the table above). `size` (H, W): camera resolution to request, and the size every
    frame is resized to; `fps`: camera rate to request, or playback pacing for files; `loop`: start files
    over at their end; `reconnect`/`backoff_s`: reopen attempts for live sources and the first delay."""
    spec = str(spec).strip()
    kind = classify_source(spec)
    live_opts = {"size": size, "fps": fps, "reconnect": reconnect, "backoff_s": backoff_s}
    if kind == "camera":
        target: int | str = int(spec) if spec.isdigit() else spec
        if isinstance(target, str) and not Path(target).exists():
            raise UserError(f"camera {spec} does not exist; list cameras with v4l2-ctl --list-devices "
                            "(in Docker pass --device /dev/videoN)")
        return CaptureSource(target, "camera", f"camera{spec}" if spec.isdigit() else spec,
                             api=cv2.CAP_V4L2 if _linux() else cv2.CAP_ANY, **live_opts)
    if kind in ("csi", "gstreamer"):
        if not has_gstreamer():
            raise UserError(f"source {spec} needs OpenCV built with GStreamer, which this one is not "
                            "(pip's opencv-python lacks it); on Jetson use JetPack's python3-opencv")
        if kind == "csi":
            sensor = spec.split("://", 1)[1] or "0"
            if not sensor.isdigit():
                raise UserError(f"bad CSI source {spec}; use csi://0, csi://1, ...")
            return CaptureSource(csi_pipeline(int(sensor), size, fps), "gstreamer", f"csi{sensor}",
                                 api=cv2.CAP_GSTREAMER, **live_opts)
        return CaptureSource(spec, "gstreamer", "gstreamer", api=cv2.CAP_GSTREAMER, **live_opts)
    if kind == "stream":
        return CaptureSource(spec, "stream", redact(spec), api=cv2.CAP_FFMPEG, **live_opts)
    if kind == "images":
        return ImageSource(spec, loop=loop, size=size, fps=fps)
    path = Path(spec[len("file://"):] if spec.startswith("file://") else spec)
    if not path.is_file():
        raise UserError(f"source {spec} does not exist; pass a camera index, a video or image file, a folder, "
                        "a glob, a URL or a GStreamer pipeline")
    return CaptureSource(str(path), "video", str(path), loop=loop, size=size, fps=fps)


def _linux() -> bool:
    import sys

    return sys.platform.startswith("linux")
