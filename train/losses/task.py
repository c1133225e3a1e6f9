"""The task loss: cross-entropy of the upsampled student logits, plus 0.4 x CE of the auxiliary head.

`L = CE(up(z_S), y) + aux_weight * CE(up(aux_S), y)`, `up` = bilinear (align_corners=False) to the label
size, pixels labelled `ignore_index` (255) skipped. CE is the mean over valid pixels; a batch with no
valid pixel gives 0 (not NaN), so an all-ignore crop cannot stop a run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from runtime.metadata import IGNORE_INDEX
from train.losses.base import resize
from train.losses.objective import Objective, StepInfo
from train.models.output import SegOutput


def seg_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean CE over valid pixels of `logits` upsampled to the N x H x W `labels` (computed in fp32)."""
    z = resize(logits, labels.shape[-2:]).float()
    total = F.cross_entropy(z, labels, ignore_index=ignore_index, reduction="sum")
    valid = (labels != ignore_index).sum().clamp_min(1)
    return total / valid


class TaskLoss(Objective):
    """Supervised segmentation loss; the whole objective of teacher and baseline training.

    Terms: `ce` and, when the model has an auxiliary head, `aux_ce` (already multiplied by aux_weight).
    """

    def __init__(self, aux_weight: float = 0.4, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        terms = {"ce": seg_cross_entropy(s.logits, labels, self.ignore_index)}
        if s.aux is not None and self.aux_weight:
            terms["aux_ce"] = self.aux_weight * seg_cross_entropy(s.aux, labels, self.ignore_index)
        return terms
