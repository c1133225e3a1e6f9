"""The deployable graph and its ONNX file: wrap, trace, simplify, stamp metadata, check.

The wrapper's output is one of four kinds (`output`, runtime.metadata.OUTPUT_KINDS):

- full: `model.segment(x)`, logits bilinearly upsampled to the input size inside the graph;
- native: the model's logits at its own output stride (`native_logits`: the final Resize left out);
- labels / native-labels: the class-axis arg-max of those, cast (ONNX ArgMax gives int64) to uint8
  when K <= 255, else int32.

Input `images` (float32 N x 3 x H x W, normalised by runtime.preprocess; or with `uint8_input`, uint8
N x H x W x 3 RGB/BGR frames normalised in the graph), output `logits` (N x K x h x w float32) or `labels`
(N x h x w); the data block records the kind and its stride. The model itself is never changed for export.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from runtime.errors import UserError
from runtime.io import atomic_write_bytes
from runtime.metadata import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LABEL_OUTPUTS,
    ONNX_DATA_KEY,
    ONNX_SOURCE_KEY,
    OUTPUT_KINDS,
    DataInfo,
)

INPUT_NAME = "images"
MIN_OPSET = 17


def native_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits at its own output stride: `model.segment` without its final upsampling.

    A model may define `segment_native(x)`; the project's Segmentor gives `head(encoder(x))[0]`, which is
    what its `segment` upsamples."""
    own = getattr(model, "segment_native", None)
    if callable(own):
        return own(x)  # type: ignore[no-any-return]
    if isinstance(getattr(model, "encoder", None), nn.Module) and isinstance(getattr(model, "head", None), nn.Module):
        logits, _ = model.head(model.encoder(x))  # type: ignore[operator]
        return logits  # type: ignore[no-any-return]
    raise UserError(f"{type(model).__name__} has no logits at its own stride (no segment_native, encoder or head); "
                    "export it with --output full or labels")


def output_kind(output: str | None, argmax: bool = False) -> str:
    """The output kind from `--output` and the deprecated `--argmax` (= labels); one sentence when unknown
    or contradictory."""
    if output is None:
        return "labels" if argmax else "full"
    if output not in OUTPUT_KINDS:
        raise UserError(f"--output {output}: choose one of {', '.join(OUTPUT_KINDS)}")
    if argmax and output not in LABEL_OUTPUTS:
        raise UserError(f"--argmax asks for labels but --output {output} for logits; drop --argmax "
                        "(it is --output labels)")
    return output


class DeployGraph(nn.Module):
    """`images -> model.segment(images)`, or the native logits, and argmax + cast for the label kinds
    (`output`; `argmax=True` is the older spelling of output="labels").

    With `uint8_input` ("rgb" or "bgr") the graph takes uint8 N x H x W x 3 frames and does the
    pre-processing of runtime.preprocess itself: `x = (frame[..., RGB] / 255 - mean) / std`, NHWC -> NCHW
    (free on a GPU or in TensorRT, and 4x less data to move than float32)."""

    def __init__(self, model: nn.Module, num_classes: int, argmax: bool = False, uint8_input: str | None = None,
                 mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD, output: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.output = output_kind(output, argmax)
        self.argmax = self.output in LABEL_OUTPUTS
        self.native = self.output.startswith("native")
        self.uint8_input = uint8_input
        self.label_dtype = torch.uint8 if num_classes <= 255 else torch.int32
        self.register_buffer("offset", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("scale", 1.0 / (torch.tensor(std).view(1, 3, 1, 1) * 255.0), persistent=False)

    @property
    def output_name(self) -> str:
        return "labels" if self.argmax else "logits"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.uint8_input is not None:
            x = images.permute(0, 3, 1, 2).to(torch.float32)
            if self.uint8_input == "bgr":
                x = x[:, [2, 1, 0]]
            images = (x - self.offset) * self.scale
        logits = native_logits(self.model, images) if self.native else self.model.segment(images)  # type: ignore[operator]
        if not self.argmax:
            return logits
        return logits.argmax(dim=1).to(self.label_dtype)


def export_graph(model: nn.Module, info: DataInfo, out: str | Path, *, size: tuple[int, int],
                 dynamic: bool = False, argmax: bool = False, opset: int = MIN_OPSET,
                 source: dict[str, Any] | None = None, uint8_input: str | None = None,
                 output: str | None = None) -> Path:
    """Export `model` (eval mode, CPU, with a `segment` method) to `out` and return the path.

    `output`: full (default), native, labels or native-labels (`argmax=True` = labels). `info.input_size` is
    replaced by `size` in the stored data block, which also records the output kind and its stride (measured
    on the export-size dummy); `source` is stored as JSON under `lfd_edge.source`. The file is simplified with
    onnxslim and passes `onnx.checker` (full check)."""
    if opset < MIN_OPSET:
        raise UserError(f"--opset {opset} is too old; use {MIN_OPSET} or newer")
    h, w = size
    if h <= 0 or w <= 0:
        raise UserError(f"--size {h}x{w} must be positive, e.g. 512x1024")
    if uint8_input not in (None, "rgb", "bgr"):
        raise UserError(f"--uint8-input {uint8_input}: choose rgb or bgr")
    kind = output_kind(output, argmax)
    graph = DeployGraph(model.eval(), info.num_classes, uint8_input=uint8_input, mean=info.mean, std=info.std,
                        output=kind).eval()
    dummy = torch.zeros(1, h, w, 3, dtype=torch.uint8) if uint8_input else torch.zeros(1, 3, h, w)
    stride = output_stride(model, (h, w)) if graph.native else 1
    axes = None
    if dynamic:
        oh, ow = ("out_height", "out_width") if graph.native else ("height", "width")
        out_axes = {0: "batch", 1: oh, 2: ow} if graph.argmax else {0: "batch", 2: oh, 3: ow}
        in_axes = {0: "batch", 1: "height", 2: "width"} if uint8_input else {0: "batch", 2: "height", 3: "width"}
        axes = {INPUT_NAME: in_axes, graph.output_name: out_axes}
    buf = io.BytesIO()  # torch.onnx.export writes to file objects too (its annotation says paths only)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic are expected here
        torch.onnx.export(graph, (dummy,), buf, input_names=[INPUT_NAME],  # type: ignore[arg-type]
                          output_names=[graph.output_name], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    proto = simplify(onnx.load_from_string(buf.getvalue()))
    if not graph.argmax:  # shape inference may leave the class axis symbolic after a dynamic Resize
        proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = info.num_classes
    data = DataInfo(**{**info.__dict__, "input_size": (h, w),
                       "input_format": f"uint8-{uint8_input}" if uint8_input else "float",
                       "output": kind, "output_stride": stride})
    set_metadata(proto, {ONNX_DATA_KEY: data.to_json(), ONNX_SOURCE_KEY: json.dumps(source or {})})
    proto.producer_name = "lfd-edge"
    onnx.checker.check_model(proto, full_check=True)
    return atomic_write_bytes(out, proto.SerializeToString())


def output_stride(model: nn.Module, size: tuple[int, int]) -> int:
    """The stride of the model's native logits at input `size`: H / h, rounded (a size the model's stride does
    not divide gives ceil(H / stride) rows, which the runtime upsamples to H as the full graph does)."""
    with torch.no_grad():
        nh, _ = native_logits(model.eval(), torch.zeros(1, 3, *size)).shape[-2:]
    return max(1, round(size[0] / int(nh)))


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim: constant folding, dead-node removal, shape inference."""
    import onnxslim

    return onnxslim.slim(proto)


def set_metadata(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    """Set (replace) `metadata_props` entries."""
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
