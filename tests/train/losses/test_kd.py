import math

import pytest
import torch
from loss_refs import kl, softmax

from runtime.errors import UserError
from train.losses.kd import KD, kd_loss
from train.losses.objective import StepInfo
from train.models.output import SegOutput

STEP = StepInfo(iteration=0, progress=0.0)


def reference_kd(zs: torch.Tensor, zt: torch.Tensor, tau: float) -> float:
    b, k, h, w = zs.shape
    total = 0.0
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                pt = softmax([float(zt[bi, c, i, j]) / tau for c in range(k)])
                ps = softmax([float(zs[bi, c, i, j]) / tau for c in range(k)])
                total += kl(pt, ps)
    return tau**2 * total / (b * h * w)


def test_kd_two_pixels_by_hand():
    # logits K=2 x (1 x 2 pixels). Pixel 1: both (0, 1), KL 0. Pixel 2: z_T = (0, 0) -> p_T = (1/2, 1/2),
    # z_S = (0, ln 3) -> p_S = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3). Mean over N = 2 pixels.
    zs = torch.tensor([[[[0.0, 0.0]], [[1.0, math.log(3.0)]]]])
    zt = torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]]]])
    expected = 0.5 * (0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0))
    assert kd_loss(zs, zt, 1.0).item() == pytest.approx(expected, abs=1e-6)
    # τ = 2 halves the logits and multiplies by 4: pixel 2 then has p_S = softmax(0, ln 3 / 2) = (1/(1+√3), √3/(1+√3))
    ps = [1 / (1 + 3**0.5), 3**0.5 / (1 + 3**0.5)]
    expected_t2 = 4 * 0.5 * (0.5 * math.log(0.5 / ps[0]) + 0.5 * math.log(0.5 / ps[1]))
    assert kd_loss(zs, zt, 2.0).item() == pytest.approx(expected_t2, abs=1e-6)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_kd_matches_loops_with_tau_squared(tau):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(2, 4, 3, 2, generator=g), torch.randn(2, 4, 3, 2, generator=g)
    assert kd_loss(zs, zt, tau).item() == pytest.approx(reference_kd(zs, zt, tau), rel=1e-5)


def test_kd_module_weights_resizes_teacher_and_checks_classes():
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(1, 3, 4, 4, generator=g, requires_grad=True)
    zt = torch.randn(1, 3, 4, 4, generator=g)
    terms = KD(tau=2.0, weight=3.0)(SegOutput(zs), SegOutput(zt), torch.zeros(1, 8, 8), STEP)
    assert terms["kd"].item() == pytest.approx(3.0 * reference_kd(zs.detach(), zt, 2.0), rel=1e-5)
    # a teacher at half the resolution is upsampled to the student's size instead of failing
    small = KD()(SegOutput(zs), SegOutput(zt[:, :, ::2, ::2]), torch.zeros(1, 8, 8), STEP)["kd"]
    assert torch.isfinite(small)
    with pytest.raises(UserError, match="teacher predicts 5 classes but the student 3"):
        KD()(SegOutput(zs), SegOutput(torch.randn(1, 5, 4, 4)), torch.zeros(1, 8, 8), STEP)


def test_kd_sends_no_gradient_to_the_teacher():
    zs = torch.randn(1, 3, 2, 2, requires_grad=True)
    zt = torch.randn(1, 3, 2, 2, requires_grad=True)
    KD()(SegOutput(zs), SegOutput(zt), torch.zeros(1, 2, 2), STEP)["kd"].backward()
    assert zt.grad is None and zs.grad is not None and zs.grad.abs().sum() > 0
