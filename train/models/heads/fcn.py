"""FCN auxiliary head (torchvision `FCNHead`) on encoder stage3: 3x3 conv-BN-ReLU to C/4, dropout 0.1,
1x1 conv to K classes. Training only (weight 0.4 in the task loss); not part of the deployable graph."""

from __future__ import annotations

from torch import nn

from train.models.heads.blocks import ConvBNReLU


class FCNHead(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = max(in_channels // 4, 16)
        super().__init__(ConvBNReLU(in_channels, inter, 3), nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))
