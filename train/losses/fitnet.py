"""FitNet feature regression (docs/methods.md, "FitNet").

    L_fitnet = mean((φ(F_S) − F_T)²),   φ a 1x1 conv C_S→C_T without bias,

over all elements of the deep features (F_T resized to the student's size if needed). λ = 10.
"""

from __future__ import annotations

import torch

from train.config import DistillConfig
from train.losses.base import DEEP, BuildContext, DistillMethod, conv1x1, feature, resize
from train.losses.objective import StepInfo, teacher_output
from train.models.output import SegOutput, stage


def fitnet_loss(f_s_adapted: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """`mean((φ(F_S) − F_T)²)` for already adapted student features of the teacher's shape."""
    return (f_s_adapted.float() - f_t.float()).pow(2).mean()


class FitNet(DistillMethod):
    """Term `fitnet` = λ · L_fitnet."""

    def __init__(self, student_channels: int, teacher_channels: int, weight: float = 10.0) -> None:
        super().__init__()
        self.adapter = conv1x1(student_channels, teacher_channels)
        self.weight = weight

    @classmethod
    def from_config(cls, ctx: BuildContext) -> FitNet:
        cs = stage(ctx.student_info, DEEP, "student", "fitnet").channels
        ct = stage(ctx.teacher, DEEP, "teacher", "fitnet").channels
        return cls(cs, ct, ctx.cfg.fitnet.weight)

    @classmethod
    def teacher_reads(cls, cfg: DistillConfig) -> list[str]:
        return [DEEP]

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor | None, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        t = teacher_output(t)
        f_s = self.adapter(feature(s, DEEP, "student"))
        f_t = resize(feature(t, DEEP, "teacher").detach(), f_s.shape[-2:])
        return {"fitnet": self.weight * fitnet_loss(f_s, f_t)}
