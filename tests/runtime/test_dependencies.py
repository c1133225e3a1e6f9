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


def _train_references(source: str) -> list[str]:
    """Imports of train/ and module strings naming it ("train", "train.x") in one module's source."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "train"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] if node.module.split(".")[0] == "train" else []
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value.strip()
            # (a bare "train" is the split name: data, not a module)
            if value.startswith("train.") and value.replace(".", "").replace("_", "").isalnum():
                found.append(value)
    return found


def test_no_runtime_module_names_train():
    """runtime/ is deployable without train/: no import of it and no module string (importlib) naming it;
    backends that need train/ register through the entry point instead."""
    offenders = {str(p.relative_to(ROOT)): refs for p in sorted((ROOT / "runtime").rglob("*.py"))
                 if (refs := _train_references(p.read_text(encoding="utf-8")))}
    assert offenders == {}
    assert _train_references("import importlib\nimportlib.import_module('train.checkpoint')") == ["train.checkpoint"]
    assert _train_references("from train.checkpoint import load_checkpoint") == ["train.checkpoint"]


def test_the_pytorch_backend_is_found_through_the_entry_point(monkeypatch, tmp_path):
    import pytest

    from runtime import backends
    from runtime.errors import UserError

    assert backends.registry()["torch"] == "train.torch_backend:TorchBackend"  # pyproject.toml
    monkeypatch.setattr(backends, "registry", lambda: dict(backends.BACKENDS))  # a runtime-only install
    ckpt = tmp_path / "s.pt"
    ckpt.write_bytes(b"x")
    with pytest.raises(UserError, match=r"the torch backend is not registered.*pip install -e '\.\[train\]'"):
        backends.load_backend(ckpt)
