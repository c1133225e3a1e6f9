"""Channel-wise distillation, Shu et al. 2021 (docs/methods.md, "CWD").

For each image b and channel k of a B x K x h x w map z, `q = softmax over the h·w positions of z/τ`;

1. `L_cwd(z_S, z_T) = τ² · Σ_{b,k,i} q_T (log q_T − log q_S) / (B·K)`.
2. On the logits (z_T resized to z_S's size): term `cwd` = λ · L_cwd(z_S, z_T), τ = 4, λ = 3.
3. With `features` (the default): term `cwd_fea` = λ_f · L_cwd(ψ(F_S), F_T) on the deep features,
   ψ a 1x1 conv C_S→C_T (no bias, no BN), F_T resized to ψ(F_S)'s size; τ_f = 4, λ_f = 50.

Steps 2 and 3 together are CIRKD's CWD recipe; its CWD runs also add KD with weight 1 (here
`method=kd+cwd`) and a small adversarial term, which this code does not implement. `features=false`
keeps the logit term alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from train.config import DistillConfig
from train.losses.base import (
    DEEP,
    BuildContext,
    DistillMethod,
    conv1x1,
    feature,
    pixel_kl,
    resize,
    teacher_logits,
)
from train.losses.objective import StepInfo, teacher_output
from train.models.output import SegOutput, stage


def cwd_loss(z_s: torch.Tensor, z_t: torch.Tensor, tau: float) -> torch.Tensor:
    """(1) `τ² · Σ_{b,k} KL(q_T ‖ q_S) / (B·K)` with q the spatial softmax of each B x K channel."""
    b, k = z_s.shape[:2]
    log_qs = F.log_softmax(z_s.float().flatten(2) / tau, 2)
    log_qt = F.log_softmax(z_t.float().flatten(2) / tau, 2)
    return tau**2 * pixel_kl(log_qt, log_qs, dim=2).sum() / (b * k)


class CWD(DistillMethod):
    """Terms `cwd` (2, logits) and, with an adapter ψ (`features`, the default config), `cwd_fea`
    (3, adapted deep features)."""

    def __init__(self, tau: float = 4.0, weight: float = 3.0, feature_channels: tuple[int, int] | None = None,
                 feature_tau: float = 4.0, feature_weight: float = 50.0) -> None:
        super().__init__()
        self.tau, self.weight = tau, weight
        self.feature_tau, self.feature_weight = feature_tau, feature_weight
        self.adapter = conv1x1(*feature_channels) if feature_channels is not None else None

    @classmethod
    def from_config(cls, ctx: BuildContext) -> CWD:
        c = ctx.cfg.cwd
        channels = None
        if c.features:
            cs = stage(ctx.student_info, DEEP, "student", "cwd features").channels
            ct = stage(ctx.teacher, DEEP, "teacher", "cwd features").channels
            channels = (cs, ct)
        return cls(c.tau, c.weight, channels, c.feature_tau, c.feature_weight)

    @classmethod
    def teacher_reads(cls, cfg: DistillConfig) -> list[str]:
        return ["logits", DEEP] if cfg.cwd.features else ["logits"]

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor | None, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        terms = {"cwd": self.weight * cwd_loss(s.logits, teacher_logits(s, t), self.tau)}
        if self.adapter is not None:
            f_s = self.adapter(feature(s, DEEP, "student"))
            f_t = resize(feature(teacher_output(t), DEEP, "teacher").detach(), f_s.shape[-2:])
            terms["cwd_fea"] = self.feature_weight * cwd_loss(f_s, f_t, self.feature_tau)
        return terms
