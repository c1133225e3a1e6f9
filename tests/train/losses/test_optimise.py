"""Twenty optimiser steps on a fixed tiny batch lower every method's distillation loss (task excluded)."""

import pytest
import torch
from loss_refs import batch, tiny_pair

from train.config import DistillConfig
from train.losses import build_objective
from train.losses.objective import StepInfo

CASES = {
    "kd": {},
    "cwd": {"features": True},
    "fitnet": {},
    "at": {},
    "lfd": {"self_normalize": False, "kl_start": 0},
    "fkd": {},
}


@pytest.mark.parametrize("method", list(CASES))
def test_twenty_steps_lower_the_distillation_loss(method):
    student, teacher = tiny_pair()
    cfg = DistillConfig(method=method)
    for key, value in CASES[method].items():
        setattr(getattr(cfg, method), key, value)
    obj = build_objective(cfg, student.feature_info, teacher.feature_info, 3, budget_is_time=False)
    params = list(student.parameters()) + list(obj.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    x, y = batch(n=2, size=16)
    with torch.no_grad():
        t = teacher(x)
    history = []
    for i in range(21):
        terms = obj(student(x, detach_encoder=obj.detach_encoder), t, y, StepInfo(iteration=i, progress=i / 21))
        distill = sum(v for k, v in terms.items() if k not in ("ce", "aux_ce", "task"))
        history.append(distill.item())
        if i < 20:  # the distillation terms alone, so the task loss cannot mask their decrease
            opt.zero_grad()
            distill.backward()
            opt.step()
    assert history[-1] < 0.8 * history[0], history
