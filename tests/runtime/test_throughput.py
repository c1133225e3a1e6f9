"""runtime.infer --throughput (issue 23): several inferences in flight on real tiny ONNX models, frames out in
their order, each frame's labels equal to the latency mode's, the summary's fps / requests / CPU use, and
live sources refused."""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

import runtime.infer as infer
from runtime.backends import load_backend
from runtime.backends.base import Backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, cpu_requests
from runtime.postprocess import Painter
from runtime.preprocess import preprocess_for
from runtime.sources import open_source

N_FRAMES = 12


def _indexed_frames(folder, n: int = N_FRAMES):
    """n 64 x 128 PNG frames (lossless) whose content encodes their index: a bright block at column 9 i on a
    gradient whose red level rises with i. Returns the folder and the frames (RGB)."""
    folder.mkdir()
    frames = []
    for i in range(n):
        f = np.zeros((64, 128, 3), np.uint8)
        f[..., 0] = 15 * i
        f[..., 1] = np.linspace(0, 255, 128, dtype=np.uint8)[None, :]
        f[..., 2] = 60
        f[16:48, 9 * i: 9 * i + 12] = (250, 250, 250)
        cv2.imwrite(str(folder / f"f{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        frames.append(f)
    return folder, frames


def _reference_labels(model, frames) -> list[np.ndarray]:
    """Each frame's labels at the model's output size, one frame at a time (latency mode's definition)."""
    with load_backend(model) as b:
        painter = Painter(b.info.palette)
        return [painter.labels(b.infer(preprocess_for(b.info, f))).copy() for f in frames]


def _distinct(labels: list[np.ndarray]) -> bool:
    return len({lab.tobytes() for lab in labels}) == len(labels)


def _masks(folder) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_throughput_cli_equals_latency_mode_frame_by_frame(onnx_model, tmp_path, capsys, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    model = onnx_model(k=4, stride=1)  # static 1 x 3 x 64 x 128
    src, frames = _indexed_frames(tmp_path / "frames")
    assert _distinct(_reference_labels(model, frames))  # a frame out of order would show
    outs = {}
    for mode, extra in (("latency", []), ("throughput", ["--throughput", "--requests", "3"])):
        masks, js, video = tmp_path / f"masks-{mode}", tmp_path / f"{mode}.json", tmp_path / f"{mode}.mp4"
        assert infer.main(["--model", str(model), "--backend", backend, "--source", str(src), "--masks", str(masks),
                           "--save", str(video), "--json", str(js), "--measure-backend", "0.1", "--no-stats",
                           *extra]) == 0
        outs[mode] = (_masks(masks), json.loads(js.read_text()))
    (lat_masks, lat), (thr_masks, thr) = outs["latency"], outs["throughput"]
    assert len(thr_masks) == len(lat_masks) == N_FRAMES
    for a, b in zip(thr_masks, lat_masks):
        np.testing.assert_array_equal(a, b)
    assert (lat["mode"], lat["requests"], thr["mode"], thr["requests"]) == ("latency", 1, "throughput", 3)
    assert thr["frames_out"] == N_FRAMES and thr["dropped"] == 0 and thr["fps"] > 0
    assert thr["workers"]["infer"] == 3 and thr["stages"]["infer"]["n"] == N_FRAMES
    assert 0 < thr["cpu_use"] <= thr["cores"] * 1.5 and thr["cpu_s"] > 0
    assert thr["backend_alone"]["requests"] == 3 and thr["backend_alone"]["calls"] >= 5
    out = capsys.readouterr().out
    assert "throughput mode, 3 requests in flight" in out and "CPU use" in out


class Staggered(OnnxRuntimeBackend):
    """A real ONNX Runtime backend whose request 0 finishes each call 40 ms late, so that frames given to the
    other requests complete before earlier ones; `completed` records the labels in completion order."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.completed: list[bytes] = []
        self._lock = threading.Lock()

    def infer_impl(self, batch):
        out = super().infer_impl(batch)
        time.sleep(0.04)
        return self._done(out)

    def infer_request_impl(self, batch, request):
        return self._done(super().infer_request_impl(batch, request))

    def _done(self, out):
        with self._lock:
            self.completed.append(Painter([(0, 0, 0)]).labels(out).tobytes())
        return out


class Recording(infer.Sink):
    """The real Sink (masks written to a folder), noting the order in which frames reach it."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.order: list[int] = []

    def write(self, frame, labels, picture) -> None:
        self.order.append(frame.index)
        super().write(frame, labels, picture)


def test_frames_that_finish_out_of_order_are_written_in_order(onnx_model, tmp_path):
    model = onnx_model(k=4, stride=1)
    src, frames = _indexed_frames(tmp_path / "frames")
    ref = _reference_labels(model, frames)
    assert _distinct(ref)
    with Staggered(model, threads=3) as b:
        assert b.open_requests(3) == 3 and b.requests == 3
        sink = Recording(masks=str(tmp_path / "masks"))
        summary = infer.run(b, open_source(str(src)), sink, show_stats=False, throughput=True)
    index = {lab.tobytes(): i for i, lab in enumerate(ref)}
    completed = [index[c] for c in b.completed]
    assert sorted(completed) == list(range(N_FRAMES)) and completed != sorted(completed)  # really out of order
    assert sink.order == list(range(N_FRAMES))
    for mask, lab in zip(_masks(tmp_path / "masks"), ref):
        np.testing.assert_array_equal(mask, lab)  # model output size == frame size here
    assert summary["mode"] == "throughput" and summary["requests"] == 3 and summary["frames_out"] == N_FRAMES


def test_dynamic_model_at_another_size_in_throughput_mode(onnx_model, tmp_path, colour_frames):
    model = onnx_model(dynamic=True)
    src, frames = _indexed_frames(tmp_path / "frames", 6)
    with load_backend(model) as b:
        painter = Painter(b.info.palette)
        ref = [painter.labels(b.infer(preprocess_for(b.info, f, (32, 64)))).copy() for f in frames]
        assert b.open_requests(2) == 2
        got = []

        class Keep(infer.Sink):
            def write(self, frame, labels, picture) -> None:
                got.append(labels.copy())
                super().write(frame, labels, picture)

        summary = infer.run(b, open_source(str(src)), Keep(), size=(32, 64), show_stats=False, throughput=True)
    assert summary["requests"] == 2 and len(got) == 6
    for a, r in zip(got, ref):
        np.testing.assert_array_equal(a, r)


def test_openvino_opens_its_optimal_number_of_requests(onnx_model):
    pytest.importorskip("openvino")
    with load_backend(onnx_model(), "openvino", performance_hint="throughput") as b:
        optimal = int(b.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        assert str(b.compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
        assert b.open_requests() == optimal == b.requests >= 1


@pytest.mark.parametrize("source, words", [("0", "live camera source"), ("rtsp://cam.local/live", "live stream source")])
def test_a_live_source_with_throughput_is_one_sentence(onnx_model, capsys, source, words):
    assert infer.main(["--model", str(onnx_model()), "--source", source, "--throughput"]) == 2
    err = capsys.readouterr().err
    assert words in err and "drop --throughput" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--throughput", "--realtime"], "--throughput and --realtime contradict each other"),
    (["--requests", "2"], "--requests 2 needs --throughput"),
])
def test_throughput_option_errors(onnx_model, video, capsys, argv, message):
    assert infer.main(["--model", str(onnx_model()), "--source", str(video), *argv]) == 2
    assert message in capsys.readouterr().err


class OneAtATime(OnnxRuntimeBackend):
    """A real backend that keeps the base class's single request, as TensorRT and PyTorch do."""

    open_requests = Backend.open_requests


def test_a_backend_with_one_request_falls_back_to_latency_mode_with_a_note(onnx_model, video, capsys):
    with OneAtATime(onnx_model()) as b:
        assert infer.open_throughput(b, None) is False
        summary = infer.run(b, open_source(str(video)), infer.Sink(), show_stats=False, throughput=False)
    assert "note: the onnxruntime backend runs one inference at a time" in capsys.readouterr().err
    assert (summary["mode"], summary["requests"], summary["frames_out"]) == ("latency", 1, 10)


def test_tensorrt_keeps_the_base_single_request():
    from runtime.backends.tensorrt_backend import TensorRTBackend

    assert TensorRTBackend.open_requests is Backend.open_requests


def test_help_explains_throughput_and_the_default():
    text = infer.build_parser().format_help()
    assert "--throughput" in text and "--requests" in text and "latency mode" in text


@pytest.mark.parametrize("total, requests", [(1, 1), (2, 2), (8, 8), (12, 6), (16, 8), (32, 8)])
def test_cpu_requests(total, requests):
    assert cpu_requests(total) == requests
