"""Segmentation models from timm encoders: `build_model`, `RECIPES`, `count_params`, `gflops`.

`build_model(cfg.model, num_classes)` resolves a recipe (train/models/recipes.py) with the config's
overrides; `build_model(checkpoint["arch"])` rebuilds a saved model exactly (random init, no download).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from runtime.errors import UserError
from train.config import ModelConfig
from train.models.arch import describe_arch, model_arch, unwrap
from train.models.flops import counted_flops
from train.models.heads import HEADS
from train.models.output import FeatureInfo, SegOutput
from train.models.recipes import RECIPES
from train.models.segmentor import TRAINING_ONLY_PREFIXES, Segmentor

__all__ = ["RECIPES", "FeatureInfo", "SegOutput", "Segmentor", "build_model", "count_params", "gflops",
           "resolve_arch"]

ARCH_KEYS = ("recipe", "encoder", "head", "num_classes", "output_stride", "aux_head", "head_channels")


def resolve_arch(cfg: ModelConfig, num_classes: int) -> dict[str, Any]:
    """Recipe + config overrides -> the plain `arch` dict that `Segmentor` is built from."""
    if cfg.recipe not in RECIPES:
        close = difflib.get_close_matches(cfg.recipe, RECIPES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown model.recipe '{cfg.recipe}'; choose one of {', '.join(RECIPES)}.{hint}")
    arch: dict[str, Any] = {"recipe": cfg.recipe, **RECIPES[cfg.recipe], "num_classes": int(num_classes)}
    for key in ("output_stride", "aux_head", "head_channels"):
        if getattr(cfg, key) is not None:
            arch[key] = getattr(cfg, key)
    if arch["output_stride"] not in (8, 16):
        raise UserError(f"model.output_stride={arch['output_stride']} is not supported; use 8 or 16")
    return arch


def build_model(cfg: ModelConfig | dict[str, Any], num_classes: int | None = None) -> Segmentor:
    """A `Segmentor` from a `ModelConfig` (or its dict) and the class count, or from a saved `arch` dict.

    An `arch` dict (it has an `encoder` key) is rebuilt exactly, without pretrained weights (they come
    from the checkpoint); `num_classes`, if given, must then match it."""
    if isinstance(cfg, dict) and "encoder" in cfg:
        missing = [k for k in ARCH_KEYS if k not in cfg]
        if missing or cfg["head"] not in HEADS:
            raise UserError(f"model arch {cfg} is malformed (missing {missing or 'a known head'}); "
                            "the checkpoint was written by another version")
        if num_classes is not None and int(num_classes) != int(cfg["num_classes"]):
            raise UserError(f"the model has {cfg['num_classes']} classes but {num_classes} were asked for")
        return Segmentor(dict(cfg))
    if isinstance(cfg, dict):
        try:
            cfg = ModelConfig(**cfg)
        except TypeError as e:
            raise UserError(f"model config {cfg} has unknown keys ({e}); valid: "
                            f"{', '.join(asdict(ModelConfig()))}") from e
    if num_classes is None:
        raise ValueError("build_model(ModelConfig) needs num_classes")
    return Segmentor(resolve_arch(cfg, num_classes), pretrained=cfg.pretrained, pretrained_path=cfg.pretrained_path)


def count_params(model: nn.Module, deploy: bool = True) -> int:
    """Number of parameters; with `deploy=True` only those of the deployable graph (no aux head)."""
    return sum(p.numel() for n, p in model.named_parameters() if not (deploy and n.startswith(getattr(model, "training_only_prefixes", TRAINING_ONLY_PREFIXES))))


def gflops(model: Segmentor, size: tuple[int, int], batch: int = 1) -> float:
    """GFLOPs of `model.segment` on a `batch` x 3 x H x W input in eval mode, counted as
    train/models/flops.py says (2 per multiply-accumulate; element-wise ops, pooling, resizing not)."""
    param = next(model.parameters())
    x = torch.zeros(batch, 3, *size, dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return counted_flops(lambda: model.segment(x)) / 1e9
    finally:
        model.train(was_training)


def feature_info(model: nn.Module) -> list[FeatureInfo]:
    """A Segmentor's feature contract, through DDP / torch.compile wrappers (models rebuilt from a
    checkpoint are typed as plain modules)."""
    return list(unwrap(model).feature_info)  # type: ignore[arg-type]


def model_summary(model: nn.Module, size: tuple[int, int]) -> dict[str, Any]:
    """Parameters of the deployable graph and GFLOPs of one `size` image (on the model's device)."""
    m = unwrap(model)
    return {"params": count_params(m), "gflops": gflops(m, size), "gflops_size": list(size),  # type: ignore[arg-type]
            "arch": describe_arch(model_arch(m))}
