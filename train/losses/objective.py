"""The training objective contract shared by the engine, teacher training and every distillation method.

An `Objective` is an nn.Module whose parameters are the training-only modules (adapters, auxiliary and
shared heads, projectors): they are optimised with the student, saved in `last.pt` for resuming, and
never in the deployable checkpoint. The engine does, per iteration:

    s = student(x, detach_encoder=objective.detach_encoder)
    t = teacher(x) if objective.needs_teacher else None      # teacher frozen, eval, under no_grad
    terms = objective(s, t, labels, step)                     # name -> weighted scalar
    loss = sum(terms.values())

With a transfer set, a batch is `step.labeled` labeled samples followed by unlabeled frames (labels all
255): `Combined` gives the task loss the labeled samples only and each method both parts
(train/losses/__init__.py). A method's `forward` gets `labels=None` for a part without labels.

so the task loss (CE + 0.4 aux CE) is one of the terms; methods may re-weight it (LFD self-normalise).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn

from runtime.errors import UserError
from train.models.output import SegOutput


@dataclass
class StepInfo:
    iteration: int  # 0-based iteration about to be taken
    progress: float  # fraction of the budget used, 0..1 (iterations or wall-clock)
    is_time_budget: bool = False
    labeled: int | None = None  # the batch's first `labeled` samples have labels, the rest are unlabeled frames; None: all


def require_teacher(method: str, has_teacher: bool) -> None:
    """The one check that a method reading the teacher has one (a checkpoint, or its cached outputs);
    made where a run is set up (train.distill, build_objective, the Trainer)."""
    if not has_teacher:
        raise UserError(f"method '{method}' needs a teacher: pass teacher=path/to/teacher.pt (distill.teacher; "
                        f"train one with python -m train.teacher --config ...)")


def check_teacher_classes(teacher_classes: int, student_classes: int) -> None:
    """The one check that teacher and student predict the same number of classes: from the checkpoints
    when the objective is built, and from the logits themselves when a method reads them."""
    if teacher_classes != student_classes:
        raise UserError(f"the teacher predicts {teacher_classes} classes but the student {student_classes}; distil "
                        f"with a teacher trained on the student's dataset and classes (model num_classes = "
                        f"{teacher_classes})")


def teacher_output(t: SegOutput | None) -> SegOutput:
    """The teacher's outputs inside a method that reads them. The Trainer passes them whenever
    `needs_teacher` (require_teacher checked that at set-up), so None here is a bug, not bad input."""
    if t is None:
        raise RuntimeError("a teacher-reading objective got no teacher outputs; the Trainer must pass them")
    return t


class Objective(nn.Module, abc.ABC):
    needs_teacher: bool = False
    detach_encoder: bool = False  # FKD: the decode head sees detached encoder features

    @abc.abstractmethod
    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor | None, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        """Named, already weighted scalar loss terms; the engine sums them. `labels` is None for a batch of
        unlabeled frames (only distillation methods are called with None)."""
