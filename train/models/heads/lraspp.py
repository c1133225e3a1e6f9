"""Lite R-ASPP head (Howard et al. 2019, "Searching for MobileNetV3"), as torchvision's `LRASPPHead`.

High level (stage4): `h = ReLU(BN(conv1x1(x))) * sigmoid(conv1x1(avgpool(x)))`, bilinearly upsampled to
the low-level map (the first stride-8 stage). The paper's logits `W_l low + W_h h` are computed as one
1x1 classifier on `decoder = concat(low, h)` (the same function), so `decoder` is exactly the input
of the classifier. Logits are at stride 8 whatever the encoder's output stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.models.heads.base import DecodeHead
from train.models.heads.blocks import ConvBNReLU, stage
from train.models.output import FeatureInfo


class LRASPPHead(DecodeHead):
    def __init__(self, feature_info: list[FeatureInfo], num_classes: int, channels: int = 128) -> None:
        super().__init__()
        low = next(f for f in feature_info if f.reduction == 8)
        high = stage(feature_info, "stage4")
        self.low_name = low.name
        self.stride = low.reduction
        self.decoder_channels = low.channels + channels
        self.cbr = ConvBNReLU(high.channels, channels, 1)
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high.channels, channels, 1, bias=False),
                                   nn.Sigmoid())
        self.classifier = nn.Conv2d(self.decoder_channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = features[self.low_name], features["stage4"]
        h = self.cbr(high) * self.scale(high)
        h = F.interpolate(h, size=low.shape[-2:], mode="bilinear", align_corners=False)
        decoder = torch.cat([low, h], dim=1)
        return self.classifier(decoder), decoder
