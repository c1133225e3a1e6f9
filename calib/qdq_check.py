"""`python -m calib.qdq_check model.onnx`: check a Q/DQ model against TensorRT's rules.

Rules (TensorRT's "explicit quantization" guide), each violation naming the node:
1. symmetric: every QuantizeLinear/DequantizeLinear zero point is 0;
2. int8: zero points are int8, and a QuantizeLinear has one (without it the output is uint8);
   DequantizeLinear inputs that are initializers are int8;
3. no quantized bias: no DequantizeLinear of an int32 tensor;
4. weights: a DequantizeLinear of an initializer feeding a Conv weight is per-tensor or per-channel on
   axis 0 (output channels); ConvTranspose weights (C_in x C_out/g x ...) on axis 1.
Exit code 1 with the list when any rule is broken, 0 otherwise.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from runtime.errors import cli_main

WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}


def check_qdq(model: onnx.ModelProto) -> list[str]:
    """Return one line per violation (empty when the model follows TensorRT's Q/DQ rules)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in g.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    tensors = {**consts, **inits}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    out: list[str] = []
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name = n.name or f"{n.op_type}({n.input[0]})"
        zp_name = n.input[2] if len(n.input) > 2 and n.input[2] else None
        zp = tensors.get(zp_name) if zp_name else None
        if zp_name is None and n.op_type == "QuantizeLinear":
            out.append(f"{name}: QuantizeLinear without a zero point outputs uint8; TensorRT needs int8 (zero point 0)")
        if zp is not None:
            if zp.data_type != TensorProto.INT8:
                out.append(f"{name}: zero point {zp_name} is {TensorProto.DataType.Name(zp.data_type)}, "
                           "TensorRT needs int8")
            if np.any(numpy_helper.to_array(zp) != 0):
                out.append(f"{name}: zero point {zp_name} is not 0 (asymmetric); TensorRT needs symmetric Q/DQ")
        if n.op_type != "DequantizeLinear" or n.input[0] not in tensors:
            continue
        x = tensors[n.input[0]]
        if x.data_type == TensorProto.INT32:
            out.append(f"{name}: dequantizes the int32 tensor {n.input[0]} (a quantized bias); "
                       "TensorRT rejects int32 bias Q/DQ, keep biases in float")
        elif x.data_type != TensorProto.INT8:
            out.append(f"{name}: dequantizes {n.input[0]} of type {TensorProto.DataType.Name(x.data_type)}; "
                       "TensorRT needs int8")
        scale = tensors.get(n.input[1])
        per_channel = scale is not None and numpy_helper.to_array(scale).size > 1
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        for c in consumers[n.output[0]]:
            want = WEIGHT_AXIS.get(c.op_type)
            if want is not None and len(c.input) > 1 and c.input[1] == n.output[0] and per_channel:
                rank = len(x.dims)
                if axis % max(rank, 1) != want:
                    out.append(f"{name}: per-channel weight of {c.op_type} {c.name or c.output[0]} on axis {axis}; "
                               f"TensorRT needs axis {want} (output channels)")
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    from calib.onnx_io import load_onnx

    p = argparse.ArgumentParser(prog="python -m calib.qdq_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a Q/DQ ONNX model (e.g. S.int8.trt.onnx)")
    args = p.parse_args(argv)
    model = load_onnx(args.model, check=False)
    problems = check_qdq(model)
    for line in problems:
        print(line)
    n_q = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    print(f"{args.model}: {len(problems)} violation(s) of TensorRT's Q/DQ rules in {n_q} Q/DQ nodes")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
