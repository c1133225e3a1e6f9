"""export.openvino on a real exported student: the IR runs in OpenVINO, matches ONNX Runtime on
synthetic frames, and carries the model's DataInfo and source."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export.onnx import main as export_onnx
from runtime.backends import load_backend
from runtime.datasets import build_dataset
from runtime.metadata import DataInfo, default_palette
from runtime.preprocess import preprocess_for
from train.engine.checkpoint import save_checkpoint
from train.models import build_model

pytest.importorskip("openvino")
from export.openvino import default_ir_path, main  # noqa: E402

SIZE = (64, 128)
SYNTHETIC = {"num_train": 4, "num_val": 3, "size": list(SIZE), "seed": 0, "difficulty": 1.0, "cache": False}


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ov")
    torch.manual_seed(0)
    model = build_model({"recipe": "lraspp_mobilenetv3_large"}, 16)
    info = DataInfo(classes=[f"c{i}" for i in range(16)], palette=default_palette(16), input_size=SIZE)
    config = {"data": {"dataset": "synthetic", "synthetic": SYNTHETIC}}
    ckpt = save_checkpoint(tmp / "s.pt", model, info, {"method": "baseline", "config": config})
    assert export_onnx(["--checkpoint", str(ckpt), "--output", "full", "--out", str(tmp / "s.onnx"),
                        "--parity-images", "2"]) == 0
    return tmp / "s.onnx"


def test_the_ir_matches_onnx_runtime_on_real_frames(student_onnx, capsys):
    assert main(["--onnx", str(student_onnx)]) == 0
    xml = default_ir_path(student_onnx)
    assert xml.name == "s.openvino.xml" and "run it: python -m runtime.infer" in capsys.readouterr().out
    report = json.loads(xml.with_name(xml.name + ".export.json").read_text())
    assert report["written"] and report["argmax_agreement"] >= 0.999
    ds = build_dataset("synthetic", "val", **{**SYNTHETIC, "size": SIZE})
    with load_backend(xml) as ov, load_backend(student_onnx) as ref:
        assert ov.info == ref.info
        x = preprocess_for(ov.info, [ds[i][0] for i in range(3)])
        got = np.concatenate([ov.infer(x[i:i + 1]) for i in range(3)])
        want = np.concatenate([ref.infer(x[i:i + 1]) for i in range(3)])
    # same FP32 graph, two compilers: they differ by float reassociation only (measured ~1e-5 here)
    assert np.abs(got - want).max() < 1e-3 * max(1.0, float(np.abs(want).max()))
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.999


def test_a_model_without_metadata_is_refused(tmp_path, capsys):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    assert main(["--onnx", str(bad)]) == 2
    assert "x.onnx" in capsys.readouterr().err


def test_fewer_than_one_frame_is_a_usage_error_naming_the_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--onnx", "x.onnx", "--frames", "0"])
    assert e.value.code == 2 and "argument --frames: '0' is not an integer >= 1" in capsys.readouterr().err
