"""calib.onnx_io: the CPU backend of a model file is the runtime's, chosen from the suffix as the runtime
chooses it; the data block is the runtime's reader's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calib.onnx_io import cpu_backend, data_info
from runtime.errors import UserError
from runtime.metadata import ONNX_DATA_KEY, DataInfo, default_palette

INFO = DataInfo(classes=["a", "b"], palette=default_palette(2), input_size=(8, 16))


def _model(path: Path, metadata: bool = True) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["images", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 8, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, {ONNX_DATA_KEY: INFO.to_json()})
    onnx.save(model, str(path))
    return model


def test_an_onnx_file_runs_on_onnx_runtime_s_cpu_provider(tmp_path):
    _model(tmp_path / "m.onnx")
    with cpu_backend(tmp_path / "m.onnx", threads=1) as b:
        assert b.name == "onnxruntime" and b.providers == ["CPUExecutionProvider"] and b.info == INFO
        assert b.infer(np.ones((1, 3, 8, 16), np.float32)).shape == (1, 2, 8, 16)


def test_an_openvino_ir_runs_on_openvino_s_cpu_device_in_f32(tmp_path):
    pytest.importorskip("openvino")
    from runtime.backends.openvino_backend import core, write_ir

    _model(tmp_path / "m.onnx")
    xml = write_ir(core().read_model(str(tmp_path / "m.onnx")), tmp_path / "m.xml", INFO)
    with cpu_backend(xml, threads=1) as b:
        assert b.name == "openvino" and b.info == INFO
        assert (b.settings["device"], b.settings["precision_hint"], b.settings["threads"]) == ("CPU", "f32", 1)


def test_a_model_calibration_does_not_run_on_the_cpu_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match=r"calibration runs ONNX \(\.onnx\) and OpenVINO IR \(\.xml\) models on the "
                                        r"CPU, not .*m\.engine \(tensorrt\)"):
        cpu_backend(tmp_path / "m.engine")
    with pytest.raises(UserError, match="cannot tell the backend of .*m.bin from its suffix"):
        cpu_backend(tmp_path / "m.bin")


def test_data_info_is_the_block_or_one_sentence_naming_the_file(tmp_path):
    assert data_info(_model(tmp_path / "m.onnx"), tmp_path / "m.onnx") == INFO
    with pytest.raises(UserError, match=r"bare\.onnx has no 'lfd_edge\.data' metadata"):
        data_info(_model(tmp_path / "bare.onnx", metadata=False), tmp_path / "bare.onnx")
