"""What a TensorRT build will do, decided without TensorRT: the precision choice, shape profiles, and
what the ONNX model already says about its own precision. (Not "plan": TensorRT calls a built engine a
plan, and `.plan` files are accepted as engines here.)

TensorRT's precision model changed twice:
- 8.5 (JetPack 5) and 10.x: weakly typed networks where BuilderFlag.FP16 / INT8 let the builder
  choose lower precision, INT8 from an implicit calibrator (deprecated in 10.1) or from Q/DQ nodes;
  10.x (and 9.1+) also offers strongly typed networks that keep the ONNX model's own types.
- 11.x: strongly typed only. FP16 and INT8 must already be in the ONNX model (fp16 weights/casts,
  QuantizeLinear/DequantizeLinear nodes).
`choose_build` maps (capabilities, model kind, requested precision) to one BuildChoice or a UserError; it never
picks a lower or higher precision than asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.cli import Shape, parse_shape
from runtime.errors import UserError
from runtime.lazy import lazy_import
from runtime.trt_version import TrtVersion

PRECISIONS = ("fp32", "fp16", "int8")
MODEL_KINDS = ("fp32", "fp16", "qdq")
KIND_PRECISION = {"fp32": "fp32", "fp16": "fp16", "qdq": "int8"}  # what the model computes in by itself


@dataclass(frozen=True)
class Capabilities:
    """The TensorRT features a build can use (from `capabilities_for_version`, or detected with hasattr)."""

    version: TrtVersion
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED (9.1+)
    precision_flags: bool  # BuilderFlag.FP16 / INT8 (removed in 11)
    legacy_calibrator: bool  # IInt8EntropyCalibrator2 + IBuilderConfig.int8_calibrator (removed in 11)
    calibrator_deprecated: bool  # 10.1+
    explicit_batch_flag: bool  # create_network needs EXPLICIT_BATCH (before 10)
    named_tensors: bool  # num_io_tensors / set_tensor_address / execute_async_v3 (8.5+)
    version_compatible: bool  # BuilderFlag.VERSION_COMPATIBLE (8.6+)


def capabilities_for_version(v: TrtVersion) -> Capabilities:
    """The documented feature set of TensorRT version `v`."""
    t = (v.major, v.minor)
    return Capabilities(
        version=v,
        strongly_typed=t >= (9, 1),
        precision_flags=v.major < 11,
        legacy_calibrator=v.major < 11,
        calibrator_deprecated=t >= (10, 1),
        explicit_batch_flag=v.major < 10,
        named_tensors=t >= (8, 5),
        version_compatible=t >= (8, 6),
    )


@dataclass(frozen=True)
class BuildChoice:
    """precision: what the engine computes in; strongly_typed: create the network STRONGLY_TYPED;
    flags: BuilderFlag names to set; calibrator: attach the legacy INT8 entropy calibrator."""

    precision: str
    strongly_typed: bool
    flags: tuple[str, ...] = ()
    calibrator: bool = False
    notes: tuple[str, ...] = ()


def choose_build(caps: Capabilities, kind: str, requested: str | None, model_name: str, has_calibration: bool) -> BuildChoice:
    """Decide how to build `model_name` (an ONNX model of `kind` fp32|fp16|qdq) at `requested` precision
    (None: the model's own). Raises UserError where this TensorRT cannot honour the request."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    if requested is not None and requested not in PRECISIONS:
        raise UserError(f"--precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    want = requested or KIND_PRECISION[kind]
    trt = f"TensorRT {caps.version.short}"

    if kind != "fp32":
        own = KIND_PRECISION[kind]
        if want != own:
            what = "a Q/DQ (INT8)" if kind == "qdq" else "an FP16"
            fix = ("quantize the FP32 model with python -m calib.quantize --target trt" if want == "int8"
                   else f"pass the FP32 ONNX model for --precision {want}")
            raise UserError(f"{model_name} is {what} model, so it builds as {own}, not {want}: use --precision {own} or {fix}")
        if caps.strongly_typed:
            return BuildChoice(own, strongly_typed=True, notes=(f"strongly typed: {own} comes from the model's own types",))
        # 8.5: no strongly typed networks; the flag lets the builder run the model's fp16 / Q/DQ layers.
        return BuildChoice(own, strongly_typed=False, flags=("FP16",) if kind == "fp16" else ("INT8",),
                         notes=(f"{trt} has no strongly typed networks; using BuilderFlag.{'FP16' if kind == 'fp16' else 'INT8'}",))

    if want == "fp32":
        # On 11 every network is strongly typed; before that the default weakly typed network is fp32.
        return BuildChoice("fp32", strongly_typed=not caps.precision_flags and caps.strongly_typed)
    if want == "fp16":
        if not caps.precision_flags:
            raise UserError(f"{trt} builds FP16 only from an FP16 ONNX model (it has no BuilderFlag.FP16): make one with "
                            f"python -m calib.quantize --onnx {model_name} --fp16 and build that")
        return BuildChoice("fp16", strongly_typed=False, flags=("FP16",))
    # want == "int8" from an FP32 model: implicit quantization with the legacy calibrator.
    if not (caps.precision_flags and caps.legacy_calibrator):
        raise UserError(f"{trt} builds INT8 only from a Q/DQ ONNX model (implicit INT8 calibration was removed): make one "
                        f"with python -m calib.quantize --onnx {model_name} --target trt and build that")
    if not has_calibration:
        raise UserError(f"INT8 from the FP32 model {model_name} needs calibration images (--calib-data dataset:root) or an "
                        "existing --calib-cache; or build a Q/DQ model with python -m calib.quantize --target trt")
    notes: tuple[str, ...] = ()
    if caps.calibrator_deprecated:
        notes = (f"the implicit INT8 calibrator is deprecated in {trt}; a Q/DQ model from "
                 "python -m calib.quantize --target trt is the supported path",)
    return BuildChoice("int8", strongly_typed=False, flags=("INT8",), calibrator=True, notes=notes)


# --- shapes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """An optimisation profile for one input: min <= opt <= max elementwise."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    @property
    def static(self) -> bool:
        return self.min == self.opt == self.max

    def to_dict(self) -> dict[str, Any]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def resolve_profile(name: str, onnx_dims: Shape, min_s: str | None, opt_s: str | None, max_s: str | None,
                    default_hw: tuple[int, int] | None = None) -> Profile:
    """The optimisation profile for input `name` with ONNX dims `onnx_dims` (-1 where dynamic).

    No --min/--opt/--max: a static ONNX input is used as it is; a dynamic one takes batch 1 and the
    data block's input size `default_hw`. Otherwise all three must be given, match the input's rank and
    fixed dims, and satisfy min <= opt <= max.
    """
    given = [s is not None for s in (min_s, opt_s, max_s)]
    if not any(given):
        if all(d > 0 for d in onnx_dims):
            return Profile(name, onnx_dims, onnx_dims, onnx_dims)
        if default_hw is None or len(onnx_dims) != 4:
            raise UserError(f"input {name!r} has dynamic dims {_fmt(onnx_dims)}: give --min, --opt and --max shapes")
        fill = (1, 3, *default_hw)
        dims = tuple(d if d > 0 else f for d, f in zip(onnx_dims, fill))
        return Profile(name, dims, dims, dims)
    if not all(given):
        raise UserError("give all three of --min, --opt and --max (or none for the model's own shape)")
    shapes = [parse_shape(s, f"--{w}") for s, w in zip((min_s, opt_s, max_s), ("min", "opt", "max"))]  # type: ignore[arg-type]
    for s, w in zip(shapes, ("min", "opt", "max")):
        if len(s) != len(onnx_dims):
            raise UserError(f"--{w} {_fmt(s)} has {len(s)} dims but input {name!r} has {len(onnx_dims)} ({_fmt(onnx_dims)})")
        for i, (got, fixed) in enumerate(zip(s, onnx_dims)):
            if fixed > 0 and got != fixed:
                raise UserError(f"--{w} {_fmt(s)} sets dim {i} to {got} but the ONNX input {name!r} fixes it at {fixed} "
                                f"({_fmt(onnx_dims)}); export with --dynamic to vary it")
    lo, mid, hi = shapes
    if any(not (a <= b <= c) for a, b, c in zip(lo, mid, hi)):
        raise UserError(f"shapes must satisfy min <= opt <= max in every dim, got {_fmt(lo)}, {_fmt(mid)}, {_fmt(hi)}")
    return Profile(name, lo, mid, hi)


def _fmt(dims: Shape) -> str:
    return "x".join("?" if d <= 0 else str(d) for d in dims)


# --- the ONNX model -------------------------------------------------------------------------------

@dataclass
class OnnxInfo:
    """kind: fp32 | fp16 | qdq; inputs: name -> dims (-1 where dynamic); metadata: metadata_props."""

    kind: str
    inputs: dict[str, Shape]
    outputs: dict[str, Shape]
    metadata: dict[str, str] = field(default_factory=dict)


def inspect_onnx(path: str | Path) -> OnnxInfo:
    """Read an ONNX model's graph (without external weights) and classify its precision: any
    QuantizeLinear node -> qdq; else any float16 initializer, Cast to float16 or float16 graph input/
    output -> fp16; else fp32."""
    onnx = lazy_import("onnx", "reading the ONNX model for a TensorRT build")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model {path} does not exist; export one with python -m export.onnx --checkpoint S.pt")
    from google.protobuf.message import DecodeError  # protobuf comes with onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as e:
        raise UserError(f"{path} is not a readable ONNX model ({e}); re-export it") from e
    g = model.graph
    f16 = onnx.TensorProto.FLOAT16
    nodes = list(_all_nodes(g))
    if any(n.op_type == "QuantizeLinear" for n in nodes):
        kind = "qdq"
    elif (any(t.data_type == f16 for t in g.initializer)
          or any(n.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in n.attribute) for n in nodes)
          or any(v.type.tensor_type.elem_type == f16 for v in list(g.input) + list(g.output))):
        kind = "fp16"
    else:
        kind = "fp32"
    init_names = {t.name for t in g.initializer}
    return OnnxInfo(
        kind=kind,
        inputs={v.name: _dims(v) for v in g.input if v.name not in init_names},
        outputs={v.name: _dims(v) for v in g.output},
        metadata={p.key: p.value for p in model.metadata_props},
    )


def _all_nodes(graph: Any) -> Any:
    """Nodes of `graph` and of its subgraphs (If/Loop bodies)."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.HasField("g"):
                yield from _all_nodes(a.g)
            for sub in a.graphs:
                yield from _all_nodes(sub)


def _dims(value_info: Any) -> Shape:
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                 for d in value_info.type.tensor_type.shape.dim)
