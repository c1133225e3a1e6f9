"""Every runtime module imports with torch, timm, onnx and tensorrt unavailable (after Polygraphy's
test_dependencies): the layering rule that keeps runtime/ deployable on an edge device."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, pkgutil, sys
for name in ("torch", "torchvision", "timm", "onnx", "tensorrt", "pycuda", "modelopt"):
    sys.modules[name] = None  # any import of these now raises ImportError
import runtime
names = ["runtime"] + [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def test_runtime_imports_without_torch_or_onnx():
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.strip()) >= 20  # backends, sources, datasets, CLIs
