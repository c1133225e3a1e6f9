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
    assert _references("import importlib\nimportlib.import_module('train.engine.checkpoint')", "train") == \
        ["train.engine.checkpoint"]
    assert _references("from train.engine.checkpoint import load_checkpoint", "train") == ["train.engine.checkpoint"]


def test_no_train_module_imports_export():
    """One direction between the two: export/ imports train/ (export.onnx rebuilds the student with
    train.engine.checkpoint), so train/ imports nothing of export/, not even inside a function or through
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


def _module_imports(source: str, name: str) -> set[str]:
    """Modules one file imports, anywhere in it (lazy imports inside functions too, which still make a
    circle), except under `if TYPE_CHECKING:`; `from a.b import c` counts as a.b and, where c is a
    module, a.b.c (the caller keeps the names that are modules)."""
    import ast

    tree = ast.parse(source)
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    package = name.rsplit(".", 1)[0] if not name.endswith("__init__") else name
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's first occurrence by depth-first search (enough to name one per loop)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def package_circles(root: Path, packages: tuple[str, ...]) -> list[list[str]]:
    """Import circles between the files of one package (one folder): a.py imports b.py and b.py, directly
    or through other files of the same folder, imports a.py. Circles across folders are not counted."""
    modules = {}
    for top in packages:
        for p in sorted((root / top).rglob("*.py")):
            rel = p.relative_to(root).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            modules[name] = (p, rel.parent)
    edges: dict[str, set[str]] = {}
    for name, (path, folder) in modules.items():
        if path.name == "__init__.py":
            continue
        imported = _module_imports(path.read_text(encoding="utf-8"), name)
        edges[name] = {m for m in imported if m in modules and m != name and modules[m][1] == folder
                       and modules[m][0].name != "__init__.py"}
    return _circles(edges)


def test_no_import_circle_between_files_of_one_package():
    assert package_circles(ROOT, ("runtime", "train", "export", "calib")) == []


def test_package_circles_finds_a_lazy_circle_and_ignores_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n")
    (pkg / "d.py").write_text("from pkg.c import y\n")
    assert package_circles(tmp_path, ("pkg",)) == [["pkg.a", "pkg.b", "pkg.a"]]
