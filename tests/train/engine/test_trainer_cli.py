"""train.teacher end to end on tiny synthetic scenes with a real recipe, then resumed as a no-op."""

from __future__ import annotations

import json

import pytest
import torch

from train import teacher
from train.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; threads only add barrier stalls


def overrides(tmp_path, budget: str) -> list[str]:
    return [f"budget={budget}", "name=t", f"train.runs_dir={tmp_path}", "train.log_every=1", "train.amp=false",
            "train.device=cpu", "recipe=tiny_lraspp_mobilenetv3", "data.synthetic.size=64x128",
            "data.synthetic.num_train=4", "data.synthetic.num_val=2", "data.synthetic.cache=false",
            "data.crop_size=64x128", "batch=2", "data.val_batch_size=2", "data.workers=0"]


def test_teacher_cli_trains_writes_and_resumes(tmp_path, capsys):
    pytest.importorskip("train.data")
    assert teacher.main(overrides(tmp_path, "3")) == 0
    out = capsys.readouterr().out
    assert "val mIoU" in out and "GFLOPs" in out and "teacher checkpoint:" in out
    run = tmp_path / "t"
    results = json.loads((run / "results.json").read_text())
    assert results["iterations"] == 3 and results["method"] == "teacher" and results["model"]["params"] > 0
    best = load_checkpoint(run / "best.pt")
    assert best["arch"]["recipe"] == "tiny_lraspp_mobilenetv3" and best["train"]["method"] == "teacher"
    # the same command again resumes from last.pt: nothing left to do, same iterations, log kept
    lines = (run / "log.jsonl").read_text()
    assert teacher.main(overrides(tmp_path, "3")) == 0
    again = json.loads((run / "results.json").read_text())
    assert again["resumed_from"] == 3 and again["iterations"] == 3
    assert (run / "log.jsonl").read_text().startswith(lines)


def test_teacher_cli_errors(tmp_path, capsys):
    assert teacher.main(["--which", "teacher", f"train.runs_dir={tmp_path}"]) == 2
    assert "no teacher_model section" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        teacher.main(["--help"])
    assert "--which" in capsys.readouterr().out


def test_resume_is_exact_with_the_real_data_pipeline(tmp_path):
    pytest.importorskip("train.data")
    from engine_standins import ScaledTask, TinySeg

    from train.config import load_config
    from train.data import build_loaders
    from train.engine.trainer import Trainer

    def run(root, crash_at=None, seed=0):
        cfg = load_config(None, overrides(root, "4") + ["train.ckpt_every=2", "data.synthetic.num_train=8"])
        train_loader, val_loader, info = build_loaders(cfg)
        torch.manual_seed(seed)
        model, objective = TinySeg(num_classes=info.num_classes), ScaledTask(crash_at=crash_at, num_classes=info.num_classes)
        return Trainer(cfg, model, objective, train_loader, val_loader, info).fit()

    run(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "b", crash_at=3)
    assert run(tmp_path / "b", seed=1)["resumed_from"] == 2

    def losses(root):
        return [{k: v for k, v in json.loads(ln).items() if k not in ("elapsed", "s_per_iter")}
                for ln in (root / "t/log.jsonl").read_text().splitlines()]

    assert len(losses(tmp_path / "a")) == 5  # 4 train lines + the final validation
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
