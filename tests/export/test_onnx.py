"""export.onnx: every student recipe exports, ONNX Runtime matches PyTorch, metadata round-trips,
dynamic shapes, the argmax variant, the parity gate and clear errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import export.onnx_parity
from export.onnx import main
from export.onnx_graph import export_graph
from runtime.datasets import build_dataset
from runtime.io import sha256_file
from runtime.metadata import ONNX_DATA_KEY, ONNX_SOURCE_KEY, DataInfo, default_palette
from runtime.preprocess import preprocess_for
from train.engine.checkpoint import save_checkpoint
from train.models import build_model

SIZE = (64, 128)
SYNTHETIC = {"num_train": 4, "num_val": 2, "size": list(SIZE), "seed": 0, "difficulty": 1.0, "cache": False}
STUDENTS = ["deeplabv3_resnet18", "pspnet_resnet18", "deeplabv3_mobilenetv2", "lraspp_mobilenetv3_large"]


def _checkpoint(tmp_path, recipe: str, k: int = 16):
    """A random-weight checkpoint of `recipe` -> (path, the model in eval mode, its DataInfo)."""
    torch.manual_seed(0)
    model = build_model({"recipe": recipe}, k)
    info = DataInfo(classes=[f"c{i}" for i in range(k)], palette=default_palette(k), input_size=(256, 512))
    config = {"data": {"dataset": "synthetic", "synthetic": SYNTHETIC}, "export": {"size": list(SIZE)}}
    path = save_checkpoint(tmp_path / f"{recipe}.pt", model, info, {"method": "baseline", "config": config})
    return path, model.eval(), info


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("tiny"), "tiny_deeplabv3_resnet10t", k=6)


def _segment(model, x):
    with torch.no_grad():
        return model.segment(torch.from_numpy(x)).numpy()


def _frames(n: int = 2) -> list[np.ndarray]:
    ds = build_dataset("synthetic", "val", **{**SYNTHETIC, "size": SIZE})
    return [ds[i][0] for i in range(n)]


def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"images": x})[0]


@pytest.mark.parametrize("recipe", STUDENTS)
def test_student_recipe_exports_and_matches_pytorch(recipe, tmp_path, capsys):
    ckpt, model, info = _checkpoint(tmp_path, recipe)
    assert main(["--checkpoint", str(ckpt), "--output", "full", "--parity-images", "2"]) == 0
    out = ckpt.with_suffix(".onnx")
    printed = capsys.readouterr().out
    assert f"python -m runtime.infer --model {out}" in printed
    x = preprocess_for(info, _frames(1), SIZE)
    ref = _segment(model, x)
    got = _ort(out, x)
    assert got.shape == (1, 16, *SIZE)
    assert np.abs(got - ref).max() < 1e-3
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.999
    m = onnx.load(str(out))
    assert [i.name for i in m.graph.input] == ["images"] and [o.name for o in m.graph.output] == ["logits"]
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, *SIZE]
    assert m.opset_import[0].version >= 17
    assert not any("aux" in t.name for t in m.graph.initializer)  # deployable graph only
    report = json.loads((tmp_path / f"{recipe}.onnx.export.json").read_text())
    assert report["parity"]["frames"] == 2 and report["parity"]["max_abs_diff"] < 1e-3
    assert report["parity"]["argmax_agreement"] > 0.999 and report["written"]


def test_metadata_round_trips_into_datainfo(tiny, tmp_path):
    ckpt, _, want = tiny
    out = tmp_path / "meta.onnx"
    assert main(["--checkpoint", str(ckpt), "--output", "full", "--size", "32x64", "--opset", "18", "--parity-images", "1",
                 "--out", str(out)]) == 0
    meta = ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map
    info = DataInfo.from_json(meta[ONNX_DATA_KEY])
    assert info == DataInfo(**{**want.__dict__, "input_size": (32, 64), "output": "full", "output_stride": 1})
    source = json.loads(meta[ONNX_SOURCE_KEY])
    assert source["sha256"] == sha256_file(ckpt) and source["method"] == "baseline"
    assert source["options"] == {"size": [32, 64], "dynamic": False, "output": "full", "argmax": False, "opset": 18,
                                 "uint8_input": None}
    assert source["arch"]["head"] == "deeplabv3"
    assert onnx.load(str(out)).opset_import[0].version == 18


@pytest.fixture(scope="module")
def dynamic(tiny):
    out = tiny[0].with_suffix(".dynamic.onnx")
    assert main(["--checkpoint", str(tiny[0]), "--output", "full", "--dynamic", "--out", str(out), "--parity-images", "1"]) == 0
    return out


def test_dynamic_model_runs_at_two_sizes(tiny, dynamic):
    _, model, info = tiny
    out = dynamic
    for n, size in [(2, (64, 128)), (1, (96, 160))]:
        x = preprocess_for(info, _frames(n), size)
        got = _ort(out, x)
        assert got.shape == (n, 6, *size) and np.abs(got - _segment(model, x)).max() < 1e-3


def test_argmax_variant_equals_argmax_of_logits(tiny, dynamic):
    ckpt, _, info = tiny
    assert main(["--checkpoint", str(ckpt), "--argmax", "--parity-images", "1"]) == 0
    labels_path = ckpt.with_suffix(".labels.onnx")
    assert [o.name for o in onnx.load(str(labels_path)).graph.output] == ["labels"]
    x = preprocess_for(info, _frames(2), SIZE)
    logits = _ort(dynamic, x)
    labels = np.concatenate([_ort(labels_path, x[i:i + 1]) for i in range(2)])
    assert labels.dtype == np.uint8 and labels.shape == (2, *SIZE)
    np.testing.assert_array_equal(labels, logits.argmax(1))


class _Wide(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_more_than_255_classes_give_int32_labels(tmp_path):
    torch.manual_seed(0)
    k = 300
    model = _Wide(k).eval()
    info = DataInfo(classes=[str(i) for i in range(k)], palette=default_palette(k))
    path = export_graph(model, info, tmp_path / "wide.onnx", size=(8, 8), argmax=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = _ort(path, x)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, model.segment(torch.from_numpy(x)).argmax(1).numpy())


def test_low_agreement_refuses_unless_forced(tiny, tmp_path, monkeypatch, capsys):
    ckpt = tiny[0]
    monkeypatch.setattr(export.onnx_parity, "compare",
                        lambda *a, **k: {"frames": 1, "max_abs_diff": 0.5, "argmax_agreement": 0.9})
    out = tmp_path / "bad.onnx"
    assert main(["--checkpoint", str(ckpt), "--output", "full", "--out", str(out), "--parity-images", "1"]) == 2
    assert "90.000 %" in capsys.readouterr().err and not out.exists()
    assert json.loads((tmp_path / "bad.onnx.export.json").read_text())["written"] is False
    assert main(["--checkpoint", str(ckpt), "--output", "full", "--out", str(out), "--parity-images", "1", "--force"]) == 0
    assert out.exists() and json.loads((tmp_path / "bad.onnx.export.json").read_text())["forced"] is True
    assert not list(tmp_path.glob(".*.tmp"))


def test_clear_errors(tiny, tmp_path, capsys):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    assert main(["--checkpoint", str(other)]) == 2
    assert "other.pt" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    ckpt = tiny[0]
    assert main(["--checkpoint", str(ckpt), "--opset", "13"]) == 2
    assert "--opset 13" in capsys.readouterr().err
    assert main(["--checkpoint", str(ckpt), "--size", "big"]) == 2
    assert "--size 'big' is not HxW" in capsys.readouterr().err


@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_uint8_input_export_matches_the_float_model(tiny, tmp_path, order):
    """--uint8-input: the graph normalises uint8 frames itself; its logits equal the float export's on the
    same frames, and the runtime feeds it from the metadata alone."""
    from runtime.backends import load_backend

    path, model, info = tiny
    float_onnx, u8_onnx = tmp_path / "f.onnx", tmp_path / f"u8{order}.onnx"
    assert main(["--checkpoint", str(path), "--output", "full", "--out", str(float_onnx)]) == 0
    assert main(["--checkpoint", str(path), "--output", "full", "--out", str(u8_onnx), "--uint8-input", order]) == 0
    proto = onnx.load(str(u8_onnx))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = {p.key: p.value for p in proto.metadata_props}
    stored = DataInfo.from_json(meta[ONNX_DATA_KEY])
    assert stored.input_format == f"uint8-{order}" and tuple(stored.input_size) == SIZE
    frames = _frames(2)
    with load_backend(float_onnx) as fb, load_backend(u8_onnx) as ub:
        assert not fb.uint8_input and ub.uint8_input and ub.input_size == SIZE
        x_float, x_u8 = preprocess_for(fb.info, frames), preprocess_for(ub.info, frames)
        assert x_u8.dtype == np.uint8 and x_u8.shape == (2, *SIZE, 3)
        if order == "bgr":
            np.testing.assert_array_equal(x_u8[0], frames[0][..., ::-1])
        a = np.concatenate([fb.infer(x_float[i:i + 1]) for i in range(2)])
        b = np.concatenate([ub.infer(x_u8[i:i + 1]) for i in range(2)])
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(b, _segment(model, x_float), atol=1e-4, rtol=1e-4)
    report = json.loads((tmp_path / f"u8{order}.onnx.export.json").read_text())
    assert report["parity"]["argmax_agreement"] >= 0.999 and report["source"]["options"]["uint8_input"] == order
