"""Opening ONNX files as graphs (onnx.ModelProto) with one-sentence errors: a truncated or corrupt file
names the file, a model without LFD-Edge metadata says how to re-export it. Sessions to run a model come
from the runtime backends (`cpu_session`, `cpu_backend`), the same ones the device runs."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from runtime.backends import Backend, backend_name_for, load_backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.errors import UserError
from runtime.io import check_readable
from runtime.metadata import DataInfo, onnx_data_info


def load_onnx(path: str | Path, check: bool = True) -> onnx.ModelProto:
    """onnx.load + onnx.checker, raising UserError naming `path` for a missing, truncated or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model {path} does not exist; export one with python -m export.onnx")
    check_readable(path, "ONNX model")
    try:
        model = onnx.load(str(path))
        if check:
            onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError) as e:
        raise UserError(f"{path} is not a readable ONNX model (truncated or corrupt: {str(e).splitlines()[0]}); "
                        "export it again") from e
    if not model.graph.node:
        raise UserError(f"{path} holds no graph (truncated or corrupt?); export it again")
    return model


def cpu_session(path: str | Path, threads: int | None = None) -> OnnxRuntimeBackend:
    """The runtime's ONNX Runtime backend on the CPU provider (calibration figures must not depend on
    whether this machine has a GPU); UserError naming `path` when ONNX Runtime cannot load it."""
    return OnnxRuntimeBackend(path, providers="cpu", threads=threads)


def cpu_backend(path: str | Path, threads: int | None = None) -> Backend:
    """The runtime backend that runs `path` on this CPU, chosen from its suffix as runtime.backends chooses
    it: ONNX Runtime's CPU provider for an `.onnx`, OpenVINO's CPU device (f32 precision hint) for an
    OpenVINO IR `.xml` (load_backend passes each backend the options it takes)."""
    name = backend_name_for(path)
    if name not in ("onnxruntime", "openvino"):
        raise UserError(f"calibration runs ONNX (.onnx) and OpenVINO IR (.xml) models on the CPU, not {path} "
                        f"({name})")
    return load_backend(path, name, threads=threads, providers="cpu", device="CPU", precision_hint="f32")


def data_info(model: onnx.ModelProto, path: str | Path) -> DataInfo:
    """The model's `lfd_edge.data` block (runtime.metadata.onnx_data_info), a UserError naming `path` without one."""
    return onnx_data_info(model, path)


def input_size(model: onnx.ModelProto, info: DataInfo) -> tuple[int, int]:
    """The static H x W of input 0, else the data block's input size (dynamic models)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[2].dim_value > 0 and dims[3].dim_value > 0:
        return int(dims[2].dim_value), int(dims[3].dim_value)
    return int(info.input_size[0]), int(info.input_size[1])
