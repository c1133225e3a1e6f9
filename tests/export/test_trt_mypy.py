"""mypy checks the TensorRT code against tensorrt-stubs (scripts/lint_trt.sh), and would catch a
misspelt TensorRT attribute: the only check of the TensorRT calls possible without TensorRT."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None
                                or not any((Path(sys.prefix) / "lib").glob("python*/site-packages/tensorrt/__init__.pyi")),
                                reason="needs mypy and tensorrt-stubs (pip install --no-deps tensorrt-stubs)")

PROBE = """import tensorrt as trt

builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
config = builder.create_builder_config()
config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 20)
config.bogus_attribute = 1
context = trt.Runtime(trt.Logger()).deserialize_cuda_engine(b"").create_execution_context()
context.execute_async_v3(0)
context.nonexistent_call()
"""


def _mypy(*paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", *paths], cwd=ROOT,
                          capture_output=True, text=True)


def test_trt_code_passes_and_a_misspelt_attribute_is_caught(tmp_path):
    gen = subprocess.run(["bash", "scripts/lint_trt.sh"], cwd=ROOT, capture_output=True, text=True)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    probe = tmp_path / "probe_trt.py"
    probe.write_text(PROBE)
    res = _mypy(str(probe))
    errors = [line for line in res.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, res.stdout
    assert '"IBuilderConfig" has no attribute "bogus_attribute"  [attr-defined]' in errors[0]
    assert '"IExecutionContext" has no attribute "nonexistent_call"  [attr-defined]' in errors[1]
