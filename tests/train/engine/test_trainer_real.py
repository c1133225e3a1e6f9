"""The engine with a real Segmentor recipe on synthetic scenes, and train.evaluate on what it wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from engine_standins import TinyLoader, tiny_cfg

from runtime.datasets import build_dataset
from runtime.preprocess import preprocess_for
from train import evaluate
from train.config import ModelConfig
from train.engine.checkpoint import load_checkpoint, model_from_checkpoint
from train.engine.trainer import Trainer
from train.losses.task import TaskLoss
from train.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; threads only add barrier stalls

SYN = {"size": [64, 128], "num_val": 3, "num_train": 4, "seed": 0, "cache": False}


def test_real_model_trains_and_evaluate_agrees_with_the_engine(tmp_path, capsys):
    val = build_dataset("synthetic", "val", **{**SYN, "size": (64, 128)})
    info = val.data_info((64, 128))
    info.extra = {"dataset": "synthetic", "synthetic": SYN}
    samples = [val[i] for i in range(len(val))]
    x = torch.from_numpy(preprocess_for(info, [s[0] for s in samples]))
    y = torch.from_numpy(np.stack([s[1] for s in samples]).astype(np.int64))
    torch.manual_seed(0)
    model = build_model(ModelConfig(recipe="tiny_deeplabv3_resnet10t"), info.num_classes)
    cfg = tiny_cfg(tmp_path, budget="2")
    cfg.data.dataset = "synthetic"
    res = Trainer(cfg, model, TaskLoss(), TinyLoader(x, y, batch=2), [(x[:2], y[:2]), (x[2:], y[2:])], info).fit()

    best = tmp_path / "tiny/best.pt"
    ckpt = load_checkpoint(best)
    assert ckpt["arch"]["aux_head"] is False and not any(k.startswith("aux.") for k in ckpt["model"])
    rebuilt, _, _ = model_from_checkpoint(best)
    model.eval()
    torch.testing.assert_close(rebuilt.segment(x[:1]), model.segment(x[:1]))

    out = tmp_path / "eval.json"
    assert evaluate.main(["--checkpoint", str(best), "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 3 and report["method"] == "baseline"
    assert report["mIoU"] == pytest.approx(res["best_miou"], abs=1e-3)  # same images, same model
    assert "mIoU" in capsys.readouterr().out


def test_evaluate_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert evaluate.main(["--checkpoint", str(bad)]) == 2
    assert "bad.pt is truncated or corrupt" in capsys.readouterr().err
