"""Shared by the losses' tests (imported as `loss_refs`, not a conftest): a Segmentor-like model honouring `detach_encoder`, and
pure-Python reference helpers (independent of the code under test)."""

from __future__ import annotations

import math

import torch
from torch import nn

from train.models.output import FeatureInfo, SegOutput


class TinySeg(nn.Module):
    """Encoder stage1..stage4 (strides 2, 4, 4, 4), a decoder conv (F) and a 1x1 classifier."""

    def __init__(self, num_classes: int = 3, widths: tuple[int, int, int, int] = (4, 6, 8, 8),
                 dec: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        w1, w2, w3, w4 = widths
        self.encoder = nn.ModuleDict({
            "stage1": nn.Sequential(nn.Conv2d(3, w1, 3, 2, 1), nn.ReLU()),
            "stage2": nn.Sequential(nn.Conv2d(w1, w2, 3, 2, 1), nn.ReLU()),
            "stage3": nn.Sequential(nn.Conv2d(w2, w3, 3, 1, 1), nn.ReLU()),
            "stage4": nn.Sequential(nn.Conv2d(w3, w4, 3, 1, 1), nn.ReLU()),
        })
        self.decoder = nn.Sequential(nn.Conv2d(w4, dec, 3, 1, 1), nn.ReLU())
        self.classifier = nn.Conv2d(dec, num_classes, 1)
        self.feature_info = [
            FeatureInfo("stage1", w1, 2), FeatureInfo("stage2", w2, 4), FeatureInfo("stage3", w3, 4),
            FeatureInfo("stage4", w4, 4), FeatureInfo("decoder", dec, 4),
        ]

    def forward(self, x: torch.Tensor, detach_encoder: bool = False) -> SegOutput:
        feats = {}
        for name, m in self.encoder.items():
            x = m(x)
            feats[name] = x
        f = self.decoder(x.detach() if detach_encoder else x)
        feats["decoder"] = f
        return SegOutput(logits=self.classifier(f), features=feats)


def tiny_pair() -> tuple[TinySeg, TinySeg]:
    student = TinySeg(seed=0)
    teacher = TinySeg(widths=(6, 8, 12, 12), dec=12, seed=1).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def batch(seed: int = 0, n: int = 2, size: int = 16, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, k, (n, size, size), generator=g)
    y[:, :2, :] = 255
    return x, y


def softmax(values: list[float]) -> list[float]:
    m = max(values)
    e = [math.exp(v - m) for v in values]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
