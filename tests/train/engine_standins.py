"""Tiny stand-ins for the engine tests: a 2-conv segmentor that honours the model contract and a
deterministic, resumable, endless loader (what train.data.InfiniteLoader provides)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from runtime.metadata import DataInfo, default_palette
from train.config import Config
from train.losses.objective import Objective, StepInfo
from train.models.output import FeatureInfo, SegOutput

K = 3


class TinySeg(nn.Module):
    """conv(stride 2)-BN-ReLU-dropout encoder, 1x1 decode head, 1x1 auxiliary head."""

    def __init__(self, num_classes: int = K, width: int = 8, aux: bool = True) -> None:
        super().__init__()
        self.arch = {"recipe": "tiny", "encoder": "tiny", "head": "conv1x1", "num_classes": num_classes,
                     "width": width, "aux_head": aux, "output_stride": 2}
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width),
                                     nn.ReLU(), nn.Dropout2d(0.1))
        self.head = nn.Conv2d(width, num_classes, 1)
        self.aux = nn.Conv2d(width, num_classes, 1) if aux else None
        self.feature_info = [FeatureInfo("decoder", width, 2)]

    def forward(self, x: torch.Tensor, detach_encoder: bool = False) -> SegOutput:
        f = self.encoder(x)
        g = f.detach() if detach_encoder else f
        aux = self.aux(f) if self.aux is not None and self.training else None
        return SegOutput(self.head(g), aux, {"decoder": g})

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(self.forward(x).logits, size=x.shape[-2:], mode="bilinear")


def build_tiny(arch: dict, num_classes: int) -> TinySeg:
    return TinySeg(num_classes, arch.get("width", 8), arch.get("aux_head", True))


def make_data(n: int = 16, size: tuple[int, int] = (16, 32), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose label is the channel with the largest value (learnable by a 3x3 conv), 255 borders."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, *size, generator=g)
    y = x.argmax(1)
    y[:, 0, :] = 255
    return x, y


class TinyLoader:
    """Endless batches, a seeded permutation per epoch, random flips from the global torch RNG (so that
    resuming needs both the loader position and the RNG state); shards by rank like DistributedSampler."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int = 4, seed: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.x, self.y, self.batch, self.seed, self.rank, self.world = x, y, batch, seed, rank, world
        self.epoch = self.pos = 0

    def __iter__(self) -> TinyLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        perm = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        perm = perm[self.rank::self.world]
        idx = perm[self.pos * self.batch:(self.pos + 1) * self.batch]
        self.pos += 1
        if (self.pos + 1) * self.batch > len(perm):
            self.epoch, self.pos = self.epoch + 1, 0
        x, y = self.x[idx].clone(), self.y[idx].clone()
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x, y

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.pos = d["epoch"], d["pos"]


def val_batches(seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = make_data(8, seed=seed)
    return [(x[:4], y[:4]), (x[4:], y[4:])]


def data_info() -> DataInfo:
    return DataInfo(classes=["r", "g", "b"], palette=default_palette(K), input_size=(16, 32))


def tiny_cfg(tmp: Path, budget: str = "6", **train: object) -> Config:
    cfg = Config()
    cfg.train.budget = budget
    cfg.train.runs_dir = str(tmp)
    cfg.train.name = "tiny"
    cfg.train.log_every = 1
    cfg.train.ckpt_every = "1000"
    cfg.train.amp = False
    cfg.optim.lr = 0.05
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


class ScaledTask(Objective):
    """Task loss plus a term from a training-only 1x1 head on the decoder features (as distillation
    adapters and auxiliary heads are), optionally returning NaN or raising at a given iteration."""

    def __init__(self, nan_at: int | None = None, crash_at: int | None = None, width: int = 8,
                 num_classes: int = K) -> None:
        super().__init__()
        from train.losses.task import TaskLoss

        self.task = TaskLoss()
        self.extra_head = nn.Conv2d(width, num_classes, 1)
        self.nan_at, self.crash_at = nan_at, crash_at

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        from train.losses.task import seg_cross_entropy

        if step.iteration == self.crash_at:
            raise RuntimeError("simulated crash")
        terms = self.task(s, t, labels, step)
        terms["extra"] = 0.1 * seg_cross_entropy(self.extra_head(s.features["decoder"]), labels)
        if step.iteration == self.nan_at:
            terms["ce"] = terms["ce"] * float("nan")
        return terms
