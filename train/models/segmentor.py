"""`Segmentor`: timm encoder + decode head (+ optional FCN auxiliary head), returning `SegOutput`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from train.models.encoder import Encoder
from train.models.heads import HEADS, DecodeHead, FCNHead
from train.models.output import FeatureInfo, SegOutput

AUX_STAGE = "stage3"
# State-dict prefixes of modules that exist only for training (the FCN auxiliary head `aux`): checkpoints
# and parameter counts leave them out.
TRAINING_ONLY_PREFIXES: tuple[str, ...] = ("aux.",)


class Segmentor(nn.Module):
    """Encoder features `stage0`..`stage4` -> decode head -> logits at the head's stride.

    `arch` holds plain values that rebuild this exact module with `train.models.build_model(arch)`;
    `feature_info` lists every named feature of `forward`'s `features` dict (encoder stages, `decoder`).
    """

    training_only_prefixes = TRAINING_ONLY_PREFIXES

    def __init__(self, arch: dict[str, Any], pretrained: bool = False, pretrained_path: str | None = None) -> None:
        super().__init__()
        self.arch = dict(arch)
        self.encoder = Encoder(arch["encoder"], arch["output_stride"], pretrained, pretrained_path)
        num_classes = int(arch["num_classes"])
        self.head: DecodeHead = HEADS[arch["head"]](self.encoder.feature_info, num_classes, arch["head_channels"])
        self.aux: nn.Module | None = None
        if arch["aux_head"]:
            aux_in = next(f for f in self.encoder.feature_info if f.name == AUX_STAGE)
            self.aux = FCNHead(aux_in.channels, num_classes)
        self.feature_info: list[FeatureInfo] = [*self.encoder.feature_info,
                                                FeatureInfo("decoder", self.head.decoder_channels,
                                                            self.head.decoder_stride)]

    @property
    def stride(self) -> int:
        """Stride of the logits relative to the input."""
        return int(self.head.stride)

    def forward(self, x: torch.Tensor, detach_encoder: bool = False) -> SegOutput:
        """One pass: logits (not upsampled), aux logits or None, and every named feature.

        With `detach_encoder=True` the decode and aux heads read detached encoder features, so the task
        loss trains the heads only (FKD); `features` still holds the attached encoder features."""
        feats = self.encoder(x)
        head_in = {k: v.detach() for k, v in feats.items()} if detach_encoder else feats
        logits, decoder = self.head(head_in)
        aux = self.aux(head_in[AUX_STAGE]) if self.aux is not None else None
        return SegOutput(logits=logits, aux=aux, features={**feats, "decoder": decoder})

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Inference/export graph: logits bilinearly upsampled to the input size (no aux head)."""
        logits, _ = self.head(self.encoder(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    @property
    def deploy_arch(self) -> dict[str, Any]:
        """`arch` of the deployable graph (no aux head): pairs with `deploy_state_dict()`."""
        return {**self.arch, "aux_head": False}

    def deploy_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of encoder + decode head only (what checkpoints keep), loadable strictly into
        `build_model(self.deploy_arch)`."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.training_only_prefixes)}
