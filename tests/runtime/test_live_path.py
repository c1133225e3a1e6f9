"""runtime.infer's fast path: labels at the model's size agree with the exact definition, pre-processing in
one pass equals runtime.preprocess, file pacing and --realtime drops, and the CPU figures add up."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

import runtime.infer as infer
from runtime.backends import load_backend
from runtime.metadata import DataInfo, default_palette
from runtime.postprocess import Painter, labels_from_output, resize_labels
from runtime.preprocess import Preprocessor, preprocess_for
from runtime.sources import open_source


def test_fast_labels_equal_the_exact_ones_at_the_frame_size(onnx_model, colour_frames):
    with load_backend(onnx_model(k=5)) as b:
        painter = Painter(b.info.palette)
        for frame in colour_frames(4):  # 64 x 128 frames, a 64 x 128 model
            out = b.infer(preprocess_for(b.info, frame))
            labels, picture = painter.paint(frame, out)
            np.testing.assert_array_equal(labels, labels_from_output(out, frame.shape[:2])[0])
            assert picture.shape == frame.shape and picture.dtype == np.uint8


def test_fast_labels_agree_with_the_exact_ones_on_larger_frames(onnx_model, colour_frames):
    """A 64 x 128 model on 256 x 512 frames: nearest-resized labels vs logits upsampled, then arg-max."""
    agree = total = 0
    with load_backend(onnx_model(k=5, stride=4)) as b:
        painter = Painter(b.info.palette)
        for small in colour_frames(6):
            frame = cv2.resize(small, (512, 256), interpolation=cv2.INTER_LINEAR)
            out = b.infer(preprocess_for(b.info, frame))
            fast = resize_labels(painter.paint(frame, out)[0], frame.shape[:2])
            exact = labels_from_output(out, frame.shape[:2])[0]
            agree += int((fast == exact).sum())
            total += exact.size
    assert agree / total >= 0.99


def test_painter_modes_and_linear_filter():
    palette = [(0, 0, 0), (200, 0, 0)]
    image = np.full((8, 12, 3), 100, np.uint8)
    logits = np.zeros((1, 2, 4, 6), np.float32)
    logits[0, 1, :, 3:] = 1.0  # right half: class 1
    labels, over = Painter(palette, "overlay", 0.5).paint(image, logits)
    assert labels.shape == (4, 6) and tuple(over[0, 11]) == (150, 50, 50) and tuple(over[0, 0]) == (50, 50, 50)
    _, mask = Painter(palette, "mask").paint(image, logits)
    assert tuple(mask[0, 11]) == (200, 0, 0)
    _, side = Painter(palette, "side-by-side").paint(image, logits)
    assert side.shape == (8, 24, 3) and tuple(side[0, 0]) == (100, 100, 100)
    _, smooth = Painter(palette, "mask", filter="linear").paint(image, logits)
    assert 0 < int(smooth[0, 5, 0]) < 200 or 0 < int(smooth[0, 6, 0]) < 200  # a blended edge


def test_one_pass_preprocessing_equals_the_reference():
    info = DataInfo(classes=["a"], palette=default_palette(1), input_size=(48, 80))
    rng = np.random.default_rng(0)
    prep = Preprocessor(info, (48, 80), buffers=2)
    for shape in ((48, 80, 3), (200, 300, 3), (30, 50, 3)):
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_allclose(prep(frame), preprocess_for(info, frame), atol=1e-5, rtol=0)
    a, b, c = (prep(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)) for _ in range(3))
    assert a is c and a is not b  # a ring of two buffers


class SlowBackend:
    """Wraps a real backend and makes each call take `ms`: inference slower than a file's frame rate."""

    def __init__(self, backend, ms: float) -> None:
        self.b, self.ms = backend, ms
        self.info, self.input_size, self.last_ms = backend.info, backend.input_size, 0.0

    def infer(self, batch):
        t0 = time.perf_counter()
        out = self.b.infer(batch)
        time.sleep(max(0.0, self.ms / 1e3 - (time.perf_counter() - t0)))
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out


@pytest.mark.parametrize("fps, ms, drops", [(100.0, 40.0, True), (10.0, 0.0, False)])
def test_realtime_drops_only_when_inference_is_slower_than_the_file(onnx_model, tmp_path, colour_frames,
                                                                    fps, ms, drops):
    clip = tmp_path / "c.mp4"
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), fps, (128, 64))
    for f in colour_frames(10) * 2:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    with load_backend(onnx_model()) as real:
        source = open_source(str(clip))
        summary = infer.run(SlowBackend(real, ms), source, infer.Sink(), realtime=True, show_stats=False)
    assert summary["realtime"] and summary["drop_oldest"]
    assert (summary["dropped"] > 0) == drops
    assert summary["frames_out"] + summary["dropped"] <= 20


def test_a_file_is_read_no_faster_than_it_is_processed(onnx_model, tmp_path, colour_frames):
    clip = tmp_path / "c.mp4"
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (128, 64))
    for f in colour_frames(10) * 3:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    with load_backend(onnx_model()) as real:
        summary = infer.run(SlowBackend(real, 20.0), open_source(str(clip)), infer.Sink(), show_stats=False)
    assert summary["dropped"] == 0 and summary["frames_out"] == 30
    # at most one frame per stage in flight: a frame waits for at most ~3 inference calls, never for a backlog
    assert summary["end_to_end"]["p50"] < 5 * 20.0 + 50
    cpu = summary["cpu_ms_by_stage"]
    assert {"capture", "preprocess", "infer", "draw", "write", "other"} <= set(cpu)
    assert summary["cpu_ms_per_frame"] == pytest.approx(sum(cpu.values()), rel=1e-6)
    assert summary["cpu_ceiling_fps"] == pytest.approx(summary["cores"] * 1000 / summary["cpu_ms_per_frame"])


def test_json_records_the_backend_alone_and_the_ratio(onnx_model, video, tmp_path):
    import json

    js = tmp_path / "s.json"
    assert infer.main(["--model", str(onnx_model()), "--source", str(video), "--json", str(js),
                       "--measure-backend", "0.2"]) == 0
    report = json.loads(js.read_text())
    alone = report["backend_alone"]
    assert alone["fps"] > 0 and alone["calls"] >= 5
    assert report["fps_ratio"] == pytest.approx(report["fps"] / alone["fps"])
    assert report["threads"] is None  # the library's default, without spinning
