"""Accuracy of a (quantized) model on a held-out split, per-tensor quantization sensitivity, and the
accuracy guard that keeps the most sensitive nodes in float until the mIoU drop is within budget.

Sensitivity (cheap: one pass of the FLOAT model over a few images, no re-quantization per layer): for
every activation the Q/DQ model quantizes, take its float value x from the float model, fake-quantize it
with the Q/DQ model's own scale and zero point, and measure the per-channel
SQNR_c = 10 log10(sum x_c^2 / sum (x_c - DQ(Q(x_c)))^2) in dB, accumulated over the images and averaged
over channels (capped at 100 dB): the noise that quantizing that tensor alone adds, with float inputs,
so that errors made upstream do not make downstream tensors look sensitive. Per channel, because activations share one scale per tensor: an outlier channel widens the range
and wipes out the others, which a whole-tensor SQNR (dominated by the outlier's power) would hide. For every quantized weight, the SQNR of the weight against
its dequantized int8 copy. Lowest SQNR = most sensitive. Keeping an activation tensor in float means
excluding the node that produces it and every node that consumes it (ONNX Runtime quantizes a tensor
when any quantized node touches it); keeping a weight in float excludes its node. This ignores how
the noise propagates downstream, which is why the guard re-measures mIoU after each step.

Guard: while drop = 100 * (mIoU_fp32 - mIoU_int8) > max_drop, exclude the nodes of the 1, 2, 4, 8, ...
least-SQNR tensors and re-quantize (the calibration ranges come from the cache, so each round costs one
quantization pass and one evaluation).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calib.onnx_io import cpu_backend, cpu_session
from runtime.metadata import DataInfo
from runtime.metrics import ConfusionMatrix
from runtime.postprocess import labels_from_output


def predict(model: str | Path, images: np.ndarray, threads: int | None = None) -> np.ndarray:
    """N x H x W labels of `model` (.onnx, or an OpenVINO IR .xml) on float32 N x 3 x H x W images, one
    image per run, on this CPU."""
    with cpu_backend(model, threads) as backend:
        return np.concatenate([labels_from_output(backend.infer(x[None]), x.shape[1:]) for x in images])


def miou(pred: np.ndarray, labels: np.ndarray, info: DataInfo) -> float:
    cm = ConfusionMatrix(info.num_classes, info.ignore_index)
    cm.update(pred, labels)
    return float(cm.compute()["mIoU"])


@dataclass
class Sensitivity:
    tensor: str  # activation tensor or weight initializer name
    sqnr_db: float
    nodes: list[str] = field(default_factory=list)  # nodes to exclude to keep it in float


def rank_tensors(float_model: onnx.ModelProto, qdq_path: str | Path, images: np.ndarray) -> list[Sensitivity]:
    """Quantized tensors of the Q/DQ model at `qdq_path` (made from `float_model`), most sensitive first."""
    qdq = onnx.load(str(qdq_path))
    producer = {o: n.name for n in float_model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = defaultdict(list)
    for n in float_model.graph.node:
        for i in n.input:
            consumers[i].append(n.name)
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    quant: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}  # float tensor -> (scale, zero point, axis)
    for n in qdq.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in inits:
            zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] in inits else np.zeros((), np.uint8)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            quant[n.input[0].removesuffix("_QuantizeLinear_Input")] = (inits[n.input[1]], zp, axis)
    result = _activation_sqnr(float_model, quant, images)
    out = [Sensitivity(t, db, sorted({producer[t]} if t in producer else set()) + sorted(set(consumers[t])))
           for t, db in result.items()]
    out += _weight_sqnr(qdq, float_model)
    return sorted(out, key=lambda s: s.sqnr_db)


def _activation_sqnr(float_model: onnx.ModelProto, quant: dict[str, tuple[np.ndarray, np.ndarray, int]],
                     images: np.ndarray) -> dict[str, float]:
    """Run the float model, fake-quantize each tensor with its Q/DQ scale and zero point, return dB."""
    aug = onnx.ModelProto()
    aug.CopyFrom(float_model)
    have = {o.name for o in aug.graph.output} | {i.name for i in aug.graph.input}
    for name in quant:
        if name not in have:
            aug.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    import tempfile

    signal: dict[str, np.ndarray] = {}
    noise: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "augmented.onnx"
        onnx.save(aug, str(path))
        sess = cpu_session(path).session  # every output, not only the backend's first
        names = [o.name for o in sess.get_outputs()]
        iname = sess.get_inputs()[0].name
        for x in images:
            got = dict(zip(names, sess.run(None, {iname: x[None]})))
            got[iname] = x[None]
            for t, (scale, zp, axis) in quant.items():
                if t not in got:
                    continue
                a = got[t].astype(np.float64)
                err = a - _fake_quantize(a, scale, zp, axis)
                axes = tuple(i for i in range(a.ndim) if i != 1) if a.ndim >= 2 else None
                signal[t] = signal.get(t, 0) + (a * a).sum(axis=axes)
                noise[t] = noise.get(t, 0) + (err * err).sum(axis=axes)
    return {t: _channel_db(signal[t], noise[t]) for t in signal}


def _fake_quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """DequantizeLinear(QuantizeLinear(x)): round half to even, saturate to the zero point's type."""
    shape = [1] * x.ndim
    if scale.size > 1:
        shape[axis] = -1
    s = scale.astype(np.float64).reshape(shape)
    z = zp.astype(np.float64).reshape(shape) if zp.size > 1 else float(zp)
    info = np.iinfo(zp.dtype)
    q = np.clip(np.round(x / s) + z, info.min, info.max)
    return (q - z) * s


def _weight_sqnr(qdq: onnx.ModelProto, float_model: onnx.ModelProto) -> list[Sensitivity]:
    floats = {t.name: t for t in float_model.graph.initializer}
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    users: dict[str, list[str]] = defaultdict(list)
    for n in float_model.graph.node:
        for i in n.input:
            users[i].append(n.name)
    out = []
    for n in qdq.graph.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in inits:
            continue
        w_name = n.input[0].removesuffix("_quantized")
        if w_name not in floats or inits[n.input[0]].dtype == np.int32:
            continue
        w = numpy_helper.to_array(floats[w_name]).astype(np.float64)
        deq = _dequantize(inits[n.input[0]], inits[n.input[1]],
                          inits.get(n.input[2]) if len(n.input) > 2 else None,
                          next((a.i for a in n.attribute if a.name == "axis"), 1))
        out.append(Sensitivity(w_name, _db(float((w * w).sum()), float(((w - deq) ** 2).sum())),
                               sorted(set(users[w_name]))))
    return out


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis] = -1
    z = 0 if zp is None else zp.astype(np.float64).reshape(shape)
    return (q.astype(np.float64) - z) * scale.astype(np.float64).reshape(shape)


def _channel_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """Mean over channels (with signal) of the per-channel SQNR in dB; inf when nothing was lost."""
    signal, noise = np.atleast_1d(signal), np.atleast_1d(noise)
    live = signal > 0
    if not live.any():
        return float("inf")
    db = [_db(float(s), float(n)) for s, n in zip(signal[live], noise[live])]
    return float(np.mean(np.minimum(db, 100.0)))  # cap lossless channels so one cannot dominate the mean


def _db(signal: float, noise: float) -> float:
    if noise <= 0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-30) / noise))


def guard(quantize: Callable[[Sequence[str], Path], Path], float_model: onnx.ModelProto, tmp: Path,
          val_images: np.ndarray, val_labels: np.ndarray, probe_images: np.ndarray, info: DataInfo,
          fp32_miou: float, max_drop: float | None, max_rounds: int = 6, threads: int | None = None
          ) -> dict[str, Any]:
    """Quantize (`quantize(exclude, out) -> out`), measure, and while the drop exceeds `max_drop`
    exclude the nodes of the 1, 2, 4, ... most sensitive tensors. Returns the chosen round's record:
    path, excluded nodes, mIoU, drop (points), rounds (history), ranking."""
    history: list[dict[str, Any]] = []
    excluded: list[str] = []
    ranking: list[Sensitivity] = []
    k = 0
    for r in range(max_rounds + 1):
        t0 = time.perf_counter()
        path = quantize(excluded, tmp / f"round{r}.onnx")
        pred = predict(path, val_images, threads)
        m = miou(pred, val_labels, info)
        drop = 100.0 * (fp32_miou - m)
        history.append({"round": r, "path": path, "excluded": list(excluded), "miou": m, "drop": drop,
                        "seconds": round(time.perf_counter() - t0, 3)})
        if max_drop is None or drop <= max_drop:
            break
        if not ranking:
            ranking = [s for s in rank_tensors(float_model, path, probe_images) if s.nodes]
        if k >= len(ranking):  # everything quantized is already excluded
            break
        k = max(1, 2 * k)
        excluded = _nodes(ranking[:k])
    budget = np.inf if max_drop is None else max_drop
    # the fewest exclusions within budget, else the smallest drop
    best = min(history, key=lambda h: (0, len(h["excluded"]), h["drop"]) if h["drop"] <= budget
               else (1, h["drop"], len(h["excluded"])))
    return {**best, "rounds": [{k2: v for k2, v in h.items() if k2 != "path"} for h in history],
            "ranking": [{"tensor": s.tensor, "sqnr_db": s.sqnr_db, "nodes": s.nodes} for s in ranking[:20]]}


def _nodes(items: Sequence[Sensitivity]) -> list[str]:
    seen: dict[str, None] = {}
    for s in items:
        for n in s.nodes:
            seen.setdefault(n, None)
    return list(seen)
