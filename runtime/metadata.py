"""The `data` block that travels with every artefact (checkpoint, ONNX metadata, engine sidecar):
everything the runtime needs to pre-process a frame and to name and colour the output."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.errors import UserError

# The label id that marks pixels no loss or metric counts (Cityscapes' and VOC's 255).
IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Key under which the DataInfo JSON is stored in ONNX metadata_props and engine sidecars.
ONNX_DATA_KEY = "lfd_edge.data"
ONNX_SOURCE_KEY = "lfd_edge.source"  # JSON: source checkpoint sha256 + export options


INPUT_FORMATS = ("float", "uint8-rgb", "uint8-bgr")


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
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"the model's data block is malformed ({e}); re-export the model with this version") from e
        if info.input_format not in INPUT_FORMATS:
            raise UserError(f"the model declares input_format '{info.input_format}', which this version does not "
                            f"know ({', '.join(INPUT_FORMATS)}); upgrade LFD-Edge or re-export the model")
        return info

    @classmethod
    def from_json(cls, s: str) -> DataInfo:
        try:
            return cls.from_dict(json.loads(s))
        except json.JSONDecodeError as e:
            raise UserError(f"the model's data block is not valid JSON ({e}); re-export the model") from e


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
