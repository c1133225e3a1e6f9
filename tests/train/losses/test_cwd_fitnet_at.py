import math

import pytest
import torch
import torch.nn.functional as F
from loss_refs import batch, kl, softmax, tiny_pair

from train.config import DistillConfig
from train.losses import build_objective
from train.losses.at import AT, REFERENCE_AREA, at_loss, attention_map
from train.losses.cwd import CWD, cwd_loss
from train.losses.fitnet import FitNet, fitnet_loss
from train.losses.objective import StepInfo
from train.models.output import SegOutput

STEP = StepInfo(iteration=0, progress=0.0)


def reference_cwd(zs: torch.Tensor, zt: torch.Tensor, tau: float) -> float:
    b, k, h, w = zs.shape
    total = 0.0
    for bi in range(b):
        for c in range(k):
            qt = softmax([float(zt[bi, c, i, j]) / tau for i in range(h) for j in range(w)])
            qs = softmax([float(zs[bi, c, i, j]) / tau for i in range(h) for j in range(w)])
            total += kl(qt, qs)
    return tau**2 * total / (b * k)


def test_cwd_one_channel_by_hand():
    # B = 1, K = 2, two positions. Channel 0: teacher (0, 0) -> q_T = (1/2, 1/2); student (0, ln 3)
    # -> q_S = (1/4, 3/4). Channel 1 identical in both (KL 0). Sum / (B·K) = KL / 2.
    zs = torch.tensor([[[[0.0, math.log(3.0)]], [[1.0, 2.0]]]])
    zt = torch.tensor([[[[0.0, 0.0]], [[1.0, 2.0]]]])
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert cwd_loss(zs, zt, 1.0).item() == pytest.approx(kl0 / 2, abs=1e-6)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_matches_loops(tau):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(2, 3, 2, 3, generator=g), torch.randn(2, 3, 2, 3, generator=g)
    assert cwd_loss(zs, zt, tau).item() == pytest.approx(reference_cwd(zs, zt, tau), rel=1e-5)


def test_cwd_module_logit_and_feature_terms():
    g = torch.Generator().manual_seed(2)
    s = SegOutput(torch.randn(2, 3, 4, 4, generator=g), features={"decoder": torch.randn(2, 5, 4, 4, generator=g)})
    t = SegOutput(torch.randn(2, 3, 4, 4, generator=g), features={"decoder": torch.randn(2, 7, 4, 4, generator=g)})
    m = CWD(tau=4.0, weight=3.0, feature_channels=(5, 7), feature_tau=2.0, feature_weight=50.0)
    terms = m(s, t, torch.zeros(2, 8, 8), STEP)
    assert terms["cwd"].item() == pytest.approx(3.0 * reference_cwd(s.logits, t.logits, 4.0), rel=1e-5)
    adapted = m.adapter(s.features["decoder"]).detach()
    expected = 50.0 * reference_cwd(adapted, t.features["decoder"], 2.0)
    assert terms["cwd_fea"].item() == pytest.approx(expected, rel=1e-5)
    assert "cwd_fea" not in CWD()(s, t, torch.zeros(2, 8, 8), STEP)


def test_cwd_feature_term_by_hand():
    # ψ sums the student's 2 channels into the teacher's 1: ψ(F_S) = (0, 4 ln 3) over 2 positions.
    # τ_f = 4: q_S = softmax(0, ln 3) = (1/4, 3/4), q_T = softmax(0, 0) = (1/2, 1/2);
    # KL = ½ ln 2 + ½ ln(2/3) = ½ ln(4/3); × τ² = 16, / (B·C) = 1  ->  8 ln(4/3); × λ_f = 50.
    m = CWD(feature_channels=(2, 1))
    with torch.no_grad():
        m.adapter.weight.fill_(1.0)
    f_s = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 3 * math.log(3.0)]]]])
    f_t = torch.zeros(1, 1, 1, 2)
    z = torch.zeros(1, 2, 1, 2)
    terms = m(SegOutput(z, features={"decoder": f_s}), SegOutput(z, features={"decoder": f_t}),
              torch.zeros(1, 1, 2), STEP)
    assert terms["cwd_fea"].item() == pytest.approx(50 * 8 * math.log(4 / 3), rel=1e-6)
    assert terms["cwd"].item() == 0.0  # equal logits


def test_cwd_default_is_the_logit_and_feature_recipe():
    student, teacher = tiny_pair()
    x, y = batch()
    s = student(x)
    with torch.no_grad():
        t = teacher(x)
    cfg = DistillConfig(method="cwd")
    assert (cfg.cwd.tau, cfg.cwd.weight, cfg.cwd.features) == (4.0, 3.0, True)
    assert (cfg.cwd.feature_tau, cfg.cwd.feature_weight) == (4.0, 50.0)
    obj = build_objective(cfg, student.feature_info, teacher.feature_info, 3, budget_is_time=False)
    assert set(obj(s, t, y, STEP)) == {"ce", "cwd", "cwd_fea"}
    assert CWD.teacher_reads(cfg) == ["logits", "decoder"]
    cfg.cwd.features = False
    obj = build_objective(cfg, student.feature_info, teacher.feature_info, 3, budget_is_time=False)
    assert set(obj(s, t, y, STEP)) == {"ce", "cwd"} and CWD.teacher_reads(cfg) == ["logits"]


def test_fitnet_by_hand_and_adapter_has_no_bias():
    assert fitnet_loss(torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[0.0, 4.0]]]])).item() == pytest.approx(2.5)
    m = FitNet(2, 3, weight=10.0)
    assert m.adapter.bias is None
    with torch.no_grad():
        m.adapter.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[:, :, None, None])
    f_s = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    f_t = torch.tensor([0.0, 2.0, 1.0]).view(1, 3, 1, 1)
    # φ(F_S) = (1, 2, 3); squared errors (1, 0, 4); mean 5/3; weight 10
    terms = m(SegOutput(torch.zeros(1, 2, 1, 1), features={"decoder": f_s}),
              SegOutput(torch.zeros(1, 2, 1, 1), features={"decoder": f_t}), torch.zeros(1, 1, 1), STEP)
    assert terms["fitnet"].item() == pytest.approx(10 * 5 / 3, rel=1e-6)


def test_at_by_hand():
    # student: 2 channels, 2 positions; mean_c F² = ((1+9)/2, (4+0)/2) = (5, 2) -> /√29
    f_s = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    a_s = [5 / math.sqrt(29), 2 / math.sqrt(29)]
    assert attention_map(f_s)[0].tolist() == pytest.approx(a_s, rel=1e-6)
    # teacher: 1 channel (2, 2): mean_c F² = (4, 4) -> (1/√2, 1/√2)
    f_t = torch.tensor([[[[2.0, 2.0]]]])
    # two unit vectors: Σ_i (a_S − a_T)² = 2 − 2 a_S·a_T = 2 − 2 (5 + 2)/(√29 √2) = 2 − 14/√58;
    # B = 1, divided by A_ref = 64·128 = 8192 (not by the 2 positions)
    expected = (2 - 14 / math.sqrt(58)) / 8192
    assert REFERENCE_AREA == 8192
    assert at_loss(f_s, f_t).item() == pytest.approx(expected, rel=1e-6)
    terms = AT(weight=10000.0)(SegOutput(torch.zeros(1, 2, 1, 2), features={"decoder": f_s}),
                               SegOutput(torch.zeros(1, 2, 1, 2), features={"decoder": f_t}),
                               torch.zeros(1, 1, 2), STEP)
    assert terms["at"].item() == pytest.approx(10000 * expected, rel=1e-5)


def test_at_weight_means_the_same_at_every_map_size():
    # The same pair of maps (nearest-upsampled: same content, 4x and 64x the positions) gives one
    # weighted term; the plain mean over positions would shrink 4x and 64x.
    g = torch.Generator().manual_seed(3)
    f_s, f_t = torch.randn(2, 3, 2, 3, generator=g), torch.randn(2, 5, 2, 3, generator=g)
    at = AT(weight=10000.0)

    def term(scale: int) -> float:
        s, t = (F.interpolate(f, scale_factor=scale, mode="nearest") for f in (f_s, f_t))
        out = at(SegOutput(torch.zeros(2, 2, 1, 1), features={"decoder": s}),
                 SegOutput(torch.zeros(2, 2, 1, 1), features={"decoder": t}), torch.zeros(2, 1, 1), STEP)
        return out["at"].item()

    assert term(2) == pytest.approx(term(1), rel=1e-5)
    assert term(8) == pytest.approx(term(1), rel=1e-5)
    assert term(1) > 0


def test_at_is_cirkds_plain_mean_on_its_64x128_maps():
    g = torch.Generator().manual_seed(4)
    f_s, f_t = torch.randn(1, 2, 64, 128, generator=g), torch.randn(1, 3, 64, 128, generator=g)

    def cirkd_at(f: torch.Tensor) -> torch.Tensor:  # mean over channels of F², flattened, unit norm
        a = f.pow(2).mean(1).view(f.shape[0], -1)
        return a / a.norm(dim=1, keepdim=True)

    plain_mean = (cirkd_at(f_s) - cirkd_at(f_t)).pow(2).mean().item()
    assert at_loss(f_s, f_t).item() == pytest.approx(plain_mean, rel=1e-5)


def test_feature_methods_send_no_gradient_to_the_teacher():
    f_s = torch.randn(1, 4, 3, 3, requires_grad=True)
    f_t = torch.randn(1, 6, 3, 3, requires_grad=True)
    z_t = torch.randn(1, 2, 3, 3, requires_grad=True)
    s = SegOutput(torch.randn(1, 2, 3, 3, requires_grad=True), features={"decoder": f_s})
    t = SegOutput(z_t, features={"decoder": f_t})
    for m in (CWD(feature_channels=(4, 6)), FitNet(4, 6), AT()):
        sum(m(s, t, torch.zeros(1, 3, 3), STEP).values()).backward()
    assert f_t.grad is None and z_t.grad is None
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
