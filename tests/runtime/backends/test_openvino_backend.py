"""The OpenVINO backend against ONNX Runtime on the same ONNX file; the IR carries DataInfo; bad input is
one sentence. Real OpenVINO on this CPU (no stand-in)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.backends import backend_name_for, load_backend, model_format
from runtime.errors import UserError

ov = pytest.importorskip("openvino")

from runtime.backends.openvino_backend import core, ov_device, read_data_info, write_ir  # noqa: E402


def test_logits_equal_onnx_runtime_in_f32_and_close_in_bf16(onnx_model):
    path = onnx_model(size=(32, 64), k=5)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 64)).astype(np.float32)
    with load_backend(path, "onnxruntime", providers="cpu") as ref, load_backend(path, "openvino", threads=1) as b:
        assert b.name == "openvino" and b.info.classes == ref.info.classes and b.output_kind == "logits"
        assert b.input_shape == (1, 3, 32, 64) and b.precision == "f32"
        want = ref.infer(x)
        got = b.infer(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # a 1x1 conv and a resize: float rounding only
    with load_backend(path, "openvino", precision_hint="bf16") as half:
        # bf16 keeps 8 bits of mantissa: relative error ~ 2^-8 of the logits' scale
        assert np.abs(half.infer(x) - want).max() < 0.05 * np.abs(want).max()


def test_label_models_and_dynamic_shapes(onnx_model):
    labels = onnx_model("l.onnx", output="labels", size=(32, 64))
    dyn = onnx_model("d.onnx", dynamic=True, size=(32, 64))
    x = np.random.default_rng(1).standard_normal((2, 3, 48, 80)).astype(np.float32)
    with load_backend(labels, "openvino") as b, load_backend(labels, "onnxruntime") as ref:
        assert b.output_kind == "labels"
        np.testing.assert_array_equal(b.infer(x[:1, :, :32, :64]), ref.infer(x[:1, :, :32, :64]))
    with load_backend(dyn, "openvino") as b, load_backend(dyn, "onnxruntime") as ref:
        assert b.input_shape == (-1, 3, -1, -1)
        np.testing.assert_allclose(b.infer(x), ref.infer(x), atol=1e-5)


def test_data_info_round_trips_through_the_ir(onnx_model, tmp_path):
    path = onnx_model(size=(32, 64), extra={"dataset": "synthetic", "synthetic": {"seed": 3}})
    model = core().read_model(str(path))
    info = read_data_info(model)
    assert info is not None and info.extra["synthetic"] == {"seed": 3}
    xml = write_ir(model, tmp_path / "m.xml", info)
    assert xml.with_suffix(".bin").is_file() and not list(tmp_path.glob(".*tmp*"))
    assert backend_name_for(xml) == "openvino" and model_format(xml) == "openvino"
    with load_backend(xml) as b:
        assert b.info == info  # classes, palette, mean/std, input size, extra
    from runtime.bench import model_size_mb

    both = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    assert model_size_mb(xml) == both / 1e6  # an IR's size counts its weights


def test_bad_input_is_one_sentence(onnx_model, tmp_path):
    xml = tmp_path / "m.xml"
    xml.write_text("<net>")
    with pytest.raises(UserError, match=r"m.xml has no weights file m.bin"):
        load_backend(xml)
    xml.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(UserError, match=r"OpenVINO cannot read .*m.xml .*export it again"):
        load_backend(xml)
    bare = onnx_model("bare.onnx", metadata=False)
    with pytest.raises(UserError, match="has no 'lfd_edge.data' block"):
        load_backend(bare, "openvino")
    with pytest.raises(UserError, match="OpenVINO has no device 'cuda'"):
        ov_device("cuda")
    assert ov_device("gpu.1") == "GPU.1" and ov_device(None) == "CPU"
