"""Stand-ins shared by the calib tests: a tiny in-memory dataset reader and a small segmentation net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtime.datasets import SegmentationDataset
from runtime.datasets.base import Sample
from runtime.metadata import DataInfo, default_palette

SIZE = (64, 128)
SYNTHETIC = {"num_train": 16, "num_val": 8, "size": SIZE, "cache": False}


class InMemory(SegmentationDataset):
    """A reader over given (image, label) arrays."""

    def __init__(self, samples: list[tuple[np.ndarray, np.ndarray]], classes: list[str], split: str = "train"):
        super().__init__(None, split)
        self.samples = samples
        self.classes = classes
        self.palette = default_palette(len(classes))
        self.items = [(Path(f"img{i}"), None, f"img{i}") for i in range(len(samples))]

    def load(self, i: int) -> Sample:
        return self.samples[i][0], self.samples[i][1], f"img{i}"


class SmallNet(nn.Module):
    """Three convolutions at stride 4 and a classifier; `segment` upsamples to the input size."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, 1, 2, dilation=2), nn.ReLU())
        self.cls = nn.Conv2d(32, k, 1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.cls(self.body(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def data_info(k: int = 3) -> DataInfo:
    return DataInfo(classes=[f"c{i}" for i in range(k)], palette=default_palette(k), input_size=SIZE)
