"""Import heavy optional dependencies where they are used, with a one-line install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from runtime.errors import MissingDependency

# module name -> what to install
INSTALL_HINTS: dict[str, str] = {
    "torch": "pip install 'lfd-edge[train]' (or: pip install torch torchvision)",
    "timm": "pip install 'lfd-edge[train]' (or: pip install timm)",
    "onnx": "pip install 'lfd-edge[export]' (or: pip install onnx)",
    "onnxslim": "pip install onnxslim",
    "onnxconverter_common": "pip install onnxconverter-common",
    "tensorrt": "TensorRT: on x86_64 use NVIDIA's index (pip install tensorrt --extra-index-url https://pypi.nvidia.com) or the container in Dockerfile; on Jetson it ships with JetPack (python3-libnvinfer)",
    "pycuda": "pip install pycuda (needs the CUDA toolkit), or pip install cuda-python",
    "cuda": "pip install cuda-python",
    "modelopt": "pip install 'nvidia-modelopt[onnx]'",
    "matplotlib": "pip install matplotlib",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu)",
    "openvino": "pip install 'lfd-edge[openvino]' (or: pip install openvino)",
    "nncf": "pip install 'lfd-edge[openvino]' (or: pip install nncf)",
}


def _missing(name: str, purpose: str) -> MissingDependency:
    top = name.split(".")[0]
    hint = INSTALL_HINTS.get(top, f"pip install {top}")
    what = f" (needed for {purpose})" if purpose else ""
    return MissingDependency(f"{top} is not installed{what}: {hint}.")


def lazy_import(name: str, purpose: str = "") -> ModuleType:
    """Import `name` or raise `MissingDependency` with the install hint of its top-level package."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise _missing(name, purpose) from e


def require(name: str, purpose: str = "") -> None:
    """Raise `MissingDependency` (as lazy_import) unless `name` is installed, without importing it: for
    work that runs the module in another process."""
    if not has_module(name):
        raise _missing(name, purpose)


def has_module(name: str) -> bool:
    """True when `name` can be imported (without importing anything else)."""
    return importlib.util.find_spec(name) is not None  # type: ignore[attr-defined]
