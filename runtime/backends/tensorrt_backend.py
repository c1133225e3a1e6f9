"""Native TensorRT engine backend (no torch): an `.engine` plus the `.engine.json` sidecar that
`python -m export.trt` writes beside it.

Before anything is deserialized, `check_engine_compat` compares the sidecar with this machine: a plain
engine runs only under the TensorRT major.minor.patch it was built with (a VERSION_COMPATIBLE one also
under later versions), and only on a GPU of the same name and compute capability. Two I/O APIs:
- named tensors (TensorRT 8.5+, the only one from 10 on): set_input_shape, set_tensor_address,
  execute_async_v3;
- bindings (TensorRT 8.x before 8.5, and 8.5 where the named API is missing): set_binding_shape,
  execute_async_v2.
Each is one small class (`_NamedTensors`, `_Bindings`), chosen with hasattr on the engine. Host buffers
are page-locked and copies run on
one CUDA stream (cuda-python or pycuda, runtime.backends.tensorrt_cuda).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from runtime.backends.base import Backend
from runtime.errors import UserError
from runtime.metadata import DataInfo, info_from_sidecar, profile_bounds, read_sidecar
from runtime.trt_version import engine_runs_on, import_tensorrt, jetpacks_for, parse_trt_version

if TYPE_CHECKING:
    import tensorrt

# TensorRT DataType name -> numpy dtype for engine I/O
TRT_NP_DTYPES: dict[str, np.dtype[Any]] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


def check_engine_compat(sidecar: dict[str, Any], trt_version: str, device: dict[str, str]) -> None:
    """Raise UserError when the engine described by `sidecar` cannot run under TensorRT `trt_version`
    on `device` ({"name", "compute_capability"}), saying which differs and how to rebuild."""
    source = sidecar.get("onnx", {}).get("path") or "MODEL.onnx"
    rebuild = f"rebuild it on this machine with python -m export.trt --onnx {source}"
    built = parse_trt_version(str(sidecar["tensorrt_version"]))
    here = parse_trt_version(trt_version)
    compatible = bool(sidecar.get("version_compatible", False))
    if not engine_runs_on(built, here, compatible):
        jp = jetpacks_for(built)
        jp_note = f" (JetPack {'/'.join(jp)})" if jp else ""
        rule = ("version-compatible engines load only under that version or a later one" if compatible
                else "TensorRT engines only load under the version that built them")
        raise UserError(f"the engine was built with TensorRT {built.short}{jp_note} but this is TensorRT {here.short}, "
                        f"and {rule}: {rebuild}")
    want_cc, got_cc = str(sidecar["device"].get("compute_capability")), str(device.get("compute_capability"))
    want_name, got_name = str(sidecar["device"].get("name", "")).strip(), str(device.get("name", "")).strip()
    if want_cc != got_cc or want_name != got_name:
        raise UserError(f"the engine was built for {want_name} (compute capability {want_cc}) but this GPU is "
                        f"{got_name} (compute capability {got_cc}); TensorRT engines are tuned to one GPU: {rebuild}")


def np_dtype_for(trt_dtype_name: str) -> np.dtype[Any]:
    """numpy dtype of a TensorRT DataType name (e.g. 'HALF'); UserError for types numpy lacks (BF16, FP8)."""
    key = trt_dtype_name.rsplit(".", 1)[-1].upper()
    if key not in TRT_NP_DTYPES:
        raise UserError(f"the engine has an input or output of type {key}, which this runtime cannot copy to numpy; "
                        "export the model with float32/float16 inputs and outputs")
    return TRT_NP_DTYPES[key]


def dims_tuple(dims: Any) -> tuple[int, ...]:
    """A TensorRT Dims (indexable, with len) as a tuple of ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def check_in_profile(shape: tuple[int, ...], bounds: tuple[tuple[int, ...], tuple[int, ...]], engine: str) -> None:
    lo, hi = bounds
    if len(shape) != len(lo) or any(not (a <= s <= b) for a, s, b in zip(lo, shape, hi)):
        fmt = lambda d: "x".join(map(str, d))  # noqa: E731
        raise UserError(f"{engine} accepts inputs from {fmt(lo)} to {fmt(hi)} but got {fmt(shape)}; resize the input "
                        "or rebuild with python -m export.trt --min/--opt/--max")


# --- the TensorRT 8.x binding API (absent from the 10.x stubs; declared here so mypy checks its use) --

class _BindingEngine(Protocol):
    num_bindings: int

    def binding_is_input(self, index: int) -> bool: ...
    def get_binding_name(self, index: int) -> str: ...
    def get_binding_dtype(self, index: int) -> Any: ...


class _BindingContext(Protocol):
    def set_binding_shape(self, binding: int, shape: tuple[int, ...]) -> bool: ...
    def get_binding_shape(self, binding: int) -> Any: ...
    def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool: ...


@dataclass
class _IO:
    name: str
    index: int
    is_input: bool
    dtype: np.dtype[Any]
    shape: tuple[int, ...] = ()  # as the engine declares it (-1 = dynamic)
    device: int = 0
    nbytes: int = 0
    host: np.ndarray | None = None


# --- the two I/O implementations (after Polygraphy's _infer_impl_v3 / _infer_impl_legacy) ----------

class _NamedTensors:
    """TensorRT 8.5+ (the only API from 10 on): tensors by name, set_input_shape, set_tensor_address,
    execute_async_v3."""

    def __init__(self, engine: tensorrt.ICudaEngine, context: tensorrt.IExecutionContext) -> None:
        self.engine, self.context = engine, context

    def tensors(self) -> list[_IO]:
        import tensorrt

        e = self.engine
        return [_IO(name, i, e.get_tensor_mode(name) == tensorrt.TensorIOMode.INPUT,
                    np_dtype_for(e.get_tensor_dtype(name).name), dims_tuple(e.get_tensor_shape(name)))
                for i, name in ((i, e.get_tensor_name(i)) for i in range(e.num_io_tensors))]

    def set_input_shape(self, inp: _IO, out: _IO, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The output shape for input `shape`, or None when TensorRT rejects it."""
        if not self.context.set_input_shape(inp.name, shape):
            return None
        return dims_tuple(self.context.get_tensor_shape(out.name))

    def execute(self, ios: list[_IO], stream: int) -> bool:
        for io in ios:
            self.context.set_tensor_address(io.name, io.device)
        return bool(self.context.execute_async_v3(stream))


class _Bindings:
    """TensorRT 8.x before 8.5 (and 8.5 builds without the named API): binding indices,
    set_binding_shape, execute_async_v2."""

    def __init__(self, engine: tensorrt.ICudaEngine, context: tensorrt.IExecutionContext) -> None:
        self.engine, self.context = cast(_BindingEngine, engine), cast(_BindingContext, context)

    def tensors(self) -> list[_IO]:
        e = self.engine
        return [_IO(e.get_binding_name(i), i, e.binding_is_input(i), np_dtype_for(e.get_binding_dtype(i).name),
                    dims_tuple(self.context.get_binding_shape(i))) for i in range(e.num_bindings)]

    def set_input_shape(self, inp: _IO, out: _IO, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        if not self.context.set_binding_shape(inp.index, shape):
            return None
        return dims_tuple(self.context.get_binding_shape(out.index))

    def execute(self, ios: list[_IO], stream: int) -> bool:
        bindings = [0] * self.engine.num_bindings
        for io in ios:
            bindings[io.index] = io.device
        return bool(self.context.execute_async_v2(bindings, stream))


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, info: DataInfo | None = None, device_index: int = 0) -> None:
        """`info`: overrides the sidecar's data block; `device_index`: the CUDA device to run on."""
        super().__init__(path)
        self.sidecar = read_sidecar(self.path)
        self.info = info or info_from_sidecar(self.sidecar)
        trt = import_tensorrt("running TensorRT engines")
        from runtime.backends.tensorrt_cuda import open_cuda

        self.cuda = open_cuda(device_index)
        self._io: list[_IO] = []
        try:
            check_engine_compat(self.sidecar, trt.__version__, self.cuda.device_info())
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        import tensorrt  # typed by the tensorrt-stubs; import_tensorrt above gave the install hint

        self.logger = tensorrt.Logger(tensorrt.Logger.WARNING)
        self.runtime = tensorrt.Runtime(self.logger)
        if self.sidecar.get("version_compatible") and hasattr(self.runtime, "engine_host_code_allowed"):
            # Version-compatible plans embed the lean runtime (host code); trust only engines we built.
            self.runtime.engine_host_code_allowed = True
        engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise UserError(f"TensorRT could not deserialize {self.path} (see its log above); rebuild it with python -m "
                            f"export.trt on this machine")
        self.engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise UserError(f"TensorRT could not create an execution context for {self.path} (out of GPU memory?)")
        self.context = context
        named = hasattr(engine, "num_io_tensors") and hasattr(context, "execute_async_v3")
        self._api: _NamedTensors | _Bindings = _NamedTensors(engine, context) if named else _Bindings(engine, context)
        self._io = self._api.tensors()
        inputs = [io for io in self._io if io.is_input]
        outputs = [io for io in self._io if not io.is_input]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{self.path.name} has {len(inputs)} inputs and {len(outputs)} outputs; this backend runs "
                            "segmentation engines with one image input and one logits/labels output")
        self._in, self._out = inputs[0], outputs[0]
        self.input_shape = self._in.shape if all(d > 0 for d in self._in.shape) else None
        self.output_kind = "labels" if self._out.dtype.kind in "iub" or self._out.name == "labels" else "logits"
        self.check_output()  # the output kind (full, native, labels, native-labels) from the metadata
        self._bounds = profile_bounds(self.sidecar, self._in.name)

    def _ensure(self, io: _IO, shape: tuple[int, ...]) -> np.ndarray:
        """Device and pinned host buffers for `io` at `shape`, grown (never shrunk) as needed."""
        nbytes = int(np.prod(shape)) * io.dtype.itemsize
        if nbytes > io.nbytes:
            if io.device:
                self.cuda.free(io.device)
            if io.host is not None:
                self.cuda.free_pinned(io.host)
            io.device, io.nbytes = self.cuda.malloc(nbytes), nbytes
            io.host = self.cuda.pinned((int(np.prod(shape)),), io.dtype)
        assert io.host is not None
        return io.host[: int(np.prod(shape))].reshape(shape)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(int(d) for d in batch.shape)
        if self._bounds is not None:
            check_in_profile(shape, self._bounds, self.path.name)
        host_in = self._ensure(self._in, shape)
        np.copyto(host_in, batch, casting="same_kind")
        out_shape = self._api.set_input_shape(self._in, self._out, shape)
        if out_shape is None:
            raise UserError(f"TensorRT rejected input shape {shape} for {self.path.name}")
        host_out = self._ensure(self._out, out_shape)
        self.cuda.h2d_async(self._in.device, host_in)
        if not self._api.execute([self._in, self._out], self.cuda.stream_handle):
            raise RuntimeError(f"TensorRT failed to enqueue {self.path.name} (see its log above)")
        self.cuda.d2h_async(host_out, self._out.device)
        self.cuda.synchronize()
        return host_out.copy()

    def close(self) -> None:
        cuda = getattr(self, "cuda", None)
        if cuda is None:
            return
        for io in getattr(self, "_io", []):
            if io.device:
                cuda.free(io.device)
                io.device = 0
            if io.host is not None:
                cuda.free_pinned(io.host)
                io.host = None
        # Release TensorRT objects before the CUDA stream/context they used.
        for attr in ("context", "engine", "runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
        cuda.close()
        self.cuda = None  # type: ignore[assignment]
