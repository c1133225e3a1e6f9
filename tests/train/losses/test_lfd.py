import math

import pytest
import torch
import torch.nn.functional as F
from loss_refs import kl, softmax

from train.config import LFDConfig
from train.losses.kd import kd_loss
from train.losses.lfd import LFD, aux_head_loss, class_weights, logit_mask, masked_feature_loss, shared_kl
from train.losses.objective import StepInfo
from train.models.output import SegOutput

K = 3


def log_probs(z: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(z, 1)


def test_mask_by_hand_averages_one_on_valid_and_zero_on_ignored():
    g = torch.Generator().manual_seed(0)
    zt, zs = torch.randn(2, K, 1, 4, generator=g), torch.randn(2, K, 1, 4, generator=g)
    valid = torch.tensor([[[True, True, False, True]], [[False, True, True, False]]])
    beta = 0.5
    m = logit_mask(log_probs(zt), log_probs(zs), valid, beta, "kl")
    for b in range(2):
        d = [kl(softmax(zt[b, :, 0, i].tolist()), softmax(zs[b, :, 0, i].tolist())) for i in range(4)]
        vi = [i for i in range(4) if valid[b, 0, i]]
        mean_d = sum(d[i] for i in vi) / len(vi)
        for i in range(4):
            expected = (1 - beta) + beta * d[i] / mean_d if i in vi else 0.0
            assert m[b, 0, i].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert sum(m[b, 0, i].item() for i in vi) / len(vi) == pytest.approx(1.0, rel=1e-6)
    # entropy variant: d = teacher entropy; uniform: 1 on valid, 0 elsewhere
    me = logit_mask(log_probs(zt), log_probs(zs), valid, 1.0, "entropy")
    ent = [-sum(p * math.log(p) for p in softmax(zt[0, :, 0, i].tolist())) for i in range(4)]
    mean_e = (ent[0] + ent[1] + ent[3]) / 3
    assert me[0, 0].tolist() == pytest.approx([ent[0] / mean_e, ent[1] / mean_e, 0.0, ent[3] / mean_e], rel=1e-5)
    mu = logit_mask(log_probs(zt), log_probs(zs), valid, 0.5, "uniform")
    assert torch.equal(mu, valid.float())
    # an image with no valid pixel is all zeros, not NaN
    none = logit_mask(log_probs(zt), log_probs(zs), torch.zeros_like(valid), 0.5, "kl")
    assert torch.equal(none, torch.zeros_like(none))


def test_class_weights_by_hand_average_one():
    pt = torch.tensor([[0.6, 0.2], [0.3, 0.3], [0.1, 0.5]]).view(1, 3, 1, 2)
    ps = torch.tensor([[0.2, 0.2], [0.5, 0.3], [0.3, 0.5]]).view(1, 3, 1, 2)
    valid = torch.tensor([[[True, False]]])
    # only pixel 0 counts: c = (0.4, 0.2, 0.2), w = 3 c / 0.8 = (1.5, 0.75, 0.75)
    w = class_weights(pt, ps, valid)
    assert w[0].tolist() == pytest.approx([1.5, 0.75, 0.75], rel=1e-6)
    assert w.mean().item() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(3)
    pt, ps = torch.rand(4, 5, 3, 3, generator=g).softmax(1), torch.rand(4, 5, 3, 3, generator=g).softmax(1)
    w = class_weights(pt, ps, torch.rand(4, 3, 3, generator=g) > 0.3)
    assert w.mean(1).tolist() == pytest.approx([1.0] * 4, rel=1e-6)
    assert torch.equal(class_weights(pt, pt, torch.ones(4, 3, 3, dtype=torch.bool)), torch.ones(4, 5))


def standardize_loops(f: torch.Tensor) -> list[list[float]]:
    """Per channel: (x - mean) / sqrt(var + 1e-5) over (B, h, w), biased variance; flat per channel."""
    out = []
    for c in range(f.shape[1]):
        xs = f[:, c].flatten().tolist()
        mu = sum(xs) / len(xs)
        var = sum((x - mu) ** 2 for x in xs) / len(xs)
        out.append([(x - mu) / math.sqrt(var + 1e-5) for x in xs])
    return out


def test_masked_feature_loss_by_loops():
    g = torch.Generator().manual_seed(1)
    fs, ft = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 2, 2, generator=g) * 4 + 1
    mask = torch.rand(2, 2, 2, generator=g)
    num_valid = 5
    ns, nt = standardize_loops(fs), standardize_loops(ft)
    flat_m = mask.flatten().tolist()  # (b, i, j) order matches each channel's flattening
    total = sum(flat_m[p] * sum((ns[c][p] - nt[c][p]) ** 2 for c in range(3)) for p in range(8))
    got = masked_feature_loss(fs, ft, mask, torch.tensor(num_valid))
    assert got.item() == pytest.approx(total / (3 * num_valid), rel=1e-5)
    # ν removes per-channel scale and shift: a standardised copy costs nothing
    assert masked_feature_loss(ft * 3 - 2, ft, mask).item() == pytest.approx(0.0, abs=1e-5)


def test_aux_head_loss_by_loops():
    g = torch.Generator().manual_seed(2)
    a, zbar = torch.randn(1, K, 1, 3, generator=g), torch.randn(1, K, 1, 3, generator=g)
    w = torch.tensor([[0.5, 1.0, 1.5]])
    valid = torch.tensor([[[True, False, True]]])
    expected = 0.0
    for i in (0, 2):
        pbar, q = softmax(zbar[0, :, 0, i].tolist()), softmax(a[0, :, 0, i].tolist())
        expected += sum(w[0, k].item() * pbar[k] * (math.log(pbar[k]) - math.log(q[k])) for k in range(K))
    got = aux_head_loss(a, log_probs(zbar), w, valid, torch.tensor(2))
    assert got.item() == pytest.approx(expected / 2, rel=1e-5)


def test_shared_kl_tau_squared_mean_over_all_pixels():
    g = torch.Generator().manual_seed(4)
    ht, hs = torch.randn(1, K, 1, 2, generator=g), torch.randn(1, K, 1, 2, generator=g)
    tau = 2.0
    expected = tau**2 * sum(kl(softmax((ht[0, :, 0, i] / tau).tolist()), softmax((hs[0, :, 0, i] / tau).tolist()))
                            for i in range(2)) / 2
    assert shared_kl(ht, hs, tau).item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------------
# The module

S_CH = {"decoder": 6, "stage2": 4, "stage3": 5}
T_CH = {"decoder": 8, "stage3": 7}


def outputs(seed: int = 0, grad: bool = True) -> tuple[SegOutput, SegOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, req: bool = grad) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(req)

    s = SegOutput(r(2, K, 4, 4), features={"decoder": r(2, 6, 4, 4), "stage2": r(2, 4, 8, 8), "stage3": r(2, 5, 4, 4)})
    t = SegOutput(r(2, K, 4, 4), features={"decoder": r(2, 8, 4, 4), "stage3": r(2, 7, 4, 4)})
    y = torch.randint(0, K, (2, 16, 16), generator=g)
    y[0, :8] = 255
    return s, t, y


def test_lfd_terms_gradients_and_shared_head_isolation():
    torch.manual_seed(0)
    lfd = LFD(LFDConfig(kl_start=0), S_CH, T_CH, K)
    s, t, y = outputs()
    terms = lfd(s, t, y, StepInfo(iteration=0, progress=0.0))
    assert list(terms) == ["fea", "aux", "shared_H", "shared", "kl"]
    assert terms["fea"].item() == pytest.approx(1.0)  # self-normalised
    assert terms["kl"].item() == pytest.approx(kd_loss(s.logits, t.logits, 1.0).item(), rel=1e-5)

    # L_shared: gradient into φ and the student, none into H
    terms["shared"].backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in lfd.shared_head.parameters())
    assert lfd.phi[0].weight.grad.abs().sum() > 0 and s.features["decoder"].grad.abs().sum() > 0
    # L_H: gradient into H only
    lfd.zero_grad(set_to_none=True)
    s.features["decoder"].grad = None
    terms["shared_H"].backward(retain_graph=True)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lfd.shared_head.parameters())
    assert lfd.phi[0].weight.grad is None and s.features["decoder"].grad is None
    # the total sends nothing into the teacher
    sum(terms.values()).backward()
    assert t.logits.grad is None and all(f.grad is None for f in t.features.values())
    assert all(s.features[n].grad.abs().sum() > 0 for n in S_CH) and s.logits.grad.abs().sum() > 0


def test_shared_head_batchnorm_statistics_come_from_the_teacher_path_only():
    lfd = LFD(LFDConfig(), S_CH, T_CH, K)
    s, t, y = outputs(grad=False)
    lfd(s, t, y, StepInfo(iteration=0, progress=0.0))
    conv, bn = lfd.shared_head[0], lfd.shared_head[1]
    with torch.no_grad():
        expected = 0.1 * conv(t.features["decoder"]).mean((0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)


def test_lfd_parts_without_normalisation_match_the_functions():
    cfg = LFDConfig(self_normalize=False, w_fea=2.0, w_aux=0.5, w_shared=3.0, aux_stages=["stage2"],
                    aux_target="teacher", mask="uniform")
    lfd = LFD(cfg, S_CH, T_CH, K).eval()  # eval: BN uses running stats, so φ and A_l are fixed maps
    s, t, y = outputs(grad=False)
    terms = lfd(s, t, y, StepInfo(iteration=0, progress=0.0))
    y4 = y[:, ::4, ::4]  # nearest downsampling 16 -> 4 picks every 4th pixel
    valid = y4 != 255
    fea = masked_feature_loss(lfd.phi(s.features["decoder"]), t.features["decoder"], valid.float(), valid.sum())
    assert terms["fea"].item() == pytest.approx(2.0 * fea.item(), rel=1e-5)
    lt, ls = log_probs(t.logits), log_probs(s.logits)
    a = F.interpolate(lfd.aux_heads["stage2"](s.features["stage2"]), size=(4, 4), mode="bilinear")
    aux = aux_head_loss(a, lt, class_weights(lt.exp(), ls.exp(), valid), valid, valid.sum())
    assert terms["aux"].item() == pytest.approx(0.5 * aux.item(), rel=1e-5)
    ht = lfd.shared_head(t.features["decoder"])
    ce = F.cross_entropy(ht, y4, ignore_index=255)
    assert terms["shared_H"].item() == pytest.approx(3.0 * ce.item(), rel=1e-5)
    hs = lfd.shared_head(lfd.phi(s.features["decoder"]))
    assert terms["shared"].item() == pytest.approx(3.0 * shared_kl(ht, hs, 1.0).item(), rel=1e-5)
    assert terms["kl"].item() == 0.0  # iteration 0 < 1000


@pytest.mark.parametrize(("kl_start", "step", "active"), [
    (None, StepInfo(999, 0.5), False),
    (None, StepInfo(1000, 0.5), True),
    (None, StepInfo(5000, 0.049, is_time_budget=True), False),
    (None, StepInfo(3, 0.05, is_time_budget=True), True),
    (10, StepInfo(9, 0.9, is_time_budget=True), False),
    (10, StepInfo(10, 0.0), True),
])
def test_kl_warm_up(kl_start, step, active):
    lfd = LFD(LFDConfig(kl_start=kl_start, w_kl=2.0), S_CH, T_CH, K, budget_is_time=step.is_time_budget)
    s, t, y = outputs(grad=False)
    kl_term = lfd(s, t, y, step)["kl"]
    expected = 2.0 * kd_loss(s.logits, t.logits, 1.0).item() if active else 0.0
    assert kl_term.item() == pytest.approx(expected, rel=1e-5)


def test_extra_pairs_add_a_term_with_their_own_adapter():
    cfg = LFDConfig(self_normalize=False, extra_pairs=[["stage2", "stage3"]])
    lfd = LFD(cfg, S_CH, T_CH, K)
    base = LFD(LFDConfig(self_normalize=False), S_CH, T_CH, K)
    base.load_state_dict({k: v for k, v in lfd.state_dict().items() if not k.startswith("extra_phi")})
    assert lfd.extra_phi[0][0].weight.shape == (7, 4, 1, 1)
    s, t, y = outputs()
    with_extra = lfd(s, t, y, StepInfo(0, 0.0))["fea"]
    without = base(s, t, y, StepInfo(0, 0.0))["fea"]
    assert with_extra.item() > without.item() > 0
    with_extra.backward()
    assert lfd.extra_phi[0][0].weight.grad.abs().sum() > 0 and s.features["stage2"].grad.abs().sum() > 0
