from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time

import cv2
import numpy as np
import pytest

import runtime.sources.capture as capture
from runtime.errors import UserError
from runtime.sources import classify_source, open_source
from runtime.sources.capture import CaptureSource


def test_video_file_frames_then_clean_end(video, colour_frames):
    src = open_source(str(video))
    assert src.kind == "video" and not src.live and src.native_fps == pytest.approx(10.0)
    frames = list(src)
    assert [f.index for f in frames] == list(range(10))
    assert [f.name for f in frames][:2] == ["clip_000000", "clip_000001"]
    assert np.allclose([f.timestamp for f in frames], np.arange(10) / 10.0)
    truth = colour_frames(10)
    for f, t in zip(frames, truth):
        assert f.image.shape == (64, 128, 3) and f.image.dtype == np.uint8
        # lossy codec: compare region means; red (channel 0) carries the frame number, so BGR order would fail
        assert abs(float(f.image[40:, :, 0].mean()) - float(t[40:, :, 0].mean())) < 6


def test_video_loop_and_resize(video):
    frames = list(itertools.islice(open_source(str(video), loop=True, size=(32, 48)), 25))
    assert len(frames) == 25 and [f.index for f in frames] == list(range(25))
    assert frames[0].image.shape == (32, 48, 3)


def _write_pngs(folder, frames, names):
    folder.mkdir(exist_ok=True)
    for f, n in zip(frames, names):
        cv2.imwrite(str(folder / n), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


def test_folder_glob_and_single_image(tmp_path, colour_frames):
    frames = colour_frames(3)
    _write_pngs(tmp_path / "imgs", frames, ["b.png", "a.png", "c.png"])
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    got = list(open_source(str(tmp_path / "imgs")))
    assert [f.name for f in got] == ["a", "b", "c"]  # sorted by name
    np.testing.assert_array_equal(got[1].image, frames[0])  # b.png holds frame 0, read back as RGB
    globbed = list(open_source(str(tmp_path / "imgs" / "[ab].png")))
    assert [f.name for f in globbed] == ["a", "b"]
    single = list(open_source(str(tmp_path / "imgs" / "c.png")))
    assert len(single) == 1 and single[0].name == "c"
    np.testing.assert_array_equal(single[0].image, frames[2])


def test_missing_sources_are_named(tmp_path):
    for spec in (tmp_path / "nope.mp4", tmp_path / "nope_dir" / "x.png", tmp_path / "*.jpg"):
        with pytest.raises(UserError, match=str(spec).replace("[", r"\[").replace("*", r"\*")):
            open_source(str(spec))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no images"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="/dev/video97"):
        open_source("/dev/video97")


def test_classify():
    assert classify_source("0") == "camera" and classify_source("/dev/video1") == "camera"
    assert classify_source("csi://0") == "csi"
    assert classify_source("videotestsrc ! videoconvert ! appsink") == "gstreamer"
    assert classify_source("rtsp://user:pw@cam/stream") == "stream" and classify_source("udp://127.0.0.1:5000") == "stream"
    assert classify_source("movie.mkv") == "video" and classify_source("x/*.jpg") == "images"


def test_gstreamer_without_support_says_so():
    if capture.has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(UserError, match="GStreamer"):
        open_source("csi://0")


class FakeCapture:
    """Scripted cv2.VideoCapture: each open takes the next script entry (None = cannot open, n = n frames)."""

    script: list[int | None] = []
    opens = 0

    def __init__(self, *args):
        FakeCapture.opens += 1
        self.frames = FakeCapture.script.pop(0) if FakeCapture.script else None

    def isOpened(self):
        return self.frames is not None

    def read(self):
        if not self.frames:
            return False, None
        self.frames -= 1
        return True, np.zeros((4, 6, 3), np.uint8)

    def get(self, prop):
        return 0.0

    def set(self, prop, value):
        return True

    def release(self):
        pass


def test_stream_reconnects_with_backoff_then_fails(monkeypatch):
    monkeypatch.setattr(capture.cv2, "VideoCapture", FakeCapture)
    FakeCapture.script, FakeCapture.opens = [3, None, 2], 0
    delays: list[float] = []
    src = CaptureSource("rtsp://u:secret@cam/s", "stream", capture.redact("rtsp://u:secret@cam/s"),
                        reconnect=3, backoff_s=0.5, sleep=delays.append)
    got = []
    with pytest.raises(UserError, match=r"rtsp://u:\*\*\*@cam/s.*3 attempts") as e:
        for f in src:
            got.append(f.index)
    assert "secret" not in str(e.value)
    assert got == [0, 1, 2, 3, 4]  # 3 frames, a failed reopen, 2 more frames
    assert delays == [0.5, 1.0, 0.5, 1.0, 2.0]  # back-off doubles and restarts after a success


def test_stream_close_stops_reconnecting(monkeypatch):
    monkeypatch.setattr(capture.cv2, "VideoCapture", FakeCapture)
    FakeCapture.script, FakeCapture.opens = [2], 0
    src = CaptureSource("udp://x", "stream", "udp://x", reconnect=5, sleep=lambda s: src.close())
    assert [f.index for f in src] == [0, 1]  # ends without an error once closed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")
def test_http_stream_served_by_ffmpeg(video):
    url = f"http://127.0.0.1:{_free_port()}/live.ts"
    server = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
                               "-c:v", "mpeg4", "-f", "mpegts", "-listen", "1", url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        src = open_source(url, reconnect=6, backoff_s=0.25)
        assert src.live and src.kind == "stream"
        frames = list(itertools.islice(src, 5))
        src.close()
        assert len(frames) == 5 and frames[0].image.shape == (64, 128, 3)
    finally:
        server.terminate()
        server.wait(timeout=5)
