"""runtime.metadata: the one reader of an ONNX model's metadata block, from a ModelProto, an ONNX Runtime
session or a mapping, and the `lfd_edge.data` block it carries."""

from __future__ import annotations

import json

import pytest

from runtime.errors import UserError
from runtime.metadata import (
    ONNX_DATA_KEY,
    ONNX_SOURCE_KEY,
    DataInfo,
    default_palette,
    onnx_data_info,
    onnx_metadata,
)

INFO = DataInfo(classes=["road", "car", "sky"], palette=default_palette(3), input_size=(32, 64))


def _model(props: dict[str, str]):  # type: ignore[no-untyped-def]
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


PROPS = {ONNX_DATA_KEY: INFO.to_json(), ONNX_SOURCE_KEY: json.dumps({"sha256": "abc"}), "other": "x"}


def test_the_block_reads_alike_from_a_model_a_session_and_a_mapping(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _model(PROPS)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert onnx_metadata(model) == PROPS
    assert onnx_metadata(session) == PROPS
    assert onnx_metadata(dict(PROPS)) == PROPS
    assert onnx_metadata(_model({})) == {}
    with pytest.raises(TypeError, match="no ONNX metadata in a str"):
        onnx_metadata("m.onnx")


def test_the_data_block_or_the_default_or_one_sentence_naming_the_file():
    assert onnx_data_info(_model(PROPS), "m.onnx") == INFO
    assert onnx_data_info(PROPS, "m.onnx", default=DataInfo(["x"], [(0, 0, 0)])) == INFO  # the block wins
    bare = {ONNX_SOURCE_KEY: "{}"}
    fallback = DataInfo(["x"], [(0, 0, 0)])
    assert onnx_data_info(bare, "m.onnx", default=fallback) is fallback
    with pytest.raises(UserError, match=r"^m\.onnx has no 'lfd_edge\.data' metadata .*python -m export\.onnx"):
        onnx_data_info(bare, "m.onnx")
    with pytest.raises(UserError, match="data block is not valid JSON"):
        onnx_data_info({ONNX_DATA_KEY: "{"}, "m.onnx")
