"""Pixel-wise Hinton KD (docs/methods.md, "KD").

    L_kd = τ² · (1/N) Σ_pixels Σ_k p_T^τ (log p_T^τ − log p_S^τ),   p^τ = softmax(z/τ) over classes,

with N = B·h·w: every pixel counts (no ignore mask), as in CIRKD. z_T is resized to the student's logit
size when the two differ. Defaults τ = 1, λ = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from train.config import DistillConfig
from train.losses.base import BuildContext, DistillMethod, pixel_kl, teacher_logits
from train.losses.objective import StepInfo
from train.models.output import SegOutput


def kd_pixel_map(z_s: torch.Tensor, z_t: torch.Tensor, tau: float) -> torch.Tensor:
    """B x h x w map of `Σ_k p_T^τ (log p_T^τ − log p_S^τ)` (no τ² factor)."""
    return pixel_kl(F.log_softmax(z_t.float() / tau, 1), F.log_softmax(z_s.float() / tau, 1))


def kd_loss(z_s: torch.Tensor, z_t: torch.Tensor, tau: float) -> torch.Tensor:
    """`τ² · mean over pixels of KL(p_T^τ ‖ p_S^τ)` for B x K x h x w logits of the same size."""
    return tau**2 * kd_pixel_map(z_s, z_t, tau).mean()


class KD(DistillMethod):
    """Term `kd` = λ · L_kd."""

    def __init__(self, tau: float = 1.0, weight: float = 1.0) -> None:
        super().__init__()
        self.tau, self.weight = tau, weight

    @classmethod
    def from_config(cls, ctx: BuildContext) -> KD:
        return cls(ctx.cfg.kd.tau, ctx.cfg.kd.weight)

    @classmethod
    def teacher_reads(cls, cfg: DistillConfig) -> list[str]:
        return ["logits"]

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor | None, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        return {"kd": self.weight * kd_loss(s.logits, teacher_logits(s, t), self.tau)}
