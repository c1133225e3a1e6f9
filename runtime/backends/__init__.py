"""Inference backends, chosen from the model file's suffix unless the user names one.

    BACKENDS["onnxruntime"]  ->  "runtime.backends.onnxruntime_backend:OnnxRuntimeBackend"
    load_backend("student.onnx", threads=2)            # suffix .onnx -> onnxruntime
    load_backend("student.onnx", backend="tensorrt")   # explicit

`BACKENDS` lists the backends that live in runtime/. Packages register others under the entry-point
group `lfd_edge.backends` (pyproject.toml): the PyTorch backend for `.pt` checkpoints is one, shipped
with the training code it needs to rebuild a model, which runtime/ itself never imports.
`registry()` is both. Each backend module is imported only when chosen, so that ONNX Runtime users
never import torch and PyTorch users never import tensorrt. Options a backend's constructor does not take (e.g. `threads` for a
TensorRT engine) are ignored, so that one command line can drive every kind of model.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import inspect
from pathlib import Path
from typing import Any

from runtime.backends.base import Backend
from runtime.errors import UserError

__all__ = ["BACKENDS", "ENTRY_POINT_GROUP", "SUFFIXES", "Backend", "backend_class", "backend_name_for",
           "load_backend", "model_format", "registry"]

# name -> "module:Class" of the backends in runtime/ (a plain dictionary: grep here to find them)
BACKENDS: dict[str, str] = {
    "onnxruntime": "runtime.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "runtime.backends.tensorrt_backend:TensorRTBackend",
    "openvino": "runtime.backends.openvino_backend:OpenVINOBackend",
}
# entry-point group through which installed packages add backends (name = "module:Class")
ENTRY_POINT_GROUP = "lfd_edge.backends"
# what to install when a backend named in SUFFIXES is not registered
INSTALL_HINTS: dict[str, str] = {"torch": "pip install -e '.[train]' in an LFD-Edge checkout (it registers the "
                                          "PyTorch backend), or export the checkpoint to ONNX and run the .onnx"}

# file suffix -> backend name
SUFFIXES: dict[str, str] = {
    ".pt": "torch",
    ".pth": "torch",
    ".onnx": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".xml": "openvino",
}

# spellings users type -> backend name
ALIASES: dict[str, str] = {"pytorch": "torch", "pt": "torch", "ort": "onnxruntime", "onnx": "onnxruntime",
                           "trt": "tensorrt", "engine": "tensorrt", "ov": "openvino"}


@functools.cache
def registry() -> dict[str, str]:
    """Every backend this installation has: name -> "module:Class" (BACKENDS, then the entry points)."""
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BACKENDS}


def backend_name_for(path: str | Path, backend: str | None = None) -> str:
    """The backend for `path`: `backend` when given (aliases accepted), else from the file suffix."""
    if backend:
        key = ALIASES.get(backend.lower(), backend.lower())
        names = sorted({*registry(), *INSTALL_HINTS})
        if key not in names:
            close = difflib.get_close_matches(key, names + list(ALIASES), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(f"unknown backend '{backend}'; choose one of {', '.join(names)}.{hint}")
        return key
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        kinds = ", ".join(f"{s} ({n})" for s, n in SUFFIXES.items())
        raise UserError(f"cannot tell the backend of {path} from its suffix '{suffix}'; accepted kinds: {kinds}, "
                        f"or pass --backend {'|'.join(sorted(registry()))}")
    return SUFFIXES[suffix]


def backend_class(name: str) -> type[Backend]:
    """Import and return the class registered under `name` (registry())."""
    target = registry().get(name)
    if target is None:
        raise UserError(f"the {name} backend is not registered in this installation; "
                        f"{INSTALL_HINTS.get(name, 'install the package that provides it')}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            raise UserError(f"the {name} backend is not part of this installation ({module_name} is missing)") from e
        raise
    return getattr(module, cls_name)  # type: ignore[no-any-return]


def load_backend(path: str | Path, backend: str | None = None, **opts: Any) -> Backend:
    """Open `path` with the backend named `backend` (default: from the suffix).

    `opts` (e.g. `threads=2`, `providers=["cpu"]`, `device="cuda"`) go to the backend's constructor where it
    takes them; options that are None are left out so that each backend keeps its own default."""
    from runtime.io import check_readable

    check_readable(path, "model")
    name = backend_name_for(path, backend)
    cls = backend_class(name)
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in opts.items() if v is not None and (takes_any or k in params)}
    return cls(path, **kwargs)


def model_format(path: str | Path) -> str:
    """A short human name of the artefact kind, from the file name: 'pytorch', 'onnx', 'onnx int8 (cpu)',
    'onnx fp16', 'openvino', 'openvino int8', 'tensorrt' (+ precision from the engine sidecar when present)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".pt", ".pth")):
        return "pytorch"
    if name.endswith(".onnx"):
        for tag, label in ((".int8.cpu.onnx", "onnx int8 (cpu)"), (".int8.trt.onnx", "onnx int8 (trt q/dq)"),
                           (".fp16.onnx", "onnx fp16")):
            if name.endswith(tag):
                return label
        return "onnx"
    if name.endswith(".xml"):
        return "openvino int8" if name.endswith(".int8.openvino.xml") else "openvino"
    if name.endswith((".engine", ".plan")):
        from runtime.metadata import read_sidecar

        try:
            return f"tensorrt {read_sidecar(p)['precision']}"
        except UserError:  # no sidecar or a broken one: loading the engine says why
            return "tensorrt"
    return p.suffix.lstrip(".") or "unknown"

