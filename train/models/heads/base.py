"""What every decode head provides: its logits stride, the width and stride of `decoder`, and `forward`."""

from __future__ import annotations

import abc

import torch
from torch import nn


class DecodeHead(nn.Module, abc.ABC):
    """Built from the encoder's `feature_info`; `forward(features) -> (logits at `stride`, decoder)`
    where `decoder` (`decoder_channels` wide, at `decoder_stride`) is the head's deep feature that
    distillation reads: the input of the final 1x1 classifier (DeepLabV3, PSPNet), or LR-ASPP's
    high branch at stage4's stride."""

    stride: int
    decoder_channels: int
    decoder_stride: int
    classifier: nn.Conv2d

    @abc.abstractmethod
    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at `stride` and the `decoder` feature."""
