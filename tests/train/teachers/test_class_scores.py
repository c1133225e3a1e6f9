"""train/teachers/class_scores.py: the per-class IoU table and the warning that names the classes at 0 IoU; the
engine records per-class IoU in checkpoints and results, train.teacher and train.distill print it, and
train.compare keeps it in teacher.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_standins import ScaledTask, TinyLoader, TinySeg, data_info, make_data, tiny_cfg, val_batches
from test_distill import tiny_config
from test_fkd_layers import save_teacher

from train.compare.run import teacher_miou_on
from train.config import load_config
from train.distill import main as distill_main
from train.engine.checkpoint import load_checkpoint
from train.engine.trainer import Trainer
from train.teacher import main as teacher_main
from train.teachers.class_scores import (
    checkpoint_class_report,
    class_iou_report,
    class_iou_table,
    zero_iou_classes,
    zero_iou_warning,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SCORES = {"road": 0.912, "sidewalk": 0.5, "pole": 0.0, "sign": 0.0, "sky": None, "car": 0.004}


def test_the_warning_names_exactly_the_classes_at_zero() -> None:
    assert zero_iou_classes(SCORES) == ["pole", "sign"]
    warning = zero_iou_warning(SCORES)
    assert warning is not None and warning.startswith("warning: the teacher scores 0 IoU on pole, sign (2 of 5 ")
    # a class with no score (absent from labels and predictions) is neither named nor counted
    for name in ("road", "sidewalk", "sky", "car"):
        assert name not in warning
    assert "distillation cannot teach them" in warning and "train the teacher longer" in warning


def test_no_warning_when_every_class_is_above_zero() -> None:
    fine = {"road": 0.9, "pole": 0.001, "sky": None}
    assert zero_iou_classes(fine) == [] and zero_iou_warning(fine) is None
    report = class_iou_report(fine, "teacher per-class IoU %")
    assert "warning" not in report and report.splitlines()[0] == "teacher per-class IoU %"


def test_table_shows_every_class_with_its_score() -> None:
    table = class_iou_table(SCORES, columns=4)
    lines = table.splitlines()
    assert len(lines) == 2  # 6 classes, 4 to a line
    assert "road      91.2" in lines[0] and "pole       0.0" in lines[0]
    assert "sky          -" in lines[1] and "car        0.4" in lines[1]
    report = class_iou_report(SCORES, "title", who="student")
    assert report.splitlines()[-1].startswith("warning: the student scores 0 IoU on pole, sign")


def test_engine_records_per_class_iou_in_checkpoints_and_results(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x, y = make_data()
    res = Trainer(tiny_cfg(tmp_path, budget="4", val_every="2"), TinySeg(), ScaledTask(), TinyLoader(x, y),
                  val_batches(), data_info()).fit()
    assert [sorted(v["per_class_iou"]) for v in res["val_history"]] == [["b", "g", "r"]] * 2
    best = load_checkpoint(tmp_path / "tiny" / "best.pt")["train"]
    at_best = next(v for v in res["val_history"] if v["iteration"] == res["best_iteration"])
    assert best["val_per_class_iou"] == at_best["per_class_iou"] == res["best_per_class_iou"]
    final = load_checkpoint(tmp_path / "tiny" / "final.pt")["train"]
    assert final["val_per_class_iou"] == res["val_history"][-1]["per_class_iou"] == res["final_per_class_iou"]
    report = checkpoint_class_report({"train": best})
    assert report is not None and all(f"{c} " in report for c in ("r", "g", "b"))
    assert checkpoint_class_report({"train": {"val_miou": 0.4}}) is None  # recorded before per-class IoU


def test_teacher_prints_its_classes_and_distill_shows_them_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(tiny_config(tmp_path))
    assert teacher_main(["--config", config, "budget=2", "name=t"]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "runs" / "t" / "results.json").read_text())
    per_class = results["best_per_class_iou"]
    assert per_class and "per-class val IoU % (best, iteration 2)" in out
    for name in per_class:
        assert f"{name} " in out
    zero = [n for n, v in per_class.items() if v == 0.0]
    assert (f"0 IoU on {', '.join(zero)} " in out) if zero else "warning" not in out
    teacher = tmp_path / "runs" / "t" / "best.pt"
    assert distill_main(["--config", config, "method=kd", f"teacher={teacher}", "name=s"]) == 0
    out = capsys.readouterr().out
    assert "teacher per-class val IoU % (recorded by its training, at iteration 2)" in out
    assert out.index("per-class val IoU") < out.index("student checkpoint")


def test_compare_records_and_prints_the_teachers_classes(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    cfg = load_config(str(tiny_config(tmp_path)), [])
    miou = teacher_miou_on(cfg, str(teacher), tmp_path / "cmp")
    rec = json.loads((tmp_path / "cmp" / "teacher.json").read_text())
    classes = load_checkpoint(teacher)["data"]["classes"]
    assert rec["miou"] == miou and list(rec["per_class_iou"]) == classes
    first = capsys.readouterr().out
    assert "[compare] teacher per-class val IoU %" in first and all(f"{c} " in first for c in classes)
    assert teacher_miou_on(cfg, str(teacher), tmp_path / "cmp") == miou  # read back, printed again
    assert capsys.readouterr().out == first
