import pytest
import torch
from loss_refs import batch, tiny_pair

from train.losses.fkd import FKD, fkd_pair_loss
from train.losses.objective import StepInfo
from train.losses.task import TaskLoss
from train.models.output import SegOutput

STEP = StepInfo(iteration=0, progress=0.0)


def test_pair_loss_pools_the_teacher_and_averages_per_sample():
    # student 1x1 map per sample; teacher 2x2 pooled to its mean
    fs = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    ft = torch.tensor([[1.0, 3.0, 5.0, 7.0], [0.0, 0.0, 2.0, 2.0]]).view(2, 1, 2, 2)
    # sample 0: (1 - 4)² = 9; sample 1: (0 - 1)² = 1 -> 5
    assert fkd_pair_loss(fs, ft).item() == pytest.approx(5.0)


def test_fkd_averages_pairs_and_weights():
    m = FKD([("a", "x"), ("b", "y")], {"a": 2, "b": 1}, {"x": 1, "y": 1}, weight=3.0)
    with torch.no_grad():
        m.projectors[0].weight.copy_(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))
        m.projectors[1].weight.fill_(2.0)
    s = SegOutput(torch.zeros(1, 2, 1, 1), features={"a": torch.tensor([1.0, 2.0]).view(1, 2, 1, 1),
                                                     "b": torch.ones(1, 1, 1, 1)})
    t = SegOutput(torch.zeros(1, 2, 1, 1), features={"x": torch.zeros(1, 1, 2, 2), "y": torch.ones(1, 1, 1, 1)})
    # pair a-x: (3 - 0)² = 9; pair b-y: (2 - 1)² = 1; mean 5; weight 3
    assert m(s, t, torch.zeros(1, 1, 1), STEP)["fkd"].item() == pytest.approx(15.0)


def test_ce_trains_only_the_head_and_fkd_the_encoder():
    student, teacher = tiny_pair()
    fkd = FKD([("stage4", "stage4")], {"stage4": 8}, {"stage4": 12})
    assert fkd.detach_encoder and fkd.needs_teacher
    x, y = batch()
    s = student(x, detach_encoder=fkd.detach_encoder)
    with torch.no_grad():
        t = teacher(x)
    TaskLoss()(s, None, y, STEP)["ce"].backward(retain_graph=True)
    assert all(p.grad is None for p in student.encoder.parameters())
    assert student.classifier.weight.grad.abs().sum() > 0
    student.zero_grad(set_to_none=True)
    fkd(s, t, y, STEP)["fkd"].backward()
    assert all(p.grad is not None for p in student.encoder.parameters())
    assert student.classifier.weight.grad is None and student.decoder[0].weight.grad is None
