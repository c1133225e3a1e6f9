"""export.trt without TensorRT (this machine): one sentence, exit code 2, nothing written; and the
engine sidecar it writes, read back by the runtime and checked against another TensorRT / GPU."""

from __future__ import annotations

import importlib
import json

import pytest
from trt_onnx_models import write_model

from export.trt import default_engine_path, main, make_sidecar
from export.trt_choices import capabilities_for_version, choose_build, inspect_onnx, resolve_profile
from runtime.backends.tensorrt_backend import check_engine_compat
from runtime.errors import UserError
from runtime.metadata import info_from_sidecar, profile_bounds, read_sidecar, sidecar_path, write_sidecar
from runtime.trt_version import parse_trt_version

REAL_TRT = importlib.util.find_spec("tensorrt") is not None and hasattr(importlib.import_module("tensorrt"), "__version__")
ORIN = {"name": "Orin", "compute_capability": "8.7"}


@pytest.mark.skipif(REAL_TRT, reason="TensorRT is installed here")
def test_cli_without_tensorrt_prints_one_sentence_and_makes_nothing(tmp_path, capsys):
    onnx = write_model(tmp_path / "s.onnx")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["--onnx", str(onnx), "--precision", "fp16", "--timing-cache", str(tmp_path / "t.cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: tensorrt is not installed")
    assert "pip install tensorrt" in err[0] and "JetPack" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_missing_onnx(tmp_path, capsys):
    assert main(["--onnx", str(tmp_path / "nope.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--onnx", "x.onnx", "--precision", "int4"])


def _sidecar(tmp_path, version="10.3.0.26", device=ORIN, dynamic=False, version_compatible=False):
    dims = ("N", 3, 64, 128) if dynamic else (1, 3, 64, 128)
    onnx = write_model(tmp_path / "s.fp16.onnx", "fp16", dims)
    info = inspect_onnx(onnx)
    caps = capabilities_for_version(parse_trt_version(version))
    choice = choose_build(caps, info.kind, None, onnx.name, False)
    spec = ("1x3x64x128", "2x3x64x128", "4x3x64x128") if dynamic else (None, None, None)
    profile = resolve_profile("images", info.inputs["images"], *spec)
    engine = default_engine_path(onnx)
    engine.write_bytes(b"plan")
    side = make_sidecar(onnx=onnx, onnx_sha256="0" * 64, info=info, choice=choice, profile=profile, trt_version=version,
                        device=device, engine=engine, engine_sha256="1" * 64, dla_core=None, workspace_mib=512,
                        timing_cache=None, calibration=None, version_compatible=version_compatible,
                        build_seconds=1.234, notes=list(choice.notes))
    write_sidecar(engine, side)
    return engine


def test_sidecar_round_trip(tmp_path):
    engine = _sidecar(tmp_path)
    assert engine.name == "s.fp16.engine" and sidecar_path(engine).name == "s.fp16.engine.json"
    side = read_sidecar(engine)
    assert side["precision"] == "fp16" and side["strongly_typed"] is True and side["jetpack"] == ["6.1", "6.2"]
    assert side["inputs"] == {"images": {"min": [1, 3, 64, 128], "opt": [1, 3, 64, 128], "max": [1, 3, 64, 128]}}
    assert side["input_shape"] == [1, 3, 64, 128] and side["onnx"]["kind"] == "fp16"
    assert side["metadata"]["lfd_edge.source"] == {"sha256": "abc"}
    info = info_from_sidecar(side)
    assert info.classes == ["road", "car"] and info.input_size == (64, 128)
    check_engine_compat(side, "10.3.0.26", dict(ORIN))  # same TensorRT and GPU: accepted
    check_engine_compat(side, "10.3.0", dict(ORIN))  # the build number does not matter


def test_dynamic_profile_in_sidecar(tmp_path):
    side = read_sidecar(_sidecar(tmp_path, dynamic=True))
    assert side["input_shape"] is None
    assert profile_bounds(side, "images") == ((1, 3, 64, 128), (4, 3, 64, 128))


def test_refuses_other_tensorrt_version(tmp_path):
    side = read_sidecar(_sidecar(tmp_path, version="8.5.2.2"))
    with pytest.raises(UserError) as e:
        check_engine_compat(side, "10.3.0", ORIN)
    msg = str(e.value)
    assert "TensorRT 8.5.2 (JetPack 5.1)" in msg and "this is TensorRT 10.3.0" in msg
    assert "python -m export.trt --onnx" in msg and "s.fp16.onnx" in msg


def test_version_compatible_engine_runs_on_later_not_earlier(tmp_path):
    side = read_sidecar(_sidecar(tmp_path, version="10.3.0", version_compatible=True))
    check_engine_compat(side, "10.13.0", ORIN)
    with pytest.raises(UserError, match=r"10.3.0 \(JetPack 6.1/6.2\) but this is TensorRT 10.2.0, and version-compatible"):
        check_engine_compat(side, "10.2.0", ORIN)


@pytest.mark.parametrize("device", [{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
                                    {"name": "Orin Nano", "compute_capability": "8.7"}])
def test_refuses_other_gpu(tmp_path, device):
    side = read_sidecar(_sidecar(tmp_path))
    with pytest.raises(UserError, match=r"built for Orin \(compute capability 8.7\) but this GPU is"):
        check_engine_compat(side, "10.3.0", device)


def test_missing_and_broken_sidecar(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match=r"m.engine has no sidecar m.engine.json.*python -m export.trt"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text('{"precision": "fp16"}')
    with pytest.raises(UserError, match="lacks tensorrt_version, device, inputs, metadata"):
        read_sidecar(engine)


def test_a_sidecar_of_a_newer_format_is_refused(tmp_path):
    engine = _sidecar(tmp_path)
    side = read_sidecar(engine)
    assert side["format_version"] == 1
    sidecar_path(engine).write_text(json.dumps({**side, "format_version": 2}))
    with pytest.raises(UserError, match=r"format version 2, newer than this LFD-Edge reads \(1\); upgrade"):
        read_sidecar(engine)


@pytest.mark.parametrize("option, value", [("--workspace", "0"), ("--workspace", "-5"), ("--dla", "-1")])
def test_out_of_range_numbers_are_usage_errors_naming_the_option(capsys, option, value):
    with pytest.raises(SystemExit) as e:
        main(["--onnx", "x.onnx", option, value])
    assert e.value.code == 2 and f"argument {option}: '{value}' is not an integer >= " in capsys.readouterr().err
