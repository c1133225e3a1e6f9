"""Attention transfer, Zagoruyko & Komodakis (docs/methods.md, "AT"), on the deep features F (no
adapter needed: the channel axis is averaged away, so channel counts may differ).

1. `A(F) = mean_c F²`, one h x w map per image (exponent 2); the teacher's map is resized bilinearly
   to the student's h x w when the two differ.
2. `a(F)` = A(F) flattened and L2-normalised over its h·w positions.
3. `L_at = Σ_{b,i} (a(F_S) − a(F_T))² / (B · A_ref) = (h·w / A_ref) · mean_{b,i} (a(F_S) − a(F_T))²`,
   with the reference area `A_ref = 64 · 128` positions.

Why A_ref: a(F_S) and a(F_T) are unit vectors, so their squared distance Σ_i depends on the maps'
content and hardly on how finely it is sampled (not at all for a nearest upsampling), and the plain
mean over h·w positions shrinks as 1/(h·w). Dividing by the fixed A_ref instead keeps one λ meaning
the same at every map size. A_ref is the map size CIRKD's λ = 10000 was set on (a 512x1024 crop at
stride 8); there L_at is exactly CIRKD's mean. Term `at` = λ · L_at, λ = 10000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from train.config import DistillConfig
from train.losses.base import DEEP, BuildContext, DistillMethod, feature, resize
from train.losses.objective import StepInfo, teacher_output
from train.models.output import SegOutput, stage

# A_ref: the positions of CIRKD's attention maps (512x1024 crop, stride 8 -> 64 x 128), the size at
# which its weight λ = 10000 was tuned; L_at equals CIRKD's plain mean there.
REFERENCE_AREA = 64 * 128


def attention_map(f: torch.Tensor, size: tuple[int, int] | torch.Size | None = None) -> torch.Tensor:
    """B x (h·w) map `a(F)`: mean over channels of F² (1), resized to `size` if given, L2-normalised (2)."""
    a = f.float().pow(2).mean(1, keepdim=True)
    if size is not None:
        a = resize(a, size)
    return F.normalize(a.flatten(1), dim=1)


def at_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """(3) `Σ_{b,i} (a(F_S) − a(F_T))² / (B · A_ref)`, at the student's h x w."""
    size = f_s.shape[-2:]
    diff = (attention_map(f_s) - attention_map(f_t, size)).pow(2)
    return diff.sum() / (f_s.shape[0] * REFERENCE_AREA)


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

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor | None, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        t = teacher_output(t)
        f_t = feature(t, DEEP, "teacher").detach()
        return {"at": self.weight * at_loss(feature(s, DEEP, "student"), f_t)}
