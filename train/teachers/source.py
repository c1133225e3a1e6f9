"""Where a teacher comes from, in one place: which kind of source a `teacher=` value names, whether it
exists, its fingerprint for cache keys, and the frozen module that gives its outputs as a `SegOutput`.

Kinds (`teacher_kind`):

    checkpoint  runs/x/best.pt: this project's own checkpoint (train.teacher), any method
    foreign     hf:DIR, torchvision:NAME:WEIGHTS, smp:DIR (train/teachers/foreign.py): a PyTorch model
                trained elsewhere, classes mapped onto the student's, features through named layers
                (`distill.teacher_layers`; the first is also the teacher's `decoder`, the deep feature
                LFD, FitNet and CWD read)
    backend     .onnx, .xml (OpenVINO), .engine/.plan (TensorRT) (train/teachers/backend_teacher.py):
                an exported model, logits only

Every teacher module has `stride` (of its logits), `feature_info` (its named features) and `num_classes`
(after the class map): what the cache and the methods read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runtime.errors import UserError
from runtime.io import sha256_file
from train.config import DistillConfig

CHECKPOINT, FOREIGN, BACKEND = "checkpoint", "foreign", "backend"


def teacher_kind(text: str | Path) -> str:
    """checkpoint, foreign or backend (module docstring)."""
    from train.teachers.backend_teacher import is_backend_teacher
    from train.teachers.foreign import is_foreign

    t = str(text)
    if is_foreign(t):
        return FOREIGN
    if is_backend_teacher(t):
        return BACKEND
    return CHECKPOINT


def check_teacher(text: str | Path) -> None:
    """A UserError naming the teacher when what it names does not exist."""
    kind = teacher_kind(text)
    if kind == FOREIGN:
        teacher_sha256(text)  # the fingerprint reads every file: it names a missing folder or file
    elif not Path(text).is_file():
        what = "teacher checkpoint" if kind == CHECKPOINT else "exported teacher"
        raise UserError(f"{what} {text} does not exist; pass teacher=path/to/teacher.pt (python -m train.teacher "
                        f"writes runs/<name>/best.pt), hf:DIR, torchvision:NAME:WEIGHTS, smp:DIR or an exported "
                        f".onnx/.xml/.engine")


def teacher_sha256(text: str | Path) -> str:
    """What a cache key records of the teacher: a file's sha256; an OpenVINO IR's over the .xml and its
    .bin; a foreign teacher's fingerprint over the files that define it."""
    kind = teacher_kind(text)
    if kind == FOREIGN:
        from train.teachers.foreign import teacher_fingerprint

        return teacher_fingerprint(str(text))
    path = Path(text)
    if kind == BACKEND and path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        h = hashlib.sha256()
        for p in (path, path.with_suffix(".bin")):
            h.update(sha256_file(p).encode())
        return h.hexdigest()
    return sha256_file(path)


def teacher_record(text: str | Path) -> dict[str, Any]:
    """What a run keeps of a teacher without its weights, in the checkpoint's shape: this project's
    checkpoint as saved (weights dropped), or for another source {kind, source, data: None, arch: None,
    train: {}}."""
    kind = teacher_kind(text)
    if kind == CHECKPOINT:
        from train.engine.checkpoint import load_checkpoint

        return {k: v for k, v in load_checkpoint(text).items() if k != "model"}
    check_teacher(text)
    return {"kind": kind, "source": str(text), "data": None, "arch": None, "train": {}}


def load_teacher(text: str | Path, classes: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 distill: DistillConfig, device: str | torch.device = "cpu") -> nn.Module:
    """The frozen teacher module for a run whose student predicts `classes` from inputs normalised with
    `mean`/`std`. This project's checkpoint must predict the same classes (UserError otherwise); a foreign
    or exported teacher's classes are mapped (`distill.class_map`, else by name) or refused in one sentence."""
    kind = teacher_kind(text)
    if kind == CHECKPOINT:
        from train.engine.checkpoint import model_from_checkpoint

        model, _, _ = model_from_checkpoint(str(text), device)
    elif kind == FOREIGN:
        from train.teachers.foreign import load_foreign_teacher

        layers = list(distill.teacher_layers)
        model = load_foreign_teacher(str(text), classes, mean, std, distill.class_map, layers, device)
    else:
        from train.teachers.backend_teacher import BackendTeacher

        if distill.teacher_layers:
            raise UserError(f"distill.teacher_layers names layers, but the exported teacher {text} gives logits "
                            f"only; drop distill.teacher_layers or pass the PyTorch teacher")
        model = BackendTeacher(str(text), list(classes), mean, std, distill.class_map, device)
    model.requires_grad_(False)
    return model.eval()


def teacher_classes(model: nn.Module) -> int:
    """How many classes the teacher's logits have (after its class map)."""
    n = getattr(model, "num_classes", None)
    if n is None:
        n = (getattr(model, "arch", None) or {}).get("num_classes")
    if n is None:
        raise ValueError("the teacher module tells no class count (num_classes or arch['num_classes'])")
    return int(n)


def describe_teacher(model: nn.Module) -> dict[str, Any]:
    """What a cache manifest records about the teacher module: its architecture (own checkpoints) or its
    source, pre-processing and class map (other sources), with stride and features."""
    from dataclasses import asdict

    if hasattr(model, "to_dict"):
        return dict(model.to_dict())
    if hasattr(model, "preprocessing"):
        return {"kind": BACKEND, **dict(model.preprocessing()), "stride": int(model.stride),  # type: ignore[operator,arg-type]
                "feature_info": []}
    return {"arch": getattr(model, "arch", None), "stride": int(model.stride),  # type: ignore[arg-type]
            "feature_info": [asdict(f) for f in model.feature_info]}  # type: ignore[union-attr]
