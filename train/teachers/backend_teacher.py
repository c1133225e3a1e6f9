"""An exported model as a teacher for logit distillation: an ONNX file (ONNX Runtime), an OpenVINO IR or a
TensorRT engine, run through runtime.backends.

    teacher = BackendTeacher("teacher.onnx", student_classes, cfg.data.mean, cfg.data.std, device="cuda")
    z_t = teacher(x).logits          # x: the student's normalised batch; z_t: N x K x h x w float32

Such a teacher gives logits only (`feature_info == []`): the methods that read a teacher feature (LFD's
decoder, FitNet, AT, FKD, CWD's feature term) are refused by `require_features` in one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import UserError
from train.models.output import FeatureInfo, SegOutput

BACKEND_SUFFIXES = (".onnx", ".xml", ".engine", ".plan")
LOGITS = "logits"

# runtime.backends' name -> the teacher's kind
KINDS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}
# methods that read the teacher's logits only when an option turns their feature term off
LOGIT_OPTIONS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "cwd": ("distill.cwd.features=false", {"cwd": {"features": False}}),
}


def is_backend_teacher(text: str) -> bool:
    """Whether `text` (what `teacher=` holds) names an exported model: .onnx, OpenVINO .xml, TensorRT .engine/.plan."""
    return Path(str(text)).suffix.lower() in BACKEND_SUFFIXES


class BackendTeacher(nn.Module):
    """An exported model (ONNX via ONNX Runtime, OpenVINO IR, TensorRT engine) run through runtime.backends as
    a teacher: logits only (`feature_info == []`; feature methods are refused, see `require_features`).

    `forward(x)`: `x` is the STUDENT's input (N x 3 x H x W float, normalised with the student's mean/std).
    It is taken back to 0..1 RGB (`x01 = x * std_s + mean_s`) and pre-processed as the model's own metadata
    says: `(x01 - mean_t) / std_t` for float graphs, `round(255 * x01)` as uint8 N x H x W x 3 frames (RGB or
    BGR) for graphs exported with --uint8-input. When the graph has a fixed input size other than x's, x is
    first resized to it (bilinear; antialiased when shrinking): the teacher then sees the crop at its own
    size, and its logits come back at the graph's output size, not at x's. The backend runs under no_grad on
    numpy: the whole batch at once when the graph's batch is dynamic, else in chunks of its fixed batch
    (one image at a time for the usual batch 1). Logits come back as float32 N x K x h x w on x's device,
    mapped to the student's classes (`ClassMap`, log-sum-exp over each student class's teacher classes)
    when the class lists differ. `stride` is the graph's output stride relative to its input, found by one
    dummy forward: 1 for this project's exports (`python -m export.onnx` upsamples the logits to the
    input size inside the graph). A graph that outputs labels (--argmax) is refused."""

    kind: str  # "onnx" | "openvino" | "tensorrt"
    source: str  # the model file
    teacher_classes: list[str]  # the model's own classes (its metadata)
    feature_info: list[FeatureInfo]  # always []: an exported model gives logits only
    stride: int  # of the graph's logits relative to its input (1 for this project's exports)
    num_classes: int  # classes of the logits forward returns (the student's when mapped)

    def __init__(self, path: str | Path, student_classes: Sequence[str], student_mean: Sequence[float],
                 student_std: Sequence[float], class_map_spec: Any = None, device: str | torch.device = "cpu",
                 *, threads: int | None = None) -> None:
        """`path`: .onnx, OpenVINO .xml (+ .bin) or TensorRT .engine/.plan (+ its .json sidecar);
        `class_map_spec`: the user's student class -> teacher classes map (distill.class_map), or None to map by
        name; `device`: where the backend runs: ONNX Runtime uses CUDA (where this build has it) for a
        cuda device, else the CPU; OpenVINO runs on the CPU; TensorRT on the CUDA device of that index;
        `threads`: the backend's CPU threads (None: its default)."""
        super().__init__()
        from runtime.backends import backend_name_for, load_backend

        p = Path(path)
        if not p.is_file():
            raise UserError(f"teacher model {p} does not exist; pass an exported teacher (.onnx, OpenVINO .xml, "
                            f"TensorRT .engine) or a teacher checkpoint (.pt) written by python -m train.teacher")
        name = backend_name_for(p)
        if name not in KINDS:
            raise UserError(f"{p} is not an exported model ({', '.join(BACKEND_SUFFIXES)}); a .pt teacher is "
                            f"loaded as a PyTorch checkpoint")
        self.kind: str = KINDS[name]
        self.source: str = str(p)
        dev = torch.device(device)
        opts: dict[str, Any] = {"threads": threads}
        if self.kind == "onnx":
            opts["providers"] = "cpu" if dev.type != "cuda" else None  # None: CUDA, then CPU, where available
        elif self.kind == "openvino":
            opts["device"] = "CPU"  # OpenVINO's GPU is an Intel GPU, not the CUDA device the student trains on
        else:
            opts["device_index"] = dev.index or 0
        self.backend = load_backend(p, name, **opts)
        try:
            if self.backend.output_kind != LOGITS:
                raise UserError(f"{p.name} outputs class labels ({self.backend.output}), but a teacher must output "
                                f"logits: re-export it with python -m export.onnx --output native (or full)")
            info = self.backend.info
            self.teacher_classes: list[str] = list(info.classes)
            self.feature_info: list[FeatureInfo] = []
            self.s_mean: torch.Tensor = torch.tensor([float(v) for v in student_mean]).view(1, 3, 1, 1)
            self.s_std: torch.Tensor = torch.tensor([float(v) for v in student_std]).view(1, 3, 1, 1)
            self.t_mean: torch.Tensor = torch.tensor([float(v) for v in info.mean]).view(1, 3, 1, 1)
            self.t_std: torch.Tensor = torch.tensor([float(v) for v in info.std]).view(1, 3, 1, 1)
            shape = self.backend.input_shape or (-1,)
            self.fixed_batch: int | None = int(shape[0]) if shape[0] > 0 else None
            self.fixed_size: tuple[int, int] | None = self.backend.static_size
            self.class_map = _class_map(list(student_classes), self.teacher_classes, class_map_spec, p)
            self.stride: int = self._find_stride()
        except BaseException:
            self.backend.close()
            raise

    # --- what the teacher is ---------------------------------------------------------------------
    @property
    def info(self) -> Any:
        """The model's DataInfo (classes, mean/std, input size, input format) from its metadata."""
        return self.backend.info

    @property
    def input_size(self) -> tuple[int, int]:
        """The H x W the graph fixes, else the size its metadata records (what the dummy forward used)."""
        return self.backend.input_size

    def preprocessing(self) -> dict[str, Any]:
        """How the teacher sees an image, for a cache manifest or a report."""
        info = self.backend.info
        return {"kind": self.kind, "source": self.source, "mean": list(info.mean), "std": list(info.std),
                "input_format": info.input_format, "input_size": list(self.fixed_size) if self.fixed_size else None,
                "resize": "bilinear (antialiased when shrinking) to the fixed input size" if self.fixed_size else None,
                "batch": self.fixed_batch, "stride": self.stride}

    def extra_repr(self) -> str:
        return f"kind={self.kind}, source={self.source}, classes={len(self.teacher_classes)}, stride={self.stride}"

    # --- running it ------------------------------------------------------------------------------
    def _find_stride(self) -> int:
        h, w = self.input_size
        if self.backend.uint8_input:
            dummy = np.zeros((self.fixed_batch or 1, h, w, 3), np.uint8)
        else:
            dummy = np.zeros((self.fixed_batch or 1, 3, h, w), np.float32)
        out = self.backend.infer(dummy)
        if out.ndim != 4:
            raise UserError(f"{Path(self.source).name} outputs a rank-{out.ndim} tensor {tuple(out.shape)}; a teacher "
                            f"must output N x K x h x w logits: re-export it with --output native (or full)")
        if int(out.shape[1]) != len(self.teacher_classes):
            raise UserError(f"{Path(self.source).name} outputs {out.shape[1]} channels but its metadata names "
                            f"{len(self.teacher_classes)} classes; re-export it with python -m export.onnx")
        z = torch.from_numpy(np.asarray(out[:1], dtype=np.float32))
        # classes of the logits `forward` returns: the student's when mapped, else the teacher's
        self.num_classes = int((self.class_map.apply(z) if self.class_map is not None else z).shape[1])
        return max(1, round(h / int(out.shape[2])))

    def _teacher_input(self, x: torch.Tensor) -> np.ndarray:
        """The student's normalised batch -> what the graph takes (numpy, its layout and dtype)."""
        x01 = x.float() * self.s_std.to(x.device) + self.s_mean.to(x.device)
        if self.fixed_size is not None and tuple(x01.shape[-2:]) != self.fixed_size:
            shrink = self.fixed_size[0] < x01.shape[-2] or self.fixed_size[1] < x01.shape[-1]
            x01 = F.interpolate(x01, size=self.fixed_size, mode="bilinear", align_corners=False, antialias=shrink)
        info = self.backend.info
        if info.uint8_input:
            frames = (x01 * 255.0).round().clamp(0, 255).to(torch.uint8)
            if info.input_format == "uint8-bgr":
                frames = frames.flip(1)
            return np.ascontiguousarray(frames.permute(0, 2, 3, 1).cpu().numpy())
        xt = (x01 - self.t_mean.to(x.device)) / self.t_std.to(x.device)
        return np.ascontiguousarray(xt.cpu().numpy(), dtype=np.float32)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """The backend on the whole batch (dynamic batch) or on chunks of its fixed batch (the last padded)."""
        b = self.fixed_batch
        if b is None or b == len(batch):
            return self.backend.infer(batch)
        outs = []
        for start in range(0, len(batch), b):
            part = batch[start:start + b]
            n = len(part)
            if n < b:
                part = np.concatenate([part, np.repeat(part[-1:], b - n, axis=0)])
            outs.append(self.backend.infer(np.ascontiguousarray(part))[:n])
        return np.concatenate(outs)

    def forward(self, x: torch.Tensor) -> SegOutput:
        if x.ndim != 4 or x.shape[1] != 3:
            raise UserError(f"the teacher {Path(self.source).name} takes an N x 3 x H x W batch, got {tuple(x.shape)}")
        with torch.no_grad():
            z = torch.from_numpy(np.asarray(self._run(self._teacher_input(x)), dtype=np.float32)).to(x.device)
            if self.class_map is not None:
                z = self.class_map.apply(z)
        return SegOutput(logits=z.float())

    def close(self) -> None:
        """Free the backend's session (device memory, handles); safe to call twice."""
        backend = self.__dict__.get("backend")
        if backend is not None:
            backend.close()


def _class_map(student: list[str], teacher: list[str], spec: Any, path: Path) -> Any:
    """The ClassMap from the teacher's classes onto the student's (by name, or by `spec`), or None when they
    are the same list; a UserError in one sentence when they cannot be mapped."""
    if spec is None and student == teacher:
        return None
    from train.teachers.class_map import class_map

    return class_map(student, teacher, spec, who=f"the teacher {path.name}")


# ----------------------------------------------------------------------------------------------
# Which methods an exported teacher can run


def logit_methods() -> list[str]:
    """The distillation methods that read the teacher's logits only, as `teacher_reads` says (default
    options), plus those that do with an option (`LOGIT_OPTIONS`), e.g. 'cwd with distill.cwd.features=false'."""
    from train.config import DistillConfig
    from train.losses import METHODS

    out = []
    for name, method in METHODS.items():
        cfg = DistillConfig(method=name)
        if method.teacher_reads(cfg) == [LOGITS]:
            out.append(name)
        elif name in LOGIT_OPTIONS:
            text, changes = LOGIT_OPTIONS[name]
            changed = replace(cfg, **{k: replace(getattr(cfg, k), **v) for k, v in changes.items()})
            if method.teacher_reads(changed) == [LOGITS]:
                out.append(f"{name} with {text}")
    return out


def require_features(method: str, reads: Sequence[str], teacher: str) -> None:
    """Refuse, in one sentence, a method that reads a teacher feature (`reads`: what it reads from the teacher,
    `logits` and/or feature names, as `train.losses.teacher_reads` gives) when `teacher` is an exported model,
    which gives logits only."""
    if not is_backend_teacher(teacher):
        return
    feats = [r for r in reads if r != LOGITS]
    if not feats:
        return
    works = logit_methods()
    raise UserError(f"method={method} reads the teacher's {', '.join(feats)} feature{'s' if len(feats) > 1 else ''}, "
                    f"but the exported teacher {teacher} gives logits only, with which it can run {', '.join(works)} and "
                    f"pseudo-labels (distill.pseudo_labels=true); to run {method}, pass the PyTorch teacher "
                    f"checkpoint (.pt) instead")
