"""export.check on this CPU: a tiny student trained here exports and ONNX Runtime matches PyTorch; the
TensorRT row is skipped with a reason where there is no GPU (these rows and their assertions were
train.check --speed's: tests/train/test_train_check.py); a missing --checkpoint is a usage error."""

from __future__ import annotations

import json

import pytest


def test_export_check_runs_its_cpu_path(tmp_path, capsys):
    pytest.importorskip("train.data")
    import torch

    from export.check import main

    js = tmp_path / "e.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors gain nothing from threads on a busy 2-core machine
    try:
        rc = main(["--size", "32x64", "--steps", "3", "--batch", "2", "--device", "cpu", "--json", str(js)])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(js.read_text())
    rows = report["rows"]
    by = {(r["area"], r["item"]): r for r in rows}
    assert rc == (1 if any(r["status"] == "fail" for r in rows) else 0)
    assert [(r["area"], r["item"]) for r in rows] == [("export", "ONNX export + parity"),
                                                       ("tensorrt", "FP16 build + run")]
    assert report["checkpoint"].startswith("tiny_lraspp_mobilenetv3 trained alone here (3 steps, batch 2, 32x64")
    assert by[("export", "ONNX export + parity")]["status"] == "ok"
    if not torch.cuda.is_available():
        trt = by[("tensorrt", "FP16 build + run")]
        assert trt["status"] == "skipped" and trt["note"]
    assert "skipped: FP16 build + run" in capsys.readouterr().out or torch.cuda.is_available()


def test_a_missing_checkpoint_is_a_usage_error(tmp_path, capsys):
    from export.check import main

    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--json", str(tmp_path / "e.json")]) == 2
    assert "--checkpoint" in capsys.readouterr().err and not (tmp_path / "e.json").exists()


def test_a_given_checkpoint_is_exported_at_its_own_size(tmp_path):
    import torch

    from export.check import main
    from runtime.metadata import DataInfo, default_palette
    from train.engine.checkpoint import save_checkpoint
    from train.models import build_model

    torch.manual_seed(0)
    scenes = {"num_train": 4, "num_val": 2, "size": [32, 64], "seed": 0, "difficulty": 1.0, "cache": False}
    info = DataInfo(classes=["a", "b", "c"], palette=default_palette(3), input_size=(32, 64))
    ckpt = save_checkpoint(tmp_path / "s.pt", build_model({"recipe": "tiny_lraspp_mobilenetv3"}, 3), info,
                           {"method": "baseline", "config": {"data": {"dataset": "synthetic", "synthetic": scenes}}})
    js = tmp_path / "e.json"
    main(["--checkpoint", str(ckpt), "--json", str(js)])
    report = json.loads(js.read_text())
    assert report["checkpoint"] == str(ckpt)
    assert report["rows"][0]["status"] == "ok" and report["rows"][0]["note"].startswith("ONNX Runtime ")
