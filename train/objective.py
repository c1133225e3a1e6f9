"""The training objective contract shared by the engine, teacher training and every distillation method.

An `Objective` is an nn.Module whose parameters are the training-only modules (adapters, auxiliary and
shared heads, projectors): they are optimised with the student, saved in `last.pt` for resuming, and
never in the deployable checkpoint. The engine does, per iteration:

    s = student(x, detach_encoder=objective.detach_encoder)
    t = teacher(x) if objective.needs_teacher else None      # teacher frozen, eval, under no_grad
    terms = objective(s, t, labels, step)                     # name -> weighted scalar
    loss = sum(terms.values())

so the task loss (CE + 0.4 aux CE) is one of the terms; methods may re-weight it (LFD self-normalise).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn

from train.models.output import SegOutput


@dataclass
class StepInfo:
    iteration: int  # 0-based iteration about to be taken
    progress: float  # fraction of the budget used, 0..1 (iterations or wall-clock)
    is_time_budget: bool = False


class Objective(nn.Module, abc.ABC):
    needs_teacher: bool = False
    detach_encoder: bool = False  # FKD: the decode head sees detached encoder features

    @abc.abstractmethod
    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        """Named, already weighted scalar loss terms; the engine sums them."""
