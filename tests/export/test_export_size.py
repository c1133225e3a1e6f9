"""On a dataset of one's own: the checkpoint records the size the model was validated at, export uses it,
and runtime.eval of the export gives training's validation mIoU on the same split."""

from __future__ import annotations

import json

import onnx
import pytest

pytestmark = pytest.mark.usefixtures("one_thread_torch")


@pytest.fixture
def one_thread_torch():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_export_defaults_to_the_validated_size_and_eval_matches_training(tmp_path, capsys):
    pytest.importorskip("train.data")
    from export.onnx import main as export_main
    from runtime.datasets.synthetic import write_folder_dataset
    from runtime.eval import main as eval_main
    from train.engine.checkpoint import load_checkpoint
    from train.teacher import main as teacher_main

    root = write_folder_dataset(tmp_path / "own", num_train=4, num_val=3, size=(64, 128), seed=2)
    run = tmp_path / "runs" / "s"
    assert teacher_main(["budget=3", "name=s", f"train.runs_dir={tmp_path / 'runs'}", "train.device=cpu",
                         "train.amp=false", "recipe=tiny_lraspp_mobilenetv3", f"dataset=folder:{root}",
                         "data.crop_size=32x64", "batch=2", "data.val_batch_size=3", "data.workers=0",
                         "--which", "student"]) == 0
    ckpt = load_checkpoint(run / "final.pt")
    assert ckpt["data"]["input_size"] == [64, 128]  # the validation images' size, not the crop nor 512x1024
    val_miou = json.loads((run / "results.json").read_text())["final_miou"]
    onnx_path = tmp_path / "s.onnx"
    capsys.readouterr()
    # full logits: what training validates with, so runtime.eval must reproduce the training mIoU
    assert export_main(["--checkpoint", str(run / "final.pt"), "--out", str(onnx_path), "--output", "full",
                        "--data", f"folder:{root}"]) == 0
    dims = [d.dim_value for d in onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 128] and "note: exporting at" not in capsys.readouterr().err
    js = tmp_path / "e.json"
    assert eval_main(["--model", str(onnx_path), "--data", f"folder:{root}", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["mIoU"] == pytest.approx(val_miou, abs=2e-3)
    # another size is allowed, with a note
    assert export_main(["--checkpoint", str(run / "final.pt"), "--out", str(tmp_path / "big.onnx"),
                        "--size", "128x256", "--data", f"folder:{root}"]) == 0
    assert "trained and validated at 64x128" in capsys.readouterr().err


def test_validated_size_rules(tmp_path):
    pytest.importorskip("train.data")
    import cv2
    import numpy as np

    from runtime.datasets import build_dataset
    from runtime.datasets.synthetic import write_folder_dataset
    from train.config import DataConfig
    from train.data import model_input_size

    root = write_folder_dataset(tmp_path / "d", num_train=2, num_val=2, size=(64, 128), seed=0)
    reader = build_dataset(f"folder:{root}", "val")
    assert model_input_size(DataConfig(crop_size=(32, 64)), reader) == (64, 128)
    assert model_input_size(DataConfig(crop_size=(32, 64), val_size=(48, 96)), reader) == (48, 96)
    first = sorted((root / "images" / "val").iterdir())[0]  # sizes that vary: the training crop
    cv2.imwrite(str(first), np.zeros((80, 100, 3), np.uint8))
    label = sorted((root / "labels" / "val").iterdir())[0]
    cv2.imwrite(str(label), np.zeros((80, 100), np.uint8))
    assert model_input_size(DataConfig(crop_size=(32, 64)), build_dataset(f"folder:{root}", "val")) == (32, 64)
