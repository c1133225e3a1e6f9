"""What every distillation method is built on: the `DistillMethod` base class and its `BuildContext`,
and the tensor helpers the methods (and the engine and teacher cache) share: feature lookup with clear
errors, bilinear resizing, nearest label downsampling, the pixel KL and the 1x1 adapters."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import UserError
from train.config import DistillConfig
from train.losses.objective import Objective, check_teacher_classes, teacher_output
from train.models.output import FeatureInfo, SegOutput

DEEP = "decoder"  # each model's deep feature, F in docs/methods.md (the classifier's input; LR-ASPP: its high branch)


@dataclass
class BuildContext:
    """What a method needs to build its training-only modules (adapters, heads)."""

    cfg: DistillConfig
    student_info: list[FeatureInfo]
    teacher_info: list[FeatureInfo] | None
    num_classes: int
    budget_is_time: bool = False

    @property
    def teacher(self) -> list[FeatureInfo]:
        """The teacher's stages; build_objective has checked that a teacher-reading method has a teacher."""
        if self.teacher_info is None:
            raise RuntimeError("a teacher-reading method was built without the teacher's stages")
        return self.teacher_info


class DistillMethod(Objective):
    """One distillation method: its named terms (the task loss is added by `Combined`)."""

    needs_teacher = True
    label_terms: tuple[str, ...] = ()  # terms that need labels (0 on unlabeled frames): the labeled part's value only

    @classmethod
    @abc.abstractmethod
    def from_config(cls, ctx: BuildContext) -> DistillMethod:
        """Build from the config section and the models' feature contracts (UserError on bad stages)."""

    @classmethod
    @abc.abstractmethod
    def teacher_reads(cls, cfg: DistillConfig) -> list[str]:
        """The teacher outputs this method reads: `logits` and/or feature names (what a cache stores)."""


def feature(out: SegOutput, name: str, who: str) -> torch.Tensor:
    """`out.features[name]`, or a clear error when the model did not return it."""
    f = out.features.get(name)
    if f is None:
        raise UserError(f"the {who} model returned no feature '{name}' (it returned "
                        f"{', '.join(out.features) or 'none'}); check the feature stages in distill.*")
    return f


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of N x C x h x w to `size`; a no-op when it already has that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def teacher_logits(s: SegOutput, t: SegOutput | None) -> torch.Tensor:
    """z_T at the student's logit size (float32), checking that both models predict the same classes."""
    t = teacher_output(t)
    check_teacher_classes(int(t.logits.shape[1]), int(s.logits.shape[1]))
    return resize(t.logits.detach().float(), s.logits.shape[-2:])


def downsample_labels(labels: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Nearest-neighbour downsampling of N x H x W integer labels to `size` (N x h x w, int64)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def pixel_kl(log_p: torch.Tensor, log_q: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """`Σ_dim p (log p − log q)` from log-probabilities (the reduced dimension is removed)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim)


def conv1x1(c_in: int, c_out: int, bn: bool = False) -> nn.Module:
    """A 1x1 conv adapter without bias, optionally followed by BatchNorm (LFD's φ)."""
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out)) if bn else conv


def head(c_in: int, mid: int, num_classes: int) -> nn.Sequential:
    """3x3 conv-BN-ReLU-1x1 conv -> K: LFD's auxiliary heads A_l and shared head H."""
    return nn.Sequential(
        nn.Conv2d(c_in, mid, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, num_classes, 1),
    )


def zero(ref: torch.Tensor) -> torch.Tensor:
    return ref.new_zeros((), dtype=torch.float32)
