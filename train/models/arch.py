"""Facts about a built model, through the wrappers training puts around it: the plain module inside
DDP / torch.compile, its `arch` dict (what `build_model` rebuilds it from), a one-line description of
that dict, and the weights of its deployable graph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from train.config import to_plain
from train.models.segmentor import TRAINING_ONLY_PREFIXES


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def training_only(model: nn.Module) -> tuple[str, ...]:
    """The state-dict key prefixes of modules used only in training (auxiliary heads, adapters)."""
    return tuple(getattr(model, "training_only_prefixes", TRAINING_ONLY_PREFIXES))


def deployable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The student's weights without training-only modules (`model.deploy_state_dict()` when it has
    one, else without the keys under `training_only(model)`), on the CPU."""
    m = unwrap(model)
    deploy = getattr(m, "deploy_state_dict", None)
    if callable(deploy):
        state = deploy()
    else:
        drop = training_only(m)
        state = {k: v for k, v in m.state_dict().items() if not k.startswith(drop)}
    return {k: v.detach().cpu() for k, v in state.items()}


def model_arch(model: nn.Module, deploy: bool = False) -> dict[str, Any]:
    """The model's `arch` dict (with `deploy=True` its `deploy_arch`, when it has one)."""
    m = unwrap(model)
    arch = getattr(m, "deploy_arch", None) if deploy else None
    arch = arch if isinstance(arch, Mapping) else getattr(m, "arch", None)
    if not isinstance(arch, Mapping):
        raise TypeError(f"{type(m).__name__} has no `arch` dict; build it with train.models.build_model")
    return to_plain(dict(arch))


def describe_arch(arch: Mapping[str, Any]) -> str:
    """A short human description of an arch dict, e.g. 'resnet18 + deeplabv3 (OS8), 19 classes'."""
    parts = [str(arch[k]) for k in ("recipe", "encoder", "head") if arch.get(k)]
    text = " + ".join(dict.fromkeys(parts)) or "unknown architecture"
    if arch.get("output_stride"):
        text += f" (OS{arch['output_stride']})"
    if arch.get("num_classes") is not None:
        text += f", {arch['num_classes']} classes"
    return text
