"""The accuracy guard on a constructed case: one activation with an outlier channel that ruins its
per-tensor INT8 scale, so quantizing it hurts, and keeping its nodes in float fixes it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from calib_standins import InMemory
from onnx import TensorProto, helper, numpy_helper

import calib.quantize as cq
from calib.sensitivity import rank_tensors
from export.onnx_graph import set_metadata
from runtime.metadata import ONNX_DATA_KEY, DataInfo, default_palette
from runtime.preprocess import preprocess_for

SIZE = (16, 32)


def _outlier_model(path) -> None:
    """images -> conv1 (1x1: copies the 3 channels, plus a 4th channel = 1000) -> mid -> conv2 (1x1: keeps
    the 3 copies, ignores the 4th) -> logits. In FP32 the 4th channel is harmless; in INT8 it stretches
    `mid`'s range to ~1000, so its scale (~4) rounds the informative channels (|x| < 3) away."""
    w1 = np.zeros((4, 3, 1, 1), np.float32)
    w1[[0, 1, 2], [0, 1, 2]] = 1.0
    b1 = np.array([0, 0, 0, 1000], np.float32)
    w2 = np.zeros((3, 4, 1, 1), np.float32)
    w2[[0, 1, 2], [0, 1, 2]] = 1.0
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w1, "w1"), (b1, "b1"), (w2, "w2"), (np.zeros(3, np.float32), "b2")]]
    nodes = [helper.make_node("Conv", ["images", "w1", "b1"], ["mid"], name="conv1"),
             helper.make_node("Conv", ["mid", "w2", "b2"], ["logits"], name="conv2")]
    g = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *SIZE])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, *SIZE])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    info = DataInfo(classes=["a", "b", "c"], palette=default_palette(3), input_size=SIZE)
    set_metadata(m, {ONNX_DATA_KEY: info.to_json()})
    onnx.save(m, str(path))
    return info


def _dataset(path, info: DataInfo, n: int, seed: int) -> InMemory:
    """Blocky colour images labelled by the FP32 model itself (so FP32 mIoU is 1)."""
    rng = np.random.default_rng(seed)
    images = [np.kron(rng.integers(0, 256, (4, 8, 3)), np.ones((4, 4, 1))).astype(np.uint8) for _ in range(n)]
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels = [s.run(None, {"images": preprocess_for(info, im)})[0][0].argmax(0).astype(np.uint8) for im in images]
    return InMemory(list(zip(images, labels)), info.classes)


def outlier_case(tmp_path, monkeypatch):
    """The outlier model at tmp_path/outlier.onnx, its train (8 images) and val (6) splits served to
    calib.quantize in place of any dataset; returns the model's path."""
    src = tmp_path / "outlier.onnx"
    info = _outlier_model(src)
    splits = {"train": _dataset(src, info, 8, 0), "val": _dataset(src, info, 6, 1)}
    monkeypatch.setattr(cq.DataSpec, "open", lambda self, split, skip_bad=False, **kw: splits[split])
    return src


def test_guard_keeps_the_outlier_tensor_in_float(tmp_path, monkeypatch):
    src = outlier_case(tmp_path, monkeypatch)

    def run(max_drop, name):
        opts = cq.QuantizeOptions(target="cpu", images=8, val_images=6, max_drop=max_drop,
                                  cache_dir=str(tmp_path / "cache"), reduce_range=False)
        (rep,) = cq.quantize(src, "mem", opts, out=tmp_path / name)
        return rep

    plain = run(None, "plain.onnx")
    assert plain["accuracy"]["fp32_miou"] == 1.0
    assert plain["accuracy"]["drop"] > 30  # the constructed damage is real
    guarded = run(5.0, "guarded.onnx")
    assert guarded["accuracy"]["drop"] <= 5.0 < plain["accuracy"]["drop"]
    assert {"conv1", "conv2"} <= set(guarded["excluded_nodes"])
    assert guarded["sensitivity"][0]["tensor"] == "mid"  # ranked most sensitive
    saved = json.loads((tmp_path / "guarded.onnx.calib.json").read_text())
    assert saved["excluded_nodes"] == guarded["excluded_nodes"] and len(saved["guard_rounds"]) >= 2
    assert saved["max_drop"] == {"target": 5.0, "reached": guarded["accuracy"]["drop"], "met": True}
    assert plain["max_drop"] is None


def test_ranking_puts_the_outlier_tensor_first(tmp_path):
    from calib.int8 import prepare, quantize_cpu

    src = tmp_path / "outlier.onnx"
    info = _outlier_model(src)
    images = preprocess_for(info, [s[0] for s in _dataset(src, info, 4, 0).samples])
    prepared = prepare(src, tmp_path / "p.onnx")
    q = quantize_cpu(prepared, tmp_path / "q.onnx", images, reduce_range=False)
    ranking = rank_tensors(onnx.load(str(prepared)), q, images)
    assert ranking[0].tensor == "mid" and ranking[0].nodes == ["conv1", "conv2"]
    others = [r.sqnr_db for r in ranking[1:]]
    assert others and ranking[0].sqnr_db + 20 < min(others)
