"""What every segmentation model returns, and its feature contract (after timm's `feature_info`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from runtime.errors import UserError


@dataclass
class FeatureInfo:
    """One named feature map: channels and reduction (stride) relative to the input."""

    name: str
    channels: int
    reduction: int


def describe_stages(info: list[FeatureInfo]) -> str:
    """'stage3 (256 ch, stride 16), decoder (128 ch, stride 16)': a model's stages for messages."""
    return ", ".join(f"{i.name} ({i.channels} ch, stride {i.reduction})" for i in info)


def stage(info: list[FeatureInfo], name: str, who: str = "model", purpose: str = "feature") -> FeatureInfo:
    """The FeatureInfo called `name`, or a UserError naming `purpose` and `who` and listing the stages."""
    for i in info:
        if i.name == name:
            return i
    raise UserError(f"{purpose}: the {who} has no feature stage '{name}'; available {who} stages: "
                    f"{describe_stages(info)}")


@dataclass
class SegOutput:
    """One forward pass gives everything training and distillation need, with no second pass.

    - `logits`: N x K x h x w at the decode head's stride (8 or 16), NOT upsampled (z in docs/methods.md).
    - `aux`: N x K x h' x w' logits of the FCN auxiliary head on encoder stage 3, or None.
    - `features`: name -> N x C x h x w; encoder levels `stage0`..`stage4` (timm features_only levels,
      stage0 = stride 2) and `decoder` (the head's deep feature, F in docs/methods.md: the classifier's
      input, or LR-ASPP's high branch at stage4's stride).
    """

    logits: torch.Tensor
    aux: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
