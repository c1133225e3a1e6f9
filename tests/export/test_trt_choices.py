"""Build planning across TensorRT 8.5 / 10.3 / 10.13 / 11.4, shape profiles, ONNX inspection."""

from __future__ import annotations

import pytest
from trt_onnx_models import write_model

from export.trt_choices import capabilities_for_version, choose_build, inspect_onnx, resolve_profile
from runtime.errors import UserError
from runtime.trt_version import parse_trt_version

V85, V103, V1013, V114 = (capabilities_for_version(parse_trt_version(v)) for v in ("8.5.2.2", "10.3.0", "10.13.0.35", "11.4.1"))


def choose(caps, kind, want, calib=True):
    return choose_build(caps, kind, want, "s.onnx", calib)


@pytest.mark.parametrize("caps", [V103, V1013, V114])
@pytest.mark.parametrize("kind,want,prec", [("fp16", None, "fp16"), ("fp16", "fp16", "fp16"),
                                            ("qdq", None, "int8"), ("qdq", "int8", "int8")])
def test_typed_models_build_strongly_typed_from_10_on(caps, kind, want, prec):
    p = choose(caps, kind, want, calib=False)
    assert (p.precision, p.strongly_typed, p.flags, p.calibrator) == (prec, True, (), False)


@pytest.mark.parametrize("kind,flag,prec", [("fp16", "FP16", "fp16"), ("qdq", "INT8", "int8")])
def test_typed_models_on_85_use_the_builder_flag_without_calibrator(kind, flag, prec):
    p = choose(V85, kind, None, calib=False)
    assert (p.precision, p.strongly_typed, p.flags, p.calibrator) == (prec, False, (flag,), False)


@pytest.mark.parametrize("caps", [V85, V103, V1013])
def test_fp32_model_uses_flags_and_legacy_calibrator_before_11(caps):
    assert choose(caps, "fp32", "fp32") == choose(caps, "fp32", None)
    p32 = choose(caps, "fp32", None)
    assert (p32.precision, p32.strongly_typed, p32.flags) == ("fp32", False, ())
    p16 = choose(caps, "fp32", "fp16")
    assert (p16.precision, p16.flags, p16.calibrator) == ("fp16", ("FP16",), False)
    p8 = choose(caps, "fp32", "int8")
    assert (p8.precision, p8.flags, p8.calibrator, p8.strongly_typed) == ("int8", ("INT8",), True, False)
    # The calibrator is deprecated from 10.1 on: said so, still used.
    assert bool(p8.notes) == (caps.version.minor >= 1 and caps.version.major == 10)


def test_fp32_int8_needs_calibration_data():
    with pytest.raises(UserError, match="--calib-data"):
        choose(V103, "fp32", "int8", calib=False)


def test_trt11_refuses_lower_precision_from_an_fp32_model():
    assert choose(V114, "fp32", None).strongly_typed  # 11: every network is strongly typed
    with pytest.raises(UserError, match=r"calib\.quantize --onnx s\.onnx --target trt"):
        choose(V114, "fp32", "int8")
    with pytest.raises(UserError, match=r"calib\.quantize --onnx s\.onnx --fp16"):
        choose(V114, "fp32", "fp16")


@pytest.mark.parametrize("caps", [V85, V1013, V114])
@pytest.mark.parametrize("kind,want,msg", [("fp16", "fp32", "FP16 model"), ("fp16", "int8", "--target trt"),
                                           ("qdq", "fp16", "Q/DQ"), ("qdq", "fp32", "Q/DQ")])
def test_precision_that_disagrees_with_the_model_is_an_error_never_a_silent_change(caps, kind, want, msg):
    with pytest.raises(UserError, match=msg):
        choose(caps, kind, want)


def test_capabilities_table():
    assert (V85.explicit_batch_flag, V85.strongly_typed, V85.named_tensors, V85.version_compatible) == (True, False, True, False)
    assert (V103.explicit_batch_flag, V103.strongly_typed, V103.calibrator_deprecated) == (False, True, True)
    assert (V114.precision_flags, V114.legacy_calibrator) == (False, False)


def test_resolve_profile_static_dynamic_and_errors():
    assert resolve_profile("images", (1, 3, 64, 128), None, None, None).static
    p = resolve_profile("images", (-1, 3, -1, -1), None, None, None, default_hw=(64, 128))
    assert p.opt == (1, 3, 64, 128) and p.static
    p = resolve_profile("images", (-1, 3, -1, -1), "1x3x64x128", "2x3x128x256", "4x3x256x512")
    assert (p.min, p.opt, p.max, p.static) == ((1, 3, 64, 128), (2, 3, 128, 256), (4, 3, 256, 512), False)
    with pytest.raises(UserError, match="give --min, --opt and --max"):
        resolve_profile("images", (-1, 3, -1, -1), None, None, None)
    with pytest.raises(UserError, match="all three"):
        resolve_profile("images", (-1, 3, -1, -1), "1x3x64x128", None, None)
    with pytest.raises(UserError, match="has 3 dims"):
        resolve_profile("images", (-1, 3, -1, -1), "1x3x64", "1x3x64", "1x3x64")
    with pytest.raises(UserError, match="fixes it at 3"):
        resolve_profile("images", (-1, 3, -1, -1), "1x1x64x64", "1x1x64x64", "1x1x64x64")
    with pytest.raises(UserError, match="fixes it at 64"):
        resolve_profile("images", (1, 3, 64, 128), "1x3x32x128", "1x3x64x128", "1x3x64x128")
    with pytest.raises(UserError, match="min <= opt <= max"):
        resolve_profile("images", (-1, 3, -1, -1), "2x3x64x128", "1x3x64x128", "4x3x64x128")


@pytest.mark.parametrize("kind", ["fp32", "fp16", "qdq"])
def test_inspect_onnx_kind_inputs_metadata(tmp_path, kind):
    info = inspect_onnx(write_model(tmp_path / f"m.{kind}.onnx", kind, dims=("N", 3, 64, 128)))
    assert info.kind == kind
    assert info.inputs == {"images": (-1, 3, 64, 128)}
    assert list(info.outputs) == ["logits"]
    assert "lfd_edge.data" in info.metadata


def test_inspect_onnx_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        inspect_onnx(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        inspect_onnx(tmp_path / "bad.onnx")
