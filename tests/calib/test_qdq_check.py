"""The TensorRT Q/DQ checker: a compliant model passes, and each broken rule is reported by node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calib.qdq_check import check_qdq, main


def _model(act_zp=np.int8(0), w_axis=0, bias_int32=False, q_zero_point=True) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(W = DQ(int8 W), bias) -> y, with knobs that break one rule each."""
    w = np.ones((4, 3, 1, 1), np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(act_zp), "x_zp"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.full(w.shape[w_axis], 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(w.shape[w_axis], np.int8), "w_zp"),
    ]
    q_inputs = ["x", "x_scale", "x_zp"] if q_zero_point else ["x", "x_scale"]
    dq_inputs = ["xq", "x_scale", "x_zp"] if q_zero_point else ["xq", "x_scale"]
    nodes = [helper.make_node("QuantizeLinear", q_inputs, ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", dq_inputs, ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=w_axis)]
    if bias_int32:
        inits += [numpy_helper.from_array(np.zeros(4, np.int32), "b_q"),
                  numpy_helper.from_array(np.full(4, 0.001, np.float32), "b_scale")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale"], ["b"], name="dq_bias"))
    else:
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "b"))
    nodes.append(helper.make_node("Conv", ["xd", "w", "b"], ["y"], name="conv"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def test_compliant_model_passes():
    assert check_qdq(_model()) == []


@pytest.mark.parametrize("kw, node, words", [
    ({"act_zp": np.int8(3)}, "q_x", "not 0"),
    ({"act_zp": np.uint8(0)}, "q_x", "UINT8"),
    ({"q_zero_point": False}, "q_x", "uint8"),
    ({"bias_int32": True}, "dq_bias", "int32"),
    ({"w_axis": 1}, "dq_w", "axis 1"),
])
def test_each_broken_rule_is_reported_by_node(kw, node, words):
    problems = check_qdq(_model(**kw))
    assert problems and all(p for p in problems)
    assert any(p.startswith(f"{node}:") and words in p for p in problems), problems


def test_cli_exit_codes(tmp_path, capsys):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(_model(), str(good))
    onnx.save(_model(act_zp=np.int8(5)), str(bad))
    assert main([str(good)]) == 0
    assert main([str(bad)]) == 1
    assert "q_x: zero point x_zp is not 0" in capsys.readouterr().out
