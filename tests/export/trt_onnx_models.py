"""Tiny ONNX models (fp32, fp16, Q/DQ) for the TensorRT planning tests, built with onnx.helper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.metadata import ONNX_DATA_KEY, ONNX_SOURCE_KEY, DataInfo, default_palette


def write_model(path: Path, kind: str = "fp32", dims: tuple = (1, 3, 64, 128)) -> Path:
    """A 1x1 conv segmentation head `images` -> `logits` (2 classes); kind fp32 | fp16 | qdq."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT16 if kind == "fp16" else TensorProto.FLOAT
    wdtype = np.float16 if kind == "fp16" else np.float32
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), dtype=wdtype), "w")
    inits = [w]
    nodes = []
    x = "images"
    if kind == "qdq":
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    nodes.append(helper.make_node("Conv", [x, "w"], ["logits"]))
    shape = [d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else "dyn") for d in dims]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", elem, shape)],
                              [helper.make_tensor_value_info("logits", elem, [shape[0], 2, shape[2], shape[3]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = DataInfo(classes=["road", "car"], palette=default_palette(2), input_size=(64, 128))
    for k, v in ((ONNX_DATA_KEY, info.to_json()), (ONNX_SOURCE_KEY, json.dumps({"sha256": "abc"}))):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
    return path
