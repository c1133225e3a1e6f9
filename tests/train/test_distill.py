"""train.distill: a few iterations of KD and LFD from a tiny teacher checkpoint on tiny synthetic data; the
deployable checkpoint holds the student only; clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_fkd_layers import save_teacher

from train.distill import main
from train.engine.checkpoint import load_checkpoint, load_training_state
from train.models import build_model, count_params

STUDENT = "tiny_lraspp_mobilenetv3"


def tiny_config(tmp_path: Path) -> Path:
    """A recipe for 64 x 128 synthetic scenes, batch 2, a tiny student, fp32, no checkpoints mid-run."""
    cfg = {
        "data": {"dataset": "synthetic", "crop_size": [64, 128], "batch_size": 2, "val_batch_size": 2,
                 "workers": 0, "synthetic": {"num_train": 6, "num_val": 2, "size": [64, 128], "seed": 0,
                                             "cache": False}},
        "model": {"recipe": STUDENT},
        "train": {"budget": "1", "val_every": "0", "log_every": 1, "ckpt_every": "0", "amp": False,
                  "device": "cpu", "runs_dir": str(tmp_path / "runs")},
        "distill": {"cache_dir": str(tmp_path / "caches")},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("method", ["kd", "lfd"])
def test_distill_writes_a_student_only_checkpoint(tmp_path: Path, method: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    rc = main(["--config", str(tiny_config(tmp_path)), f"method={method}", f"teacher={teacher}"])
    assert rc == 0
    run = tmp_path / "runs" / f"tiny-{method}-s0"
    results = json.loads((run / "results.json").read_text())
    assert results["method"] == method and results["iterations"] == 1
    assert results["teacher"]["miou"] == 0.42  # recorded in the teacher checkpoint
    assert results["teacher"]["checkpoint"] == str(teacher)
    assert 0.0 <= results["student"]["miou"] <= 1.0

    ckpt = load_checkpoint(results["student"]["checkpoint"])
    assert ckpt["train"]["method"] == method and ckpt["arch"]["recipe"] == STUDENT
    bare = build_model(ckpt["arch"])
    bare.load_state_dict(ckpt["model"], strict=True)  # every key belongs to the bare student, none missing
    assert results["student"]["params"] == count_params(bare)
    teacher_ckpt = load_checkpoint(teacher)
    assert results["teacher"]["params"] == count_params(build_model(teacher_ckpt["arch"]))
    # the training-only modules (adapters, heads) live in last.pt only
    last = load_training_state(run / "last.pt")
    assert bool(last["objective"]) == (method == "lfd")  # KD has no modules; LFD's adapter and heads
    assert not set(last["objective"]) & set(ckpt["model"])
    assert all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())

    out = capsys.readouterr().out
    assert "teacher" in out and "student" in out and "GFLOPs" in out and str(run) in out


def test_class_mismatch_names_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = save_teacher(tmp_path / "other.pt", classes=["cat", "dog", "bird"])
    assert main(["--config", str(tiny_config(tmp_path)), "method=kd", f"teacher={teacher}"]) == 2
    err = capsys.readouterr().err
    assert "other.pt" in err and "3 classes" in err and "16" in err and "student's dataset" in err


@pytest.mark.parametrize("override, message", [
    (["budget=ten"], "use iterations (40000) or wall-clock (90s, 30m, 2h)"),
    (["method=kdd"], "choose from baseline, kd, cwd, fitnet, at, lfd, fkd"),
    (["method=lfd"], "needs a teacher"),
    (["method=kd", "teacher=missing/t.pt"], "missing/t.pt does not exist"),
])
def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], override: list[str], message: str) -> None:
    assert main(["--config", str(tiny_config(tmp_path)), *override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing ran
