"""What every decode head provides: its logits stride, the width of `decoder`, and `forward`."""

from __future__ import annotations

import abc

import torch
from torch import nn


class DecodeHead(nn.Module, abc.ABC):
    """Built from the encoder's `feature_info`; `forward(features) -> (logits at `stride`, decoder)`
    where `decoder` (`decoder_channels` wide) is the input of the final 1x1 classifier."""

    stride: int
    decoder_channels: int
    classifier: nn.Conv2d

    @abc.abstractmethod
    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at `stride` and the classifier's input feature."""
