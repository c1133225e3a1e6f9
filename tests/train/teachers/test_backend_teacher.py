"""train/teachers/backend_teacher.py: an exported teacher (ONNX, OpenVINO IR) gives the PyTorch teacher's logits
from the student's input (its own normalisation, uint8 input, fixed size and batch), its cached targets equal
the PyTorch teacher's within float16 precision, argmax exports and missing or broken files are refused in one
sentence, and feature methods are refused naming the methods it can run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_distill import tiny_config
from test_fkd_layers import save_teacher

from export.onnx import export_checkpoint
from export.onnx_graph import export_graph
from runtime.errors import UserError
from runtime.metadata import IMAGENET_MEAN, IMAGENET_STD
from train.engine.checkpoint import model_from_checkpoint
from train.teachers.backend_teacher import (
    BACKEND_SUFFIXES,
    BackendTeacher,
    is_backend_teacher,
    logit_methods,
    require_features,
)
from train.teachers.cache_build import run_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (64, 128)
S_MEAN, S_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # the student normalises otherwise than the teacher


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny PyTorch teacher, its ONNX export at 64x128 with dynamic batch and size (our exporter, parity
    checked), and the PyTorch model in eval mode."""
    d = tmp_path_factory.mktemp("backend_teacher")
    ckpt = save_teacher(d / "teacher.pt")
    onnx = d / "teacher.onnx"
    export_checkpoint(ckpt, onnx, size=SIZE, dynamic=True, parity_images=1)
    model, info, _ = model_from_checkpoint(ckpt)
    return {"dir": d, "ckpt": ckpt, "onnx": onnx, "model": model.eval(), "info": info}


def _x01(n: int = 2, size: tuple[int, int] = SIZE, seed: int = 0) -> torch.Tensor:
    """Images in 0..1 RGB that are uint8 frames / 255, N x 3 x H x W."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), generator=g).float() / 255.0


def _norm(x01: torch.Tensor, mean, std) -> torch.Tensor:
    return (x01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _reference(model: torch.nn.Module, x_teacher: torch.Tensor) -> torch.Tensor:
    """The PyTorch teacher's logits upsampled to its input, as the export's graph does (`segment`)."""
    with torch.no_grad():
        z = model(x_teacher).logits
    return F.interpolate(z, size=x_teacher.shape[-2:], mode="bilinear", align_corners=False)


def test_onnx_teacher_gives_the_pytorch_teachers_logits(exported: dict) -> None:
    info, model = exported["info"], exported["model"]
    t = BackendTeacher(exported["onnx"], info.classes, S_MEAN, S_STD)
    assert (t.kind, t.source, t.teacher_classes, t.feature_info) == ("onnx", str(exported["onnx"]), info.classes, [])
    assert t.stride == 1 and t.num_classes == len(info.classes)  # our export upsamples the logits in the graph
    assert t.fixed_batch is None and t.fixed_size is None and t.class_map is None
    x01 = _x01(3)
    out = t(_norm(x01, S_MEAN, S_STD).contiguous(memory_format=torch.channels_last))  # as run_teacher passes it
    ref = _reference(model, _norm(x01, info.mean, info.std))
    assert out.logits.dtype == torch.float32 and out.logits.shape == (3, len(info.classes), *SIZE)
    assert out.aux is None and out.features == {}
    torch.testing.assert_close(out.logits, ref, atol=1e-4, rtol=1e-4)
    # another size through the dynamic graph
    x01 = _x01(1, (32, 96), seed=1)
    torch.testing.assert_close(t(_norm(x01, S_MEAN, S_STD)).logits, _reference(model, _norm(x01, info.mean, info.std)),
                               atol=1e-4, rtol=1e-4)
    assert t.preprocessing()["mean"] == list(info.mean) and t.preprocessing()["stride"] == 1
    t.close()
    t.close()


def test_run_teacher_targets_equal_pytorch_within_float16(exported: dict) -> None:
    """The issue's parity test at the level of the cache builder's teacher pass (what each cache file holds)."""
    info, model = exported["info"], exported["model"]
    t = BackendTeacher(exported["onnx"], info.classes, info.mean, info.std)
    xs = [_norm(_x01(1, SIZE, seed=s), info.mean, info.std)[0] for s in range(3)]
    got = run_teacher(t, xs, ["logits"], "cpu", 2)
    ref = run_teacher(model, xs, ["logits"], "cpu", 2)
    for g, r in zip(got, ref):
        up = F.interpolate(r["logits"][None], size=SIZE, mode="bilinear", align_corners=False)[0]
        assert g["logits"].shape == up.shape
        # as stored: float16, equal within one float16 step
        torch.testing.assert_close(g["logits"].half().float(), up.half().float(), rtol=2 ** -10, atol=1e-4)


def test_cache_from_onnx_teacher_equals_pytorch_cache(exported: dict, tmp_path: Path) -> None:
    from train.config import load_config
    from train.teachers.cache_build import build_cache

    cfg = load_config(tiny_config(tmp_path), ["data.scale_range=[1,1]", "data.flip=false", "data.color_jitter=0",
                                              "data.crop_size=[64,128]"])
    a = build_cache(exported["ckpt"], cfg, tmp_path / "pt", ["logits"], quiet=True)
    b = build_cache(exported["onnx"], cfg, tmp_path / "onnx", ["logits"], quiet=True)
    assert a["outputs"]["logits"]["stride"] > 1 and b["outputs"]["logits"]["stride"] == 1
    for i in range(len(a["image_ids"])):
        pt = torch.from_numpy(np.load(tmp_path / "pt" / "logits" / f"{i:06d}.npy").astype(np.float32))
        ox = torch.from_numpy(np.load(tmp_path / "onnx" / "logits" / f"{i:06d}.npy").astype(np.float32))
        up = F.interpolate(pt[None], size=ox.shape[-2:], mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(ox, up.half().float(), rtol=2e-3, atol=2e-3)  # two float16 roundings


def test_openvino_ir_teacher_matches_pytorch(exported: dict) -> None:
    from export.openvino import convert

    info, model = exported["info"], exported["model"]
    xml = exported["dir"] / "teacher.openvino.xml"
    convert(exported["onnx"], xml, frames=1)
    t = BackendTeacher(xml, info.classes, S_MEAN, S_STD, threads=1)
    assert t.kind == "openvino" and t.stride == 1 and t.feature_info == []
    x01 = _x01(2)
    torch.testing.assert_close(t(_norm(x01, S_MEAN, S_STD)).logits, _reference(model, _norm(x01, info.mean, info.std)),
                               atol=1e-3, rtol=1e-3)


def test_fixed_size_uint8_bgr_graph_resizes_and_runs_one_image_at_a_time(exported: dict) -> None:
    """A static 32x64, batch-1 export taking uint8 BGR frames: the crop is resized to 32x64 (antialiased,
    since it shrinks), rounded to uint8, and run image by image."""
    info, model = exported["info"], exported["model"]
    onnx = exported["dir"] / "teacher.u8.onnx"
    export_graph(model, info, onnx, size=(32, 64), uint8_input="bgr")
    t = BackendTeacher(onnx, info.classes, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # identity: x is x01 exactly
    assert t.fixed_batch == 1 and t.fixed_size == (32, 64) and t.stride == 1
    x01 = _x01(3)
    out = t(x01).logits
    assert out.shape == (3, len(info.classes), 32, 64)
    small = F.interpolate(x01, size=(32, 64), mode="bilinear", align_corners=False, antialias=True)
    q = (small * 255).round().clamp(0, 255) / 255
    torch.testing.assert_close(out, _reference(model, _norm(q, info.mean, info.std)), atol=1e-4, rtol=1e-4)


def test_argmax_export_missing_and_broken_files_are_refused(exported: dict, tmp_path: Path) -> None:
    info, model = exported["info"], exported["model"]
    labels = tmp_path / "teacher.labels.onnx"
    export_graph(model, info, labels, size=SIZE, argmax=True)
    with pytest.raises(UserError, match=r"must output logits: re-export it with python -m export.onnx --output native") as e:
        BackendTeacher(labels, info.classes, S_MEAN, S_STD)
    assert "teacher.labels.onnx" in str(e.value) and "\n" not in str(e.value)
    missing = tmp_path / "nope" / "teacher.onnx"
    with pytest.raises(UserError, match="does not exist") as e:
        BackendTeacher(missing, info.classes, S_MEAN, S_STD)
    assert str(missing) in str(e.value)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(exported["onnx"].read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated or corrupt"):
        BackendTeacher(broken, info.classes, S_MEAN, S_STD)


def test_other_classes_are_refused_without_a_map_and_mapped_with_one(exported: dict) -> None:
    info, model = exported["info"], exported["model"]
    pytest.importorskip("train.teachers.class_map")
    with pytest.raises(UserError, match=r"gets no teacher class: lorry \(the classes of the teacher teacher.onnx are road"):
        BackendTeacher(exported["onnx"], [*info.classes[:-1], "lorry"], S_MEAN, S_STD)
    # student: the teacher's classes with 'car', 'truck' merged into 'vehicle'
    student = [c for c in info.classes if c not in ("car", "truck")] + ["vehicle"]
    spec = {"vehicle": ["car", "truck"]}
    t = BackendTeacher(exported["onnx"], student, S_MEAN, S_STD, class_map_spec=spec)
    assert t.class_map is not None and t.num_classes == len(student) and t.teacher_classes == info.classes
    x01 = _x01(1)
    z = _reference(model, _norm(x01, info.mean, info.std))
    idx = {c: i for i, c in enumerate(info.classes)}
    want = torch.stack([z[:, idx[c]] if c != "vehicle" else torch.logsumexp(z[:, [idx["car"], idx["truck"]]], 1)
                        for c in student], 1)
    torch.testing.assert_close(t(_norm(x01, S_MEAN, S_STD)).logits, want, atol=1e-4, rtol=1e-4)


def test_require_features_refuses_feature_methods_for_exported_teachers() -> None:
    with pytest.raises(UserError) as e:
        require_features("lfd", ["logits", "decoder"], "t.onnx")
    msg = str(e.value)
    assert "method=lfd" in msg and "t.onnx" in msg and "decoder" in msg and "\n" not in msg
    assert "kd, cwd with distill.cwd.features=false" in msg and "pseudo_labels" in msg and ".pt" in msg
    with pytest.raises(UserError, match="method=fitnet"):
        require_features("fitnet", ["decoder"], "t.engine")
    require_features("kd", ["logits"], "t.onnx")
    require_features("lfd", ["logits", "decoder"], "t.pt")  # a PyTorch teacher has features
    assert logit_methods() == ["kd", "cwd with distill.cwd.features=false"]  # from train/losses teacher_reads
    assert all(is_backend_teacher(f"m{s}") for s in BACKEND_SUFFIXES) and is_backend_teacher("M.ONNX")
    assert not any(is_backend_teacher(s) for s in ("t.pt", "hf:models/segformer", "t.pth", "t.bin"))


def test_imagenet_constants_are_the_tiny_teachers(exported: dict) -> None:
    """The tests above rely on the student normalising otherwise than the teacher."""
    assert tuple(exported["info"].mean) == IMAGENET_MEAN and tuple(exported["info"].std) == IMAGENET_STD
    assert S_MEAN != IMAGENET_MEAN
