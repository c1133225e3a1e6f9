"""OpenVINO backend: an OpenVINO IR (`.xml` + `.bin`, by suffix) or an `.onnx` model (`--backend openvino`)
compiled for a CPU, an Intel GPU or NPU, or OpenVINO's AUTO device.

The model's `DataInfo` is the `lfd_edge.data` block: in an IR written by this project it is in the
runtime info under that key (`write_ir`); for an ONNX file OpenVINO's reader puts the ONNX metadata
under `framework`. Compile options (OpenVINO properties):

    device             CPU | GPU | GPU.N | NPU | AUTO               (default CPU)
    performance_hint   latency | throughput                        -> PERFORMANCE_HINT (default latency)
    precision_hint     f32 | bf16 | f16                            -> INFERENCE_PRECISION_HINT (default f32)
    threads            N                                           -> INFERENCE_NUM_THREADS
    num_requests       N (with the throughput hint)                -> PERFORMANCE_HINT_NUM_REQUESTS

The precision hint defaults to f32 so that "OpenVINO FP32" means FP32: on CPUs with AMX or AVX512-BF16
OpenVINO's own default is bf16, which `precision_hint="bf16"` asks for explicitly.

Throughput (`open_requests`, runtime.infer --throughput, which compiles with the throughput hint): the
compiled model's OPTIMAL_NUMBER_OF_INFER_REQUESTS InferRequests (or as many as asked), each run from
its own thread; OpenVINO runs them on its streams at once (the GIL is released while a request runs).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import Backend
from runtime.errors import UserError
from runtime.lazy import lazy_import
from runtime.metadata import ONNX_DATA_KEY, DataInfo

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PERFORMANCE_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
PRECISION_HINTS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
IR_SUFFIX = ".xml"


@functools.cache
def core() -> Any:
    """The process's one openvino.Core. Every reader, compiler and device query goes through it: a
    second Core in the same process, created and queried after the first, can crash the process
    (seen as a segmentation fault after a few dozen model loads in one test run)."""
    return lazy_import("openvino", "OpenVINO models").Core()


def ov_device(device: str | None) -> str:
    """An OpenVINO device name from what a user types (`cpu`, `gpu.1`, `auto`); `--device`'s PyTorch
    spellings `cuda`/`cuda:N` are refused with the OpenVINO names."""
    name = (device or "CPU").strip().upper()
    if name.split(".")[0].split(":")[0] not in DEVICES:
        raise UserError(f"OpenVINO has no device '{device}'; use one of {', '.join(DEVICES)} (GPU.N for the N-th GPU)")
    return name


def read_data_info(model: Any) -> DataInfo | None:
    """The `lfd_edge.data` block of an OpenVINO model: its own runtime info (IRs written by `write_ir`),
    else the ONNX metadata that OpenVINO's ONNX reader keeps under `framework`; None when neither."""
    for path in ([ONNX_DATA_KEY], ["framework", ONNX_DATA_KEY]):
        try:
            if model.has_rt_info(path):
                return DataInfo.from_json(str(model.get_rt_info(path).astype(str)))
        except (RuntimeError, TypeError):
            continue
    return None


def write_ir(model: Any, xml: str | Path, info: DataInfo, extra: dict[str, Any] | None = None) -> Path:
    """Save `model` (an openvino.Model) as `xml` + `.bin` with `info` (and `extra` keys, JSON) in its
    runtime info, weights kept in their own precision. Written beside under temporary names and renamed,
    the .bin first, so that a reader never sees an IR whose weights are missing or stale."""
    import os

    ov = lazy_import("openvino", "OpenVINO models")
    xml = Path(xml)
    if xml.suffix != IR_SUFFIX:
        raise UserError(f"an OpenVINO IR is written as NAME.xml (+ NAME.bin), not {xml.name}")
    model.set_rt_info(info.to_json(), [ONNX_DATA_KEY])
    for key, value in (extra or {}).items():
        model.set_rt_info(json.dumps(value), [key])
    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.tmp.xml")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    finally:
        for t in (tmp, tmp.with_suffix(".bin")):
            if t.exists():
                t.unlink()
    return xml


class OpenVINOBackend(Backend):
    name = "openvino"

    def __init__(self, path: str | Path, device: str | None = None, threads: int | None = None,
                 performance_hint: str | None = None, precision_hint: str | None = None,
                 info: DataInfo | None = None, num_requests: int | None = None) -> None:
        """`device`: CPU (default), GPU, GPU.N, NPU or AUTO; `threads`: inference threads (CPU);
        `performance_hint`: latency (default) or throughput; `precision_hint`: f32 (default), bf16 or f16;
        `info`: DataInfo for models exported elsewhere (otherwise read from the model); `num_requests`: with
        the throughput hint, how many requests the device plans its streams for (default: its own choice)."""
        super().__init__(path)
        ov = lazy_import("openvino", "OpenVINO models")
        hint = (performance_hint or "latency").lower()
        if hint not in PERFORMANCE_HINTS:
            raise UserError(f"--ov-hint {performance_hint}: choose latency or throughput")
        precision = (precision_hint or "f32").lower()
        if precision not in PRECISION_HINTS:
            raise UserError(f"--ov-precision {precision_hint}: choose f32, bf16 or f16")
        self.device = ov_device(device)
        if self.path.suffix.lower() == IR_SUFFIX and not self.path.with_suffix(".bin").is_file():
            raise UserError(f"{self.path} has no weights file {self.path.with_suffix('.bin').name} beside it; copy both "
                            f"files of the OpenVINO IR, or write it again")
        try:
            model = core().read_model(str(self.path))
        except RuntimeError as e:
            raise UserError(f"OpenVINO cannot read {self.path} ({str(e).strip().splitlines()[0][:200]}); "
                            f"the file is truncated or not a model: export it again") from e
        found = read_data_info(model)
        if found is None and info is None:
            raise UserError(f"{self.path} has no '{ONNX_DATA_KEY}' block (class names, palette, mean/std); export it "
                            "with python -m export.onnx, or convert it with python -m export.openvino")
        self.info = found or info  # type: ignore[assignment]
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise UserError(f"{self.path.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; this "
                            "backend runs segmentation models with one image input and one logits/labels output")
        inp, out = model.inputs[0], model.outputs[0]
        shape = inp.get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise UserError(f"{self.path} has an input of rank {shape.rank}; expected N x 3 x H x W")
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in shape)
        if (inp.get_element_type() == ov.Type.u8) != self.info.uint8_input:
            raise UserError(f"{self.path}'s input is {inp.get_element_type()} but its metadata says input_format "
                            f"'{self.info.input_format}'; export it again")
        names = out.get_names()
        kind = next((n for n in ("logits", "labels") if n in names), None)
        self.output_kind = kind or ("logits" if out.get_element_type().is_real() else "labels")
        self.check_output()  # the output kind (full, native, labels, native-labels) from the metadata
        config: dict[str, Any] = {"PERFORMANCE_HINT": PERFORMANCE_HINTS[hint]}
        if self.device.startswith(("CPU", "GPU")):
            config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
        if threads and self.device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if num_requests and hint == "throughput":
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = int(num_requests)
        try:
            self.compiled = core().compile_model(model, self.device, config)
        except RuntimeError as e:
            raise UserError(f"OpenVINO cannot compile {self.path.name} for {self.device} "
                            f"({str(e).strip().splitlines()[0][:200]}); try --device CPU") from e
        self.request = self.compiled.create_infer_request()
        self._requests = [self.request]
        # what the device computes in (f32, bf16, f16), as OpenVINO resolved the hint
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() \
            if self.device.startswith(("CPU", "GPU")) else None
        self.settings = {"device": self.device, "performance_hint": hint, "precision_hint": precision,
                         "threads": threads, "num_requests": num_requests}

    def open_requests(self, n: int | None = None) -> int:
        """`n` InferRequests (default: the compiled model's OPTIMAL_NUMBER_OF_INFER_REQUESTS, which the
        throughput hint sets to the device's streams); request 0 is the constructor's."""
        count = max(1, int(n) if n else int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._requests = [self.request] + [self.compiled.create_infer_request() for _ in range(count - 1)]
        self.requests = count
        return count

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self._run(self.request, batch)

    def infer_request_impl(self, batch: np.ndarray, request: int) -> np.ndarray:
        return self._run(self._requests[request], batch)

    @staticmethod
    def _run(request: Any, batch: np.ndarray) -> np.ndarray:
        request.infer({0: batch})
        y = request.get_output_tensor(0).data
        return y.astype(np.float32) if y.dtype == np.float16 else y.copy()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._requests = []
        self.requests = 1
        self.__dict__.pop("request", None)
        self.__dict__.pop("compiled", None)
