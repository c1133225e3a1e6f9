"""Attention transfer, Zagoruyko & Komodakis (docs/methods.md, "AT").

    a(F) = L2-normalise over the h·w positions of mean_c F²,
    L_at = mean_{b,i} (a_S − a_T)²,

on the deep features (no adapter needed: channel counts may differ). The teacher's mean_c F² map is
resized to the student's size before normalising when the two differ. λ = 10000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from train.config import DistillConfig
from train.losses.base import DEEP, BuildContext, DistillMethod, feature, resize, stage
from train.models.output import SegOutput
from train.objective import StepInfo, teacher_output


def attention_map(f: torch.Tensor, size: tuple[int, int] | torch.Size | None = None) -> torch.Tensor:
    """B x (h·w) map `a(F)`: mean over channels of F², resized to `size` if given, L2-normalised."""
    a = f.float().pow(2).mean(1, keepdim=True)
    if size is not None:
        a = resize(a, size)
    return F.normalize(a.flatten(1), dim=1)


def at_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """`mean_{b,i} (a(F_S) − a(F_T))²`."""
    size = f_s.shape[-2:]
    return (attention_map(f_s) - attention_map(f_t, size)).pow(2).mean()


class AT(DistillMethod):
    """Term `at` = λ · L_at."""

    def __init__(self, weight: float = 10000.0) -> None:
        super().__init__()
        self.weight = weight

    @classmethod
    def from_config(cls, ctx: BuildContext) -> AT:
        stage(ctx.teacher, DEEP, "teacher", "at")
        return cls(ctx.cfg.at.weight)

    @classmethod
    def teacher_reads(cls, cfg: DistillConfig) -> list[str]:
        return [DEEP]

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        t = teacher_output(t)
        f_t = feature(t, DEEP, "teacher").detach()
        return {"at": self.weight * at_loss(feature(s, DEEP, "student"), f_t)}
