"""DeepLabV3 head (Chen et al. 2017), as torchvision's `DeepLabHead`.

ASPP on encoder stage4: a 1x1 branch, three 3x3 atrous branches (rates 12, 24, 36 at output stride 8;
6, 12, 18 at 16) and image pooling (global average -> 1x1 conv-BN-ReLU -> broadcast), concatenated,
projected by 1x1 conv-BN-ReLU + dropout 0.5; then 3x3 conv-BN-ReLU (= `decoder`) and the 1x1 classifier.
The pooling branch has BatchNorm on a 1x1 map, so training needs batches of 2 or more images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.models.heads.base import DecodeHead
from train.models.heads.blocks import ConvBNReLU
from train.models.output import FeatureInfo, stage

RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}


class ImagePooling(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.adaptive_avg_pool2d(x, 1))
        return y.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    def __init__(self, in_channels: int, rates: tuple[int, ...], out_channels: int = 256) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_channels, out_channels, 1)]
        branches += [ConvBNReLU(in_channels, out_channels, 3, dilation=r) for r in rates]
        branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvBNReLU(len(branches) * out_channels, out_channels, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class DeepLabV3Head(DecodeHead):
    def __init__(self, feature_info: list[FeatureInfo], num_classes: int, channels: int = 256) -> None:
        super().__init__()
        top = stage(feature_info, "stage4")
        self.stride = self.decoder_stride = top.reduction
        self.decoder_channels = channels
        self.aspp = ASPP(top.channels, RATES[top.reduction], channels)
        self.conv = ConvBNReLU(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        decoder = self.conv(self.aspp(features["stage4"]))
        return self.classifier(decoder), decoder
