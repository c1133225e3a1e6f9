"""The training loop: exact resume, wall-clock budget, NaN stop, outputs, frozen teacher."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from engine_standins import ScaledTask, TinyLoader, TinySeg, data_info, make_data, tiny_cfg, val_batches

from runtime.errors import UserError
from train.engine.checkpoint import load_checkpoint, load_training_state
from train.engine.schedule import Every, choose_amp_dtype, poly_lr
from train.engine.trainer import Trainer
from train.losses.objective import Objective, StepInfo
from train.losses.task import TaskLoss, seg_cross_entropy
from train.models.output import SegOutput

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; threads only add barrier stalls


def trainer(cfg, objective=ScaledTask, model_seed=0, val=True, teacher=None, val_loader=None):
    """A Trainer of TinySeg; `objective` is a module, or a factory called after seeding (its init counts)."""
    torch.manual_seed(model_seed)
    x, y = make_data()
    obj = objective if isinstance(objective, torch.nn.Module) else objective()
    return Trainer(cfg, TinySeg(), obj, TinyLoader(x, y), val_loader or (val_batches() if val else None),
                   data_info(), teacher=teacher)


def train_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in ln.items() if k not in ("elapsed", "s_per_iter")} for ln in lines
            if ln["kind"] == "train"]


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    full = trainer(tiny_cfg(tmp_path / "a", val_every="2"))
    res = full.fit()
    assert res["iterations"] == 6 and res["resumed_from"] is None

    cfg = tiny_cfg(tmp_path / "b", val_every="2", ckpt_every="3")
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(cfg, lambda: ScaledTask(crash_at=4)).fit()
    assert load_training_state(tmp_path / "b/tiny/last.pt")["iteration"] == 3
    resumed = trainer(cfg, model_seed=123)  # other initial weights: everything must come from last.pt
    res_b = resumed.fit()
    assert res_b["resumed_from"] == 3 and res_b["iterations"] == 6

    a, b = train_lines(tmp_path / "a/tiny"), train_lines(tmp_path / "b/tiny")
    assert [ln["iteration"] for ln in b] == [1, 2, 3, 4, 5, 6]
    assert a == b  # every loss term and lr, bit for bit
    for p, q in zip(full.student.parameters(), resumed.student.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert res_b["final_miou"] == res["final_miou"]
    assert a[-1]["loss"] < a[0]["loss"]


def test_run_folder_and_checkpoints(tmp_path):
    res = trainer(tiny_cfg(tmp_path, budget="4", val_every="2")).fit()
    run = tmp_path / "tiny"
    for name in ("config.yaml", "log.jsonl", "best.pt", "final.pt", "last.pt", "results.json"):
        assert (run / name).is_file(), name
    best = load_checkpoint(run / "best.pt")
    assert not any(k.startswith("aux.") for k in best["model"])  # deployable: no auxiliary head
    assert any(k.startswith("aux.") for k in load_training_state(run / "last.pt")["model"])
    assert best["train"]["val_miou"] == res["best_miou"]
    assert best["train"]["config"]["train"]["budget"] == "4" and best["data"]["classes"] == ["r", "g", "b"]
    vals = [ln for ln in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if ln["kind"] == "val"]
    assert [v["iteration"] for v in vals] == [2, 4]
    assert res["best_miou"] == max(v["mIoU"] for v in vals)
    assert res["final_miou"] == vals[-1]["mIoU"] and res["peak_mem_mb"] > 0
    assert json.loads((run / "results.json").read_text())["iterations"] == 4


def test_lr_is_poly_over_iterations_with_warmup(tmp_path):
    cfg = tiny_cfg(tmp_path, budget="5")
    cfg.optim.warmup_iters = 2
    trainer(cfg, val=False).fit()
    lrs = [ln["lr"] for ln in train_lines(tmp_path / "tiny")]
    expected = [0.05 * (1 - i / 5) ** 0.9 * (min(i + 1, 2) / 2) for i in range(5)]
    assert lrs == pytest.approx(expected)


class SlowVal(list):
    def __iter__(self):
        time.sleep(0.25)
        return super().__iter__()


def test_wall_clock_budget_stops_on_time_and_excludes_validation(tmp_path):
    cfg = tiny_cfg(tmp_path, budget="1s", val_every="0.3s", log_every=1)
    t = trainer(cfg, val_loader=SlowVal(val_batches()))
    start = time.perf_counter()
    res = t.fit()
    wall = time.perf_counter() - start
    lines = train_lines(tmp_path / "tiny")
    n_val = len(res["val_history"])
    assert n_val >= 2  # periodic + the final one
    slowest = max(json.loads(ln)["s_per_iter"] for ln in (tmp_path / "tiny/log.jsonl").read_text().splitlines()
                  if json.loads(ln)["kind"] == "train")
    assert 1.0 <= res["elapsed_s"] < 1.0 + 1.5 * slowest + 0.05  # stops within one iteration of the budget
    assert wall >= res["elapsed_s"] + 0.25 * n_val  # validation time is not on the budget clock
    lrs = [ln["lr"] for ln in lines]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.05 * 0.3  # poly over elapsed / budget


def test_nan_loss_stops_with_last_good_state(tmp_path):
    t = trainer(tiny_cfg(tmp_path), ScaledTask(nan_at=3))
    with pytest.raises(UserError, match=r"iteration 4 \(ce=nan, aux_ce=[0-9.]+, extra=") as e:
        t.fit()
    assert "optim.lr" in str(e.value) and "grad_clip" in str(e.value)
    state = load_training_state(tmp_path / "tiny/last.pt")
    assert state["iteration"] == 3
    for k, v in t.student.state_dict().items():  # no step was taken on the NaN loss
        torch.testing.assert_close(state["model"][k], v, rtol=0, atol=0)
        assert torch.isfinite(v.float()).all()


class KDStandIn(Objective):
    needs_teacher = True

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        assert t is not None and not t.logits.requires_grad
        kd = torch.nn.functional.mse_loss(s.logits, t.logits)
        return {"ce": seg_cross_entropy(s.logits, labels), "kd": kd}


def test_teacher_is_frozen_and_student_learns(tmp_path):
    torch.manual_seed(5)
    teacher = TinySeg(width=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = tiny_cfg(tmp_path, budget="3")
    cfg.optim.grad_clip = 1.0
    cfg.optim.name = "adamw"
    cfg.optim.lr = 1e-3
    t = trainer(cfg, KDStandIn(), teacher=teacher, val=False)
    t.fit()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():  # BN running stats too: eval mode
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert {"ce", "kd"} <= set(train_lines(tmp_path / "tiny")[0])
    with pytest.raises(UserError, match="needs a teacher"):
        trainer(cfg, KDStandIn())


def test_objective_parameters_are_optimised(tmp_path):
    obj = ScaledTask()
    before = obj.extra_head.weight.detach().clone()
    trainer(tiny_cfg(tmp_path, budget="2"), obj, val=False).fit()
    assert not torch.equal(obj.extra_head.weight, before)


def test_task_loss_matches_an_independent_computation():
    torch.manual_seed(0)
    z, aux = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 2, 4)
    y = torch.randint(0, 3, (2, 8, 16))
    y[0, :2] = 255
    terms = TaskLoss()(SegOutput(z, aux), None, y, StepInfo(0, 0.0))
    up = torch.nn.functional.interpolate(z, size=(8, 16), mode="bilinear", align_corners=False)
    up_aux = torch.nn.functional.interpolate(aux, size=(8, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(terms["ce"], torch.nn.functional.cross_entropy(up, y, ignore_index=255))
    torch.testing.assert_close(terms["aux_ce"], 0.4 * torch.nn.functional.cross_entropy(up_aux, y, ignore_index=255))
    assert set(TaskLoss()(SegOutput(z), None, y, StepInfo(0, 0.0))) == {"ce"}
    assert seg_cross_entropy(z, torch.full_like(y, 255)).item() == 0.0  # all-ignore crop: 0, not NaN


def test_schedule_helpers():
    assert poly_lr(0.01, 0.0) == 0.01 and poly_lr(0.01, 1.0) == 0.0 and poly_lr(0.01, 1.5) == 0.0
    assert math.isclose(poly_lr(0.01, 0.5), 0.01 * 0.5 ** 0.9)
    e = Every("3")
    assert [i for i in range(1, 10) if e.due(i, 0.0)] == [3, 6, 9]
    e = Every("2s")
    assert [t for t in (0.5, 1.9, 2.1, 2.5, 4.0, 4.2, 7.0) if e.due(0, t)] == [2.1, 4.0, 7.0]
    assert not any(Every("0").due(i, float(i)) for i in range(1, 5))
    assert choose_amp_dtype(False, "auto", torch.device("cpu")) is None
    with pytest.raises(UserError, match="fp16 is for GPUs"):
        choose_amp_dtype(True, "fp16", torch.device("cpu"))
    assert choose_amp_dtype(True, "bf16", torch.device("cpu")) == torch.bfloat16


class CtrlCAt(ScaledTask):
    def forward(self, s, t, labels, step):
        if step.iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return super().forward(s, t, labels, step)


def test_ctrl_c_finishes_the_iteration_and_saves_last(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer(tiny_cfg(tmp_path), CtrlCAt()).fit()
    assert load_training_state(tmp_path / "tiny/last.pt")["iteration"] == 3
    assert signal.getsignal(signal.SIGINT) is before


def test_bf16_autocast_trains(tmp_path):
    cfg = tiny_cfg(tmp_path, budget="2", amp=True, amp_dtype="bf16")
    res = trainer(cfg, val=False).fit()
    assert res["precision"] == "bfloat16"
    assert all(math.isfinite(ln["loss"]) for ln in train_lines(tmp_path / "tiny"))
