"""Lite R-ASPP head (Howard et al. 2019, "Searching for MobileNetV3"), as torchvision's `LRASPPHead`.

1. High branch on x = stage4 (stride 16 in the LR-ASPP recipes):
   `h = ReLU(BN(conv1x1(x))) · sigmoid(conv1x1(avgpool(x)))`.
2. `up(h)`: h bilinearly upsampled to the low-level map `low` (the first stride-8 stage).
3. Logits `W_l low + W_h up(h)`, computed as one 1x1 classifier on `concat(low, up(h))` (the same
   function), so logits are at stride 8 whatever the encoder's output stride.

The distilled deep feature `decoder` is h of step 1: the head's own path at stage4's stride,
`head_channels` wide, after the attention product and before upsampling and the classifier. The
classifier's input is not used for it because half of it is `low`, raw encoder features at stride 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.models.heads.base import DecodeHead
from train.models.heads.blocks import ConvBNReLU
from train.models.output import FeatureInfo, stage


class LRASPPHead(DecodeHead):
    def __init__(self, feature_info: list[FeatureInfo], num_classes: int, channels: int = 128) -> None:
        super().__init__()
        low = next(f for f in feature_info if f.reduction == 8)
        high = stage(feature_info, "stage4")
        self.low_name = low.name
        self.stride = low.reduction
        self.decoder_channels, self.decoder_stride = channels, high.reduction
        self.cbr = ConvBNReLU(high.channels, channels, 1)
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high.channels, channels, 1, bias=False),
                                   nn.Sigmoid())
        self.classifier = nn.Conv2d(low.channels + channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = features[self.low_name], features["stage4"]
        h = self.cbr(high) * self.scale(high)  # (1), the distilled `decoder`
        up = F.interpolate(h, size=low.shape[-2:], mode="bilinear", align_corners=False)  # (2)
        return self.classifier(torch.cat([low, up], dim=1)), h  # (3)
