import pytest
import torch
from loss_refs import batch, tiny_pair

from runtime.errors import UserError
from train.config import DistillConfig
from train.losses import METHODS, Combined, build_objective, parse_method
from train.losses.objective import StepInfo

STEP = StepInfo(iteration=0, progress=0.0)


def build(method: str, **kw):
    student, teacher = tiny_pair()
    cfg = DistillConfig(method=method)
    for key, value in kw.items():
        section, field = key.split("__")
        setattr(getattr(cfg, section), field, value)
    obj = build_objective(cfg, student.feature_info, teacher.feature_info, 3, budget_is_time=False)
    return obj, student, teacher


def run(obj: Combined, student, teacher) -> dict[str, torch.Tensor]:
    x, y = batch()
    s = student(x, detach_encoder=obj.detach_encoder)
    with torch.no_grad():
        t = teacher(x) if obj.needs_teacher else None
    return obj(s, t, y, STEP)


def test_method_strings_compose():
    assert parse_method("baseline") == [] and parse_method(" KD + cwd ") == ["kd", "cwd"]
    obj, student, teacher = build("baseline")
    assert not obj.needs_teacher and not obj.detach_encoder and list(run(obj, student, teacher)) == ["ce"]
    obj, student, teacher = build("kd+cwd", cwd__features=True)
    assert obj.needs_teacher and set(run(obj, student, teacher)) == {"ce", "kd", "cwd", "cwd_fea"}
    obj, student, teacher = build("fkd+kd")
    assert obj.detach_encoder and set(run(obj, student, teacher)) == {"ce", "fkd", "kd"}
    obj, student, teacher = build("fitnet+at")
    assert set(run(obj, student, teacher)) == {"ce", "fitnet", "at"}


def test_lfd_normalises_the_task_and_keeps_raw_values_for_logs():
    obj, student, teacher = build("lfd", lfd__aux_stages=["stage2", "stage3"])
    terms = run(obj, student, teacher)
    assert list(terms) == ["task", "fea", "aux", "shared_H", "shared", "kl"]
    assert terms["task"].item() == pytest.approx(1.0) and obj.last_raw["task"].item() > 0.5
    assert "fea" in obj.last_raw
    # the training-only modules are the objective's parameters (saved in last.pt, not the deployable model)
    names = {n.split(".")[2] for n, _ in obj.named_parameters()}
    assert names == {"phi", "aux_heads", "shared_head"}
    obj, student, teacher = build("lfd", lfd__self_normalize=False)
    assert set(run(obj, student, teacher)) >= {"ce", "fea"}


def test_lfd_plus_kd_as_the_authors_script_normalises_task_kd_and_fea():
    obj, student, teacher = build("lfd+kd", lfd__normalize=["task", "kd", "fea"], lfd__w_kl=0.0)
    x, y = batch()
    s = student(x)
    with torch.no_grad():
        t = teacher(x)
    terms = obj(s, t, y, STEP)
    assert set(terms) == {"task", "fea", "aux", "shared_H", "shared", "kl", "kd"}
    for name in ("task", "kd", "fea"):
        assert terms[name].item() == pytest.approx(1.0), name
        assert obj.last_raw[name].item() > 1e-4 and obj.last_raw[name].item() != pytest.approx(1.0)
    assert terms["kl"].item() == 0.0  # LFD's own KD off: KD is counted once
    # the gradient of L / sg(L) is ∇L / L: compare with the raw KD term's gradient through the student logits
    z = s.logits
    g_norm = torch.autograd.grad(terms["kd"], z, retain_graph=True)[0]
    raw = obj.methods["kd"](s, t, y, STEP)["kd"]
    g_raw = torch.autograd.grad(raw, z)[0]
    torch.testing.assert_close(g_norm, g_raw / raw.detach(), rtol=1e-4, atol=1e-8)
    plain, student, teacher = build("lfd+kd")  # the default normalises task and fea only
    assert run(plain, student, teacher)["kd"].item() != pytest.approx(1.0)


def test_unknown_method_suggests_the_closest():
    with pytest.raises(UserError, match=r"unknown distillation method 'lfdd'.*baseline, kd, .*Did you mean 'lfd'"):
        build("lfdd")
    with pytest.raises(UserError, match="twice"):
        build("kd+kd")
    assert set(METHODS) == {"kd", "cwd", "fitnet", "at", "lfd", "fkd"}


def test_missing_stage_lists_the_available_ones():
    with pytest.raises(UserError, match=r"student has no feature stage 'stage9'.*stage1 \(4 ch, stride 2\), "
                                        r".*decoder \(8 ch, stride 4\)"):
        build("lfd", lfd__aux_stages=["stage9"])
    with pytest.raises(UserError, match=r"teacher has no feature stage 'layer4'.*stage4 \(12 ch, stride 4\)"):
        build("fkd", fkd__pairs=[["stage4", "layer4"]])
    with pytest.raises(UserError, match=r"teacher has no feature stage 'stage0'"):
        build("lfd", lfd__extra_pairs=[["stage2", "stage0"]])


def test_teacher_problems_are_user_errors():
    student, teacher = tiny_pair()
    with pytest.raises(UserError, match="teacher predicts 5 classes but the student 3"):
        build_objective(DistillConfig(method="kd"), student.feature_info, teacher.feature_info, 3, False,
                        teacher_num_classes=5)
    with pytest.raises(UserError, match="needs a teacher"):
        build_objective(DistillConfig(method="lfd"), student.feature_info, None, 3, False)
    assert not build_objective(DistillConfig(), student.feature_info, None, 3, False).needs_teacher


@pytest.mark.parametrize("method", ["kd+cwd+fitnet+at", "lfd", "fkd+kd"])
def test_every_term_is_finite_float32_under_bf16_autocast(method):
    obj, student, teacher = build(method, cwd__features=True, lfd__kl_start=0, lfd__extra_pairs=[["stage2", "stage3"]])
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = student(x, detach_encoder=obj.detach_encoder)
        with torch.no_grad():
            t = teacher(x)
        terms = obj(s, t, y, STEP)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in obj.parameters() if p.grad is not None)
