"""PSPNet head (Zhao et al. 2017): pyramid pooling on encoder stage4.

For each bin b in (1, 2, 3, 6): adaptive average pooling to b x b, 1x1 conv-BN-ReLU to C/4 channels,
bilinear upsampling back; concatenated with the input, 3x3 conv-BN-ReLU (= `decoder`), dropout 0.1,
1x1 classifier (dropout sits after `decoder` so that the distilled feature is deterministic).

Adaptive pooling is computed as `P_h @ x @ P_w^T` with the averaging matrices of PyTorch's
`adaptive_avg_pool2d` (bin i covers rows floor(i H / b) .. ceil((i + 1) H / b) - 1): the same values
for every input size, and it exports to ONNX as MatMul, where `AdaptiveAvgPool2d` exports only when
b divides the size. The matrices are built with tensor ops from the feature shape, so the TorchScript
ONNX exporter traces them as shape-dependent: dynamic H/W exports give the same values (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.models.heads.base import DecodeHead
from train.models.heads.blocks import ConvBNReLU
from train.models.output import FeatureInfo, stage

BINS = (1, 2, 3, 6)


def pool_matrix(size: int, bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """bins x size matrix whose row i averages the inputs of adaptive pooling's bin i."""
    i = torch.arange(bins, device=device)
    start = torch.div(i * size, bins, rounding_mode="floor")
    end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode="floor")
    pos = torch.arange(size, device=device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return (inside.to(dtype) / (end - start)[:, None].to(dtype)).contiguous()


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(x, bins)` as two matrix products (ONNX-exportable at any size)."""
    ph = pool_matrix(x.shape[-2], bins, x.dtype, x.device)
    pw = pool_matrix(x.shape[-1], bins, x.dtype, x.device)
    return torch.matmul(torch.matmul(ph, x), pw.t())


class PoolBranch(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bins: int) -> None:
        super().__init__()
        self.bins = bins
        self.conv = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(adaptive_avg_pool(x, self.bins))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class PSPHead(DecodeHead):
    def __init__(self, feature_info: list[FeatureInfo], num_classes: int, channels: int = 256) -> None:
        super().__init__()
        top = stage(feature_info, "stage4")
        self.stride = self.decoder_stride = top.reduction
        self.decoder_channels = channels
        branch = top.channels // len(BINS)
        self.branches = nn.ModuleList(PoolBranch(top.channels, branch, b) for b in BINS)
        self.bottleneck = ConvBNReLU(top.channels + branch * len(BINS), channels, 3)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = features["stage4"]
        decoder = self.bottleneck(torch.cat([x] + [b(x) for b in self.branches], dim=1))
        return self.classifier(self.dropout(decoder)), decoder
