"""FP16 ONNX with float32 inputs and outputs (`*.fp16.onnx`), runnable by ONNX Runtime on CPUs.

onnxconverter-common converts every float tensor and initializer to float16 except in the ops of its
default block list (Resize among them, which stays float32 behind Casts). Its own `keep_io_types=True`
fails on graphs that end in a blocked op (its cast clean-up raises), so the float32 I/O is restored here
instead: a Cast float32 -> float16 after each float input and float16 -> float32 before each float output.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from runtime.lazy import lazy_import


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of `model` whose graph inputs and outputs keep their float32 type."""
    float16 = lazy_import("onnxconverter_common.float16", "FP16 conversion")
    io_float = {v.name for v in list(model.graph.input) + list(model.graph.output)
                if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    half = float16.convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=False)
    g = half.graph
    casts_in, casts_out = [], []
    for v in g.input:
        if v.name in io_float:
            inner = f"{v.name}__fp16"
            for node in g.node:
                node.input[:] = [inner if i == v.name else i for i in node.input]
            casts_in.append(helper.make_node("Cast", [v.name], [inner], name=f"{v.name}_to_fp16",
                                             to=TensorProto.FLOAT16))
            v.type.tensor_type.elem_type = TensorProto.FLOAT
    for v in g.output:
        if v.name in io_float and v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            inner = f"{v.name}__fp16"
            for node in g.node:
                node.output[:] = [inner if o == v.name else o for o in node.output]
                node.input[:] = [inner if i == v.name else i for i in node.input]
            casts_out.append(helper.make_node("Cast", [inner], [v.name], name=f"{v.name}_to_fp32",
                                              to=TensorProto.FLOAT))
            v.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes = casts_in + list(g.node) + casts_out
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # stale fp16/fp32 annotations; ORT infers them again
    onnx.checker.check_model(half)
    return half
