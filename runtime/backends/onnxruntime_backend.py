"""ONNX Runtime backend: CPU, CUDA or TensorRT execution providers, whichever are asked for and available.

This is the one way the project opens an ONNX Runtime session: runtime.infer/eval/bench, the export
parity check (export/onnx_parity.py) and calibration's mIoU and sensitivity (calib/) all measure the
same session options the device runs.

The model's `DataInfo` comes from its metadata property `lfd_edge.data` (written by `python -m export.onnx`);
the output name (`logits` or `labels`) sets `output_kind`; a static input shape is read from the session.
Graph optimisation is at ORT_ENABLE_ALL. With the CUDA provider, outputs are bound to device memory
(I/O binding) and copied back once per call, which avoids ORT's per-run output allocation.

Throughput (`open_requests(n)`, runtime.infer --throughput): one session per request, each with an even
share of the threads (`threads`, else the usable cores; at least one each), called from its own thread.
Separate sessions, because the concurrent calls of one session share its one intra-op pool and wait for
each other's parallel sections; a session of one thread runs on its caller's thread, with no pool at all.
It costs the weights once per session (a few MB for a student) and one graph optimisation each at start.
Batching frames instead would need a dynamic batch, which the default export (static 1 x 3 x H x W) lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import Backend
from runtime.errors import UserError
from runtime.lazy import lazy_import
from runtime.machine import usable_cores
from runtime.metadata import DataInfo, onnx_data_info

# short names users type -> ORT provider names
PROVIDER_NAMES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
# Used when no providers are given. The TensorRT provider is opt-in: it builds an engine when the
# session starts (minutes for a segmentation model), and `python -m export.trt` makes a reusable engine.
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
# open_requests' default on a GPU provider: two requests, so that one's copies overlap the other's compute
GPU_REQUESTS = 2
# open_requests' default on the CPU: one request per core up to this many, then two or more cores each
MAX_CPU_REQUESTS = 8


def resolve_providers(requested: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Map short or full provider names to ORT names, in order; default: CUDA then CPU where available.

    A requested provider that this onnxruntime build lacks is a UserError naming what is available."""
    if requested is None:
        return [p for p in DEFAULT_PROVIDERS if p in available]
    items = [s.strip() for s in requested.split(",")] if isinstance(requested, str) else list(requested)
    out = []
    for item in items:
        full = PROVIDER_NAMES.get(item.lower(), item)
        if full not in available:
            hint = " (install onnxruntime-gpu)" if full != "CPUExecutionProvider" else ""
            raise UserError(f"ONNX Runtime provider '{item}' is not available in this installation{hint}; "
                            f"available: {', '.join(available)}")
        out.append(full)
    return out


def cpu_requests(total_threads: int) -> int:
    """open_requests' default on the CPU: one single-threaded request per thread up to MAX_CPU_REQUESTS,
    beyond that the fewest threads per request that keep the count within it (16 threads: 8 x 2)."""
    total = max(1, total_threads)
    per = -(-total // MAX_CPU_REQUESTS)
    return max(1, total // per)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: str | Sequence[str] | None = None, threads: int | None = None,
                 info: DataInfo | None = None, io_binding: bool | None = None, spinning: bool | None = None
                 ) -> None:
        """`providers`: e.g. "cpu", "cuda,cpu", ["tensorrt", "cuda", "cpu"]; `threads`: intra-op threads
        (None: ORT's default, one per physical core); `info`: DataInfo for ONNX files exported elsewhere
        (otherwise read from the metadata); `io_binding`: default on with CUDA; `spinning`: whether idle intra-op
        threads busy-wait (ONNX Runtime's default: yes); runtime.infer turns it off, since its other stages
        need those cores."""
        super().__init__(path)
        ort = lazy_import("onnxruntime", "ONNX models")
        self.threads, self.spinning = threads, spinning
        chosen = resolve_providers(providers, ort.get_available_providers())
        self._provider_args: list[Any] = [
            (p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(self.path.parent)})
            if p == "TensorrtExecutionProvider" else p for p in chosen]
        self.session = self._open_session(threads)
        self.providers = self.session.get_providers()

        self.info = onnx_data_info(self.session, self.path, default=info)

        inp = self.session.get_inputs()[0]
        out = self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in inp.shape)
        if len(self.input_shape) != 4:
            raise UserError(f"{self.path} has a rank-{len(self.input_shape)} input '{inp.name}'; expected N x 3 x H x W")
        if (inp.type == "tensor(uint8)") != self.info.uint8_input:
            raise UserError(f"{self.path}'s input '{inp.name}' is {inp.type} but its metadata says input_format "
                            f"'{self.info.input_format}'; re-export it with python -m export.onnx")
        self.input_dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(inp.type, np.float32)
        if out.name in ("logits", "labels"):
            self.output_kind = out.name
        else:
            self.output_kind = "logits" if "float" in out.type and len(out.shape) == 4 else "labels"
        self.check_output()  # the output kind (full, native, labels, native-labels) from the metadata
        use_cuda = self.providers[0] == "CUDAExecutionProvider"
        self._use_binding = use_cuda if io_binding is None else io_binding
        self._binding = self.session.io_binding() if self._use_binding else None
        self._sessions: list[tuple[Any, Any]] = [(self.session, self._binding)]  # (session, binding) per request

    def _open_session(self, threads: int | None) -> Any:
        """A session of this model with `threads` intra-op threads (None: ORT's default), at
        ORT_ENABLE_ALL, spinning as the constructor was told; an unreadable file is a UserError."""
        ort = lazy_import("onnxruntime", "ONNX models")
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state  # type: ignore[import-untyped]

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
        if threads:
            so.intra_op_num_threads = int(threads)
        if self.spinning is not None:  # idle intra-op threads spin by default: cores other threads need
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        # what ONNX Runtime raises for unreadable or invalid model files
        load_errors = (ort_state.InvalidProtobuf, ort_state.InvalidArgument, ort_state.InvalidGraph,
                       ort_state.NoSuchFile, ort_state.Fail, ort_state.NotImplemented)
        try:
            return ort.InferenceSession(str(self.path), so, providers=self._provider_args)
        except load_errors as e:
            raise UserError(f"{self.path} is not a readable ONNX model (truncated or corrupt?): "
                            f"{str(e).splitlines()[0][:200]}; re-export it with python -m export.onnx") from e

    def open_requests(self, n: int | None = None) -> int:
        """`n` sessions (default: GPU_REQUESTS on a GPU provider, else `cpu_requests` of the threads), each
        with an even share of the threads (`threads`, else the usable cores), at least one; they replace
        the session the constructor opened."""
        total = int(self.threads or usable_cores())
        on_cpu = self.providers[0] == "CPUExecutionProvider"
        count = max(1, int(n) if n else (cpu_requests(total) if on_cpu else GPU_REQUESTS))
        per = max(1, total // count)
        sessions = [self._open_session(per) for _ in range(count)]
        self._sessions = [(s, s.io_binding() if self._use_binding else None) for s in sessions]
        self.session, self._binding = self._sessions[0]
        self.requests = count
        return count

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self.infer_request_impl(batch, 0)

    def infer_request_impl(self, batch: np.ndarray, request: int) -> np.ndarray:
        session, binding = self._sessions[request]
        x = batch.astype(self.input_dtype, copy=False)
        if binding is not None:
            binding.bind_cpu_input(self.input_name, x)
            binding.bind_output(self.output_name, "cuda" if "CUDAExecutionProvider" in self.providers else "cpu")
            session.run_with_iobinding(binding)
            y = binding.copy_outputs_to_cpu()[0]
        else:
            y = session.run([self.output_name], {self.input_name: x})[0]
        return y.astype(np.float32) if y.dtype == np.float16 else y  # type: ignore[no-any-return]

    def close(self) -> None:
        self._binding = None
        self._sessions = []
        self.requests = 1
        self.__dict__.pop("session", None)
