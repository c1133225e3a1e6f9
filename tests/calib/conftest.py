"""Shared fixtures for calib tests: a tiny in-memory dataset reader and a quickly trained tiny model
exported to ONNX (trained, so that its argmax has margins, as a real student's has)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export.onnx_graph import export_graph
from runtime.datasets import SegmentationDataset, build_dataset
from runtime.datasets.base import Sample
from runtime.metadata import DataInfo, default_palette
from runtime.preprocess import preprocess_for

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


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(onnx path, DataInfo, val images, val labels): SmallNet after 30 Adam steps on 16 synthetic images."""
    torch.manual_seed(0)
    ds = build_dataset("synthetic", "train", **SYNTHETIC)
    info = ds.data_info(SIZE)
    samples = [ds[i] for i in range(len(ds))]
    x = torch.from_numpy(preprocess_for(info, [s[0] for s in samples]))
    y = torch.from_numpy(np.stack([s[1] for s in samples])).long()
    model = SmallNet(info.num_classes)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: more threads only add contention on a busy 2-core machine
    try:
        for step in range(30):
            idx = torch.arange(4) + 4 * (step % 4)
            loss = F.cross_entropy(model.segment(x[idx]), y[idx], ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    path = export_graph(model, info, tmp_path_factory.mktemp("model") / "s.onnx", size=SIZE, source={"test": True})
    val = build_dataset("synthetic", "val", **SYNTHETIC)
    vs = [val[i] for i in range(len(val))]
    return path, info, preprocess_for(info, [s[0] for s in vs]), np.stack([s[1] for s in vs]), x.numpy()


def data_info(k: int = 3) -> DataInfo:
    return DataInfo(classes=[f"c{i}" for i in range(k)], palette=default_palette(k), input_size=SIZE)
