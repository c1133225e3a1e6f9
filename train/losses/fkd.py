"""FKD: feature-only distillation (docs/methods.md, "FKD"), after Cooper et al. 2025.

For each chosen (student stage, teacher stage) pair j, a 1x1 conv projector P_j (C_S→C_T, no bias) and

    L_fkd = (1/J) Σ_j (1/B) Σ_b mean_{c,i} (pool(P_j(F_S^j))_b − pool(F_T^j)_b)²,

pool = adaptive average pooling of the finer of the two maps to the coarser one's h x w (each side to
(min h, min w)), so any teacher layer can be paired with any student stage. `detach_encoder = True`:
the engine feeds detached encoder features to the decode head, so the task CE trains the head only and
the backbone learns from L_fkd alone. `fkd+kd` adds the logit KD term (kd.py). Default pair
(stage4, stage4), λ = 1; `python -m train.fkd_layers` ranks teacher layers by knowledge quality (quality.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import UserError
from train.config import DistillConfig
from train.losses.base import BuildContext, DistillMethod, conv1x1, feature
from train.losses.objective import StepInfo, teacher_output
from train.models.output import SegOutput, stage


def fkd_pair_loss(f_s_projected: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE, averaged over the batch, after pooling the finer map to the coarser one:
    both maps are adaptive-average-pooled to (min(h_s, h_t), min(w_s, w_t)), as Cooper et al.'s code
    aligns them, so a student finer than the teacher layer (or coarser) can be paired."""
    h = min(f_s_projected.shape[-2], f_t.shape[-2])
    w = min(f_s_projected.shape[-1], f_t.shape[-1])
    f_s = f_s_projected.float()
    if f_s.shape[-2:] != (h, w):
        f_s = F.adaptive_avg_pool2d(f_s, (h, w))
    f_t = f_t.float()
    if f_t.shape[-2:] != (h, w):
        f_t = F.adaptive_avg_pool2d(f_t, (h, w))
    per_sample = (f_s - f_t).pow(2).flatten(1).mean(1)
    return per_sample.mean()


class FKD(DistillMethod):
    """Term `fkd` = λ · L_fkd; the decode head sees detached encoder features."""

    detach_encoder = True

    def __init__(self, pairs: list[tuple[str, str]], student_channels: dict[str, int],
                 teacher_channels: dict[str, int], weight: float = 1.0) -> None:
        super().__init__()
        if not pairs:
            raise UserError("distill.fkd.pairs is empty; give at least one [student_stage, teacher_stage]")
        self.pairs = list(pairs)
        self.projectors = nn.ModuleList(conv1x1(student_channels[a], teacher_channels[b]) for a, b in pairs)
        self.weight = weight

    @classmethod
    def from_config(cls, ctx: BuildContext) -> FKD:
        pairs = []
        for pair in ctx.cfg.fkd.pairs:
            if len(pair) != 2:
                raise UserError(f"distill.fkd.pairs entry {pair!r} must be [student_stage, teacher_stage]")
            pairs.append((str(pair[0]), str(pair[1])))
        s_ch = {a: stage(ctx.student_info, a, "student", "fkd").channels for a, _ in pairs}
        t_ch = {b: stage(ctx.teacher, b, "teacher", "fkd").channels for _, b in pairs}
        return cls(pairs, s_ch, t_ch, ctx.cfg.fkd.weight)

    @classmethod
    def teacher_reads(cls, cfg: DistillConfig) -> list[str]:
        return list(dict.fromkeys(str(p[1]) for p in cfg.fkd.pairs if len(p) == 2))

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor | None, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        t = teacher_output(t)
        total = torch.stack([
            fkd_pair_loss(proj(feature(s, a, "student")), feature(t, b, "teacher").detach())
            for (a, b), proj in zip(self.pairs, self.projectors)
        ]).mean()
        return {"fkd": self.weight * total}
