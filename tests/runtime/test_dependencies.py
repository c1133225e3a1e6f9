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


def _references(source: str, package: str, any_string: bool = True) -> list[str]:
    """Imports of `package` in one module's source, and the module strings naming it: with `any_string`
    every string constant shaped like "package.x", else only the first argument of import_module(...) and
    __import__(...) (where strings such as the config key "export.size" are data, not modules)."""
    import ast

    def module(value: object, bare: bool) -> str | None:
        v = value.strip() if isinstance(value, str) else ""
        named = v.startswith(f"{package}.") or (bare and v == package)
        return v if named and v.replace(".", "").replace("_", "").isalnum() else None

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == package]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] if node.module.split(".")[0] == package else []
        elif any_string and isinstance(node, ast.Constant) and (m := module(node.value, bare=False)):
            found.append(m)  # (a bare "train" is the split name: data, not a module)
        elif (not any_string and isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
              and (m := module(node.args[0].value, bare=True))):
            found.append(m)
    return found


def _offenders(folder: str, package: str, any_string: bool = True) -> dict[str, list[str]]:
    """{module path: its references to `package`} for every module under `folder` that has any."""
    return {str(p.relative_to(ROOT)): refs for p in sorted((ROOT / folder).rglob("*.py"))
            if (refs := _references(p.read_text(encoding="utf-8"), package, any_string))}


def test_no_runtime_module_names_train():
    """runtime/ is deployable without train/: no import of it and no module string (importlib) naming it;
    backends that need train/ register through the entry point instead."""
    assert _offenders("runtime", "train") == {}
    assert _references("import importlib\nimportlib.import_module('train.checkpoint')", "train") == \
        ["train.checkpoint"]
    assert _references("from train.checkpoint import load_checkpoint", "train") == ["train.checkpoint"]


def test_no_train_module_imports_export():
    """One direction between the two: export/ imports train/ (export.onnx rebuilds the student with
    train.checkpoint), so train/ imports nothing of export/, not even inside a function or through
    importlib (the ONNX and TensorRT rows of the self-test live in export.check for that reason)."""
    assert _offenders("train", "export", any_string=False) == {}
    for source, found in (("from export.onnx import export_checkpoint", ["export.onnx"]),
                          ("def f():\n    import export.trt as t", ["export.trt"]),
                          ("import export", ["export"]),
                          ("import importlib\nimportlib.import_module('export.trt')", ["export.trt"]),
                          ("from importlib import import_module\nimport_module('export')", ["export"]),
                          ("KEY = 'export.size'\nload_config(None, ['export.size=64x128'])", [])):
        assert _references(source, "export", any_string=False) == found, source


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
