"""Fixtures for runtime tests: tiny real ONNX models built with onnx.helper (no torch), and a test video.
Helpers are handed out as fixtures (not imported), since several test folders have a conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.metadata import ONNX_DATA_KEY, DataInfo, default_palette


def _tiny_weights(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((k, 3)).astype(np.float32), rng.standard_normal(k).astype(np.float32) * 0.1


def make_onnx(path: Path, k: int = 4, size: tuple[int, int] = (64, 128), output: str = "logits", stride: int = 2,
              metadata: bool = True, dynamic: bool = False, extra: dict | None = None, seed: int = 0,
              classes: list[str] | None = None) -> Path:
    """images N x 3 x H x W -> Conv 1x1 (3 -> k, `stride`) -> Resize x stride (linear) -> `logits`
    (or ArgMax -> uint8 `labels`). Weights from tiny_weights(k, seed). Classes c0..c{k-1}, or `classes`
    (k = len(classes)); `classes="synthetic"` gives the synthetic dataset's."""
    if classes == "synthetic":
        from runtime.datasets.synthetic import CLASSES

        classes = list(CLASSES)
    if classes is not None:
        k = len(classes)
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = _tiny_weights(k, seed)
    h, wd = size
    dims: list = ["N", 3, "H", "W"] if dynamic else [1, 3, h, wd]
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["c"], kernel_shape=[1, 1], strides=[stride, stride])]
    inits = [numpy_helper.from_array(w.reshape(k, 3, 1, 1), "w"), numpy_helper.from_array(b, "b")]
    last = "c"
    if stride != 1:
        inits.append(numpy_helper.from_array(np.array([1, 1, stride, stride], np.float32), "scales"))
        nodes.append(helper.make_node("Resize", ["c", "", "scales"], ["up"], mode="linear"))
        last = "up"
    if output == "logits":
        nodes.append(helper.make_node("Identity", [last], ["logits"]))
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], k, dims[2], dims[3]])
    else:
        nodes.append(helper.make_node("ArgMax", [last], ["am"], axis=1, keepdims=0))
        nodes.append(helper.make_node("Cast", ["am"], ["labels"], to=TensorProto.UINT8))
        out = helper.make_tensor_value_info("labels", TensorProto.UINT8, [dims[0], dims[2], dims[3]])
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
                              [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        info = DataInfo(classes=list(classes or [f"c{i}" for i in range(k)]), palette=default_palette(k), input_size=size,
                        extra=extra or {})
        helper.set_model_props(model, {ONNX_DATA_KEY: info.to_json()})
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def onnx_model(tmp_path: Path) -> Callable[..., Path]:
    """Factory: onnx_model(name="m.onnx", **make_onnx options) -> path."""

    def make(name: str = "m.onnx", **kw) -> Path:  # type: ignore[no-untyped-def]
        return make_onnx(tmp_path / name, **kw)

    return make


def _colour_frames(n: int, size: tuple[int, int] = (64, 128)) -> list[np.ndarray]:
    """n RGB frames: a gradient whose red level and a moving block differ per frame."""
    h, w = size
    frames = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[..., 0] = 20 * i + 10
        f[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        f[..., 2] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
        f[8:24, 4 + 10 * i: 20 + 10 * i] = (250, 250, 250)
        frames.append(f)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    return path


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """A 10-frame 64 x 128 mp4v video at 10 FPS."""
    return write_video(tmp_path / "clip.mp4", _colour_frames(10))


@pytest.fixture
def colour_frames() -> Callable[..., list[np.ndarray]]:
    """colour_frames(n, size=(64, 128)) -> the frames the `video` fixture holds (first n)."""
    return _colour_frames


@pytest.fixture
def tiny_weights() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """tiny_weights(k, seed=0) -> the (k x 3 weight, k bias) of make_onnx's 1x1 convolution."""
    return _tiny_weights
