"""The `data` block that travels with every artefact (checkpoint, ONNX metadata, engine sidecar):
everything the runtime needs to pre-process a frame and to name and colour the output; the label and
normalisation constants it defaults to; the one reader of an ONNX model's metadata block (`onnx_metadata`,
`onnx_data_info`); and the TensorRT engine sidecar (`M.engine.json`) that carries it beside an engine,
with its schema, reading, writing and format-version check."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from runtime.errors import UserError

# The label id that marks pixels no loss or metric counts (Cityscapes' and VOC's 255).
IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Key under which the DataInfo JSON is stored in ONNX metadata_props and engine sidecars.
ONNX_DATA_KEY = "lfd_edge.data"
ONNX_SOURCE_KEY = "lfd_edge.source"  # JSON: source checkpoint sha256 + export options


INPUT_FORMATS = ("float", "uint8-rgb", "uint8-bgr")
# What the model file outputs (export.onnx --output): float logits bilinearly upsampled to the input size
# ("full"), the model's logits at its own output stride ("native"), uint8 labels at the input size ("labels",
# the arg-max of the full-size logits) or at the model's stride ("native-labels", the arg-max of the native
# logits). runtime.postprocess.labels_at brings each to a frame's or a label's size.
OUTPUT_KINDS = ("full", "native", "labels", "native-labels")
LABEL_OUTPUTS = ("labels", "native-labels")


@dataclass
class DataInfo:
    """Class names, palette (RGB), normalisation (on 0..1 RGB), network input size H x W, ignore index."""

    classes: list[str]
    palette: list[tuple[int, int, int]]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int] = (512, 1024)
    ignore_index: int = IGNORE_INDEX
    extra: dict[str, Any] = field(default_factory=dict)
    # what the model file takes: "float" = float32 N x 3 x H x W, normalised by runtime.preprocess;
    # "uint8-rgb" / "uint8-bgr" = uint8 N x H x W x 3 frames (export.onnx --uint8-input): the graph
    # does /255, mean/std and the layout itself
    input_format: str = "float"
    # what the model file outputs, one of OUTPUT_KINDS, and the stride of that output relative to the input
    # (1 for full and labels); None where not recorded (checkpoints, models exported before the key): the
    # backend then reads full or labels from its output tensor (`output_of`)
    output: str | None = None
    output_stride: int = 1

    @property
    def uint8_input(self) -> bool:
        return self.input_format.startswith("uint8")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["palette"] = [list(map(int, c)) for c in self.palette]
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["input_size"] = list(self.input_size)
        if self.output is None:  # not an exported graph: the block reads as before the key existed
            del d["output"], d["output_stride"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataInfo:
        try:
            info = cls(
                classes=list(d["classes"]),
                palette=[tuple(int(v) for v in c) for c in d["palette"]],  # type: ignore[misc]
                mean=tuple(float(v) for v in d.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
                std=tuple(float(v) for v in d.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
                input_size=tuple(int(v) for v in d.get("input_size", (512, 1024))),  # type: ignore[arg-type]
                ignore_index=int(d.get("ignore_index", IGNORE_INDEX)),
                extra=dict(d.get("extra", {})),
                input_format=str(d.get("input_format", "float")),
                output=None if d.get("output") is None else str(d["output"]),
                output_stride=int(d.get("output_stride", 1)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"the model's data block is malformed ({e}); re-export the model with this version") from e
        if info.input_format not in INPUT_FORMATS:
            raise UserError(f"the model declares input_format '{info.input_format}', which this version does not "
                            f"know ({', '.join(INPUT_FORMATS)}); upgrade LFD-Edge or re-export the model")
        if info.output is not None and info.output not in OUTPUT_KINDS:
            raise UserError(f"the model declares output '{info.output}', which this version does not know "
                            f"({', '.join(OUTPUT_KINDS)}); upgrade LFD-Edge or re-export the model")
        if info.output_stride < 1 or (info.output in ("full", "labels") and info.output_stride != 1):
            raise UserError(f"the model declares output '{info.output}' at stride {info.output_stride}, which is "
                            "not possible; re-export the model with python -m export.onnx")
        return info

    @classmethod
    def from_json(cls, s: str) -> DataInfo:
        try:
            return cls.from_dict(json.loads(s))
        except json.JSONDecodeError as e:
            raise UserError(f"the model's data block is not valid JSON ({e}); re-export the model") from e


def output_of(info: DataInfo | None, labels: bool) -> tuple[str, int]:
    """(output kind, output stride) of a model file whose output tensor holds labels (integer) or not (float):
    what its data block records, else, for files exported before the key, "labels" or "full" at stride 1.
    A record that contradicts the tensor is a UserError."""
    if info is None or info.output is None:
        return ("labels" if labels else "full"), 1
    if (info.output in LABEL_OUTPUTS) != labels:
        raise UserError(f"the model's metadata says output '{info.output}' but its output tensor holds "
                        f"{'labels' if labels else 'logits'}; re-export it with python -m export.onnx")
    return info.output, int(info.output_stride)


def onnx_metadata(model: Any) -> dict[str, str]:
    """The metadata block of an ONNX model, key -> value, from whichever handle the caller has: an
    onnx.ModelProto (its `metadata_props`), an ONNX Runtime InferenceSession (its modelmeta's
    `custom_metadata_map`) or a mapping already read from one of them."""
    if hasattr(model, "metadata_props"):
        return {p.key: p.value for p in model.metadata_props}
    if hasattr(model, "get_modelmeta"):
        return dict(model.get_modelmeta().custom_metadata_map)
    if isinstance(model, Mapping):
        return dict(model)
    raise TypeError(f"no ONNX metadata in a {type(model).__name__} (expected an onnx.ModelProto, an ONNX Runtime "
                    "session or a mapping)")


def onnx_data_info(model: Any, path: str | Path, default: DataInfo | None = None) -> DataInfo:
    """The `lfd_edge.data` block of an ONNX model (any handle `onnx_metadata` takes), else `default`;
    a UserError naming `path` when it has none and no default is given."""
    meta = onnx_metadata(model)
    if ONNX_DATA_KEY in meta:
        return DataInfo.from_json(meta[ONNX_DATA_KEY])
    if default is not None:
        return default
    raise UserError(f"{path} has no '{ONNX_DATA_KEY}' metadata (class names, palette, mean/std); export it with "
                    "python -m export.onnx --checkpoint <student.pt>")


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC bit-interleaved colour map: distinct, deterministic colours for any n."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


# --- the TensorRT engine sidecar ---------------------------------------------------------------------
# `python -m export.trt` writes M.engine.json beside each engine (TensorRT version, GPU, precision,
# optimisation profile, the ONNX model's lfd_edge.* metadata); runtime.backends.tensorrt_backend reads it before
# it deserializes anything. Bump SIDECAR_FORMAT when a key changes meaning; readers refuse newer formats.

SIDECAR_FORMAT = 1
SIDECAR_REQUIRED = ("tensorrt_version", "device", "precision", "inputs", "metadata", "format_version")
_REBUILD = "rebuild the engine with python -m export.trt --onnx MODEL.onnx, which writes both files"


def sidecar_path(engine: str | Path) -> Path:
    """`M.engine` -> `M.engine.json`."""
    p = Path(engine)
    return p.with_name(p.name + ".json")


def write_sidecar(engine: str | Path, sidecar: dict[str, Any]) -> Path:
    """Write `sidecar` (as made by export.trt, with every SIDECAR_REQUIRED key) beside `engine`, atomically."""
    from runtime.io import atomic_write_json

    missing = [k for k in SIDECAR_REQUIRED if k not in sidecar]
    if missing:
        raise ValueError(f"sidecar lacks {', '.join(missing)}")
    path = sidecar_path(engine)
    atomic_write_json(path, sidecar)
    return path


def read_sidecar(engine: str | Path) -> dict[str, Any]:
    """The sidecar of `engine`, checked: readable JSON, every SIDECAR_REQUIRED key, a format this version reads."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise UserError(f"{Path(engine).name} has no sidecar {path.name} (TensorRT version, GPU, precision, class "
                        f"names); {_REBUILD}")
    try:
        side = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({e}); {_REBUILD}") from e
    missing = [k for k in SIDECAR_REQUIRED if not isinstance(side, dict) or k not in side]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; {_REBUILD}")
    version = side["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version > SIDECAR_FORMAT:
        raise UserError(f"{path} has format version {version}, newer than this LFD-Edge reads ({SIDECAR_FORMAT}); "
                        f"upgrade LFD-Edge, or {_REBUILD}")
    return cast(dict[str, Any], side)


def info_from_sidecar(sidecar: dict[str, Any]) -> DataInfo:
    """The DataInfo that the sidecar carries from the ONNX model's metadata."""
    data = sidecar.get("metadata", {}).get(ONNX_DATA_KEY)
    if data is None:
        raise UserError(f"the engine sidecar has no {ONNX_DATA_KEY} block (class names, normalisation); rebuild it "
                        "from an ONNX model exported by python -m export.onnx")
    return DataInfo.from_json(data) if isinstance(data, str) else DataInfo.from_dict(data)


def profile_bounds(sidecar: dict[str, Any], name: str) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(min, max) shapes of input `name` from the sidecar's optimisation profile, if it has one."""
    spec = sidecar.get("inputs", {}).get(name)
    if not isinstance(spec, dict) or "min" not in spec or "max" not in spec:
        return None
    return tuple(int(d) for d in spec["min"]), tuple(int(d) for d in spec["max"])
