from __future__ import annotations

import numpy as np
import pytest

from runtime.backends import SUFFIXES, backend_name_for, load_backend, model_format
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, resolve_providers
from runtime.errors import UserError
from runtime.metadata import DataInfo


def test_logits_match_numpy_and_metadata(onnx_model, tiny_weights):
    path = onnx_model(k=5, stride=1)
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 128)).astype(np.float32)
    with load_backend(path, threads=1) as b:
        assert isinstance(b, OnnxRuntimeBackend)
        assert b.output_kind == "logits" and b.input_shape == (1, 3, 64, 128) and b.input_size == (64, 128)
        assert b.info.classes == [f"c{i}" for i in range(5)]
        y = b.infer(x)
    w, bias = tiny_weights(5)
    expected = np.einsum("kc,nchw->nkhw", w, x) + bias[None, :, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_labels_output_is_argmax_of_logits(onnx_model):
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 128)).astype(np.float32)
    with load_backend(onnx_model("l.onnx", output="labels")) as lb, load_backend(onnx_model("g.onnx")) as gb:
        assert lb.output_kind == "labels"
        labels = lb.infer(x)
        logits = gb.infer(x)
    assert labels.shape == (1, 64, 128) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, logits.argmax(1))


def test_dynamic_model_takes_any_size(onnx_model):
    with load_backend(onnx_model(dynamic=True)) as b:
        assert b.input_shape == (-1, 3, -1, -1) and b.input_size == (64, 128)
        assert b.infer(np.zeros((2, 3, 32, 48), np.float32)).shape == (2, 4, 32, 48)


def test_static_shape_mismatch_is_user_error(onnx_model):
    with load_backend(onnx_model()) as b, pytest.raises(UserError, match="static input"):
        b.infer(np.zeros((1, 3, 32, 64), np.float32))


def test_truncated_model_names_file(onnx_model, tmp_path):
    good = onnx_model().read_bytes()
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="broken.onnx"):
        load_backend(bad)


def test_missing_metadata_says_how_to_export(onnx_model):
    path = onnx_model(metadata=False)
    with pytest.raises(UserError, match="export.onnx"):
        load_backend(path)
    info = DataInfo(classes=["a", "b", "c", "d"], palette=[(0, 0, 0)] * 4, input_size=(64, 128))
    with OnnxRuntimeBackend(path, info=info) as b:
        assert b.info.classes == ["a", "b", "c", "d"]


def test_backend_choice_and_errors(tmp_path):
    assert backend_name_for("a.onnx") == "onnxruntime" and backend_name_for("a.pt") == "torch"
    assert backend_name_for("a.engine") == "tensorrt" and backend_name_for("x.bin", "ort") == "onnxruntime"
    with pytest.raises(UserError, match=r"\.onnx") as e:
        backend_name_for("model.tflite")
    assert all(s in str(e.value) for s in SUFFIXES)
    with pytest.raises(UserError, match="onnxruntime"):
        backend_name_for("a.onnx", "onnxrt")
    with pytest.raises(UserError, match="does not exist"):
        load_backend(tmp_path / "absent.onnx")
    assert model_format("s.int8.cpu.onnx") == "onnx int8 (cpu)" and model_format("s.pt") == "pytorch"


def test_providers():
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, avail) == avail
    assert resolve_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert resolve_providers("cuda,cpu", avail) == avail
    with pytest.raises(UserError, match="onnxruntime-gpu"):
        resolve_providers(["tensorrt"], avail)
