"""The TensorRT backend's CPU-side logic: dtypes, profile checks, refusing to open without TensorRT or
a sidecar, and the import layering (no tensorrt/torch at import time)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

from runtime.backends.tensorrt_backend import (
    TensorRTBackend,
    check_in_profile,
    dims_tuple,
    np_dtype_for,
)
from runtime.errors import MissingDependency, UserError
from runtime.metadata import SIDECAR_FORMAT, sidecar_path
from runtime.trt_version import engine_runs_on, jetpacks_for, parse_trt_version

REAL_TRT = importlib.util.find_spec("tensorrt") is not None and hasattr(importlib.import_module("tensorrt"), "__version__")


def test_output_dtypes():
    assert np_dtype_for("FLOAT") == np.float32 and np_dtype_for("DataType.HALF") == np.float16
    assert [np_dtype_for(n) for n in ("INT32", "UINT8", "INT64")] == [np.int32, np.uint8, np.int64]
    with pytest.raises(UserError, match="BF16"):
        np_dtype_for("BF16")


def test_dims_and_profile_check():
    assert dims_tuple([1, 3, 64, 128]) == (1, 3, 64, 128)
    check_in_profile((2, 3, 64, 128), ((1, 3, 64, 128), (4, 3, 64, 128)), "m.engine")
    with pytest.raises(UserError, match="from 1x3x64x128 to 4x3x64x128 but got 8x3x64x128"):
        check_in_profile((8, 3, 64, 128), ((1, 3, 64, 128), (4, 3, 64, 128)), "m.engine")


def test_versions():
    v = parse_trt_version("10.13.0.35")
    assert (v.major, v.minor, v.patch, v.build, v.short) == (10, 13, 0, 35, "10.13.0")
    assert parse_trt_version("11.4.1+cuda13").short == "11.4.1"
    with pytest.raises(UserError):
        parse_trt_version("ten")
    assert jetpacks_for(parse_trt_version("8.5.2.2")) == ["5.1"] and jetpacks_for(v) == ["7.0", "7.1"]
    assert not engine_runs_on(parse_trt_version("10.3.0"), parse_trt_version("10.3.1"), False)
    assert engine_runs_on(parse_trt_version("10.3.0"), parse_trt_version("11.4.1"), True)
    assert not engine_runs_on(parse_trt_version("8.5.2"), parse_trt_version("10.3.0"), True)  # VC needs 8.6+


def test_missing_sidecar_is_refused_before_tensorrt(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match="has no sidecar"):
        TensorRTBackend(engine)


@pytest.mark.skipif(REAL_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_says_what_to_install(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    side = {"format_version": SIDECAR_FORMAT, "tensorrt_version": "10.3.0", "device": {"name": "Orin", "compute_capability": "8.7"}, "precision": "fp16",
            "inputs": {}, "metadata": {"lfd_edge.data": {"classes": ["a"], "palette": [[0, 0, 0]]}}}
    sidecar_path(engine).write_text(json.dumps(side))
    with pytest.raises(MissingDependency, match="tensorrt is not installed.*pypi.nvidia.com"):
        TensorRTBackend(engine)


def test_import_pulls_in_neither_tensorrt_nor_torch():
    code = ("import sys; import runtime.backends.tensorrt_backend, runtime.backends.tensorrt_cuda, runtime.trt_version; "
            "print(sorted(m for m in ('tensorrt', 'torch', 'pycuda', 'cuda', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
