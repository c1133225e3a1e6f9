"""The inference backend contract (after Polygraphy's BaseRunner): one validating base, one small
subclass per framework. A backend loads a model file, knows its `DataInfo`, and maps a float32
N x 3 x H x W batch (runtime.preprocess output; uint8 N x H x W x 3 frames for models exported with
--uint8-input, as their DataInfo.input_format says) to either logits (N x K x h x w float) or labels
(N x H x W integer), as the model was exported. `output` says which of the four kinds the file gives (full or
native-stride logits, full or native-stride labels; runtime.metadata.OUTPUT_KINDS) and `output_stride` its
stride, from the metadata, so that callers (runtime.postprocess.labels_at) need no guessing.

    with load_backend("student.int8.cpu.onnx") as b:
        out = b.infer(batch)            # validated, timed

Throughput (several inferences in flight, runtime.infer --throughput): `open_requests(n)` makes n
requests ready and returns how many it made; request i is then called from one thread at a time with
`infer(batch, request=i)`, and different requests run at the same time. A backend that does not override
it (TensorRT, PyTorch) keeps its one request, and the caller stays in latency mode.
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.errors import UserError
from runtime.metadata import DataInfo, output_of

if TYPE_CHECKING:
    from runtime.datasets.spec import DataSpec


class Backend(abc.ABC):
    name: str = "base"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"model file {self.path} does not exist; pass a .pt checkpoint, an .onnx model or a .engine")
        self.info: DataInfo  # set by subclasses from the artefact's metadata
        self.output_kind: str = "logits"  # "logits" or "labels"
        self.input_shape: tuple[int, ...] | None = None  # static N,3,H,W or None where dynamic
        self.last_ms: float = 0.0  # the last call's time, whichever request made it
        self.requests: int = 1  # inference requests open (open_requests)
        # what the artefact knows beyond its DataInfo, for reports and defaults: its training (method,
        # iterations) and the dataset it was trained on (a checkpoint's resolved config names its root)
        self.training: dict[str, Any] = {}
        self.data_spec: DataSpec | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Backend:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing to free)
        """Free device memory and handles; safe to call twice."""

    # --- inference -------------------------------------------------------------------------
    @property
    def output(self) -> str:
        """full | native | labels | native-labels: what the model file outputs, as its metadata records it
        (older files: full or labels from `output_kind`). A record the output tensor contradicts is a UserError."""
        return output_of(getattr(self, "info", None), self.output_kind == "labels")[0]

    @property
    def output_stride(self) -> int:
        """The stride of the output relative to the input (1 for full and labels)."""
        return output_of(getattr(self, "info", None), self.output_kind == "labels")[1]

    @property
    def output_text(self) -> str:
        """The output kind as tables print it: `full`, `labels`, or `native (1/8)` with the stride."""
        stride = self.output_stride
        return self.output if stride == 1 else f"{self.output} (1/{stride})"

    def check_output(self) -> None:
        """Refuse, in one sentence, a model whose metadata contradicts its output tensor (called at load)."""
        output_of(getattr(self, "info", None), self.output_kind == "labels")

    @property
    def uint8_input(self) -> bool:
        """Whether the model takes uint8 N x H x W x 3 frames (exported with --uint8-input)."""
        info = getattr(self, "info", None)
        return bool(info is not None and info.uint8_input)

    def infer(self, batch: np.ndarray, request: int = 0) -> np.ndarray:
        """Validate `batch` (float32 N x 3 x H x W, or uint8 N x H x W x 3 for a --uint8-input model; matching
        a static input shape) and run the model on open request `request` (0 unless open_requests made more)."""
        if not 0 <= request < self.requests:
            raise ValueError(f"request {request} is not open: {self.path.name} has {self.requests} (open_requests)")
        if self.uint8_input:
            if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[3] != 3 or batch.dtype != np.uint8:
                raise UserError(f"{self.path.name} takes uint8 N x H x W x 3 frames, got "
                                f"{getattr(batch, 'dtype', type(batch))} {getattr(batch, 'shape', '')}")
            dims = ("batch", "height", "width", "channels")
        else:
            if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1] != 3:
                raise UserError(f"expected a float32 N x 3 x H x W batch, got {getattr(batch, 'shape', type(batch))}")
            if batch.dtype != np.float32:
                batch = batch.astype(np.float32)
            dims = ("batch", "channels", "height", "width")
        if self.input_shape is not None:
            for want, got, what in zip(self.input_shape, batch.shape, dims):
                if want > 0 and want != got:
                    raise UserError(f"{self.path.name} has a static input {tuple(self.input_shape)} but got {batch.shape} "
                                    f"({what} differs); resize with runtime.preprocess or export with --dynamic")
        t0 = time.perf_counter()
        batch = np.ascontiguousarray(batch)
        out = self.infer_request_impl(batch, request)
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out

    @abc.abstractmethod
    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a validated contiguous float32 batch."""

    # --- throughput ------------------------------------------------------------------------
    def open_requests(self, n: int | None = None) -> int:
        """Make `n` inference requests ready (None: as many as this backend finds best here) that may run at
        the same time, request i from one thread at a time through `infer(batch, request=i)`; returns how
        many are open (also `self.requests`). This base keeps its one request and returns 1: the backend
        runs one inference at a time, and the caller stays in latency mode."""
        return self.requests

    def infer_request_impl(self, batch: np.ndarray, request: int) -> np.ndarray:
        """Run a validated batch on open request `request` (`infer` has checked it is open). This base has
        only request 0, which is `infer_impl`; backends whose `open_requests` opens more override it."""
        return self.infer_impl(batch)

    @property
    def input_size(self) -> tuple[int, int]:
        """The H x W the model expects (its static shape, else the data block's input size)."""
        return self.static_size or tuple(self.info.input_size)  # type: ignore[return-value]

    @property
    def static_size(self) -> tuple[int, int] | None:
        """The H x W a static input fixes; None where height or width is dynamic."""
        h, w = (1, 2) if self.uint8_input else (2, 3)
        if self.input_shape is not None and self.input_shape[h] > 0 and self.input_shape[w] > 0:
            return int(self.input_shape[h]), int(self.input_shape[w])
        return None

    def run_size(self, size: tuple[int, int] | None, option: str = "--size") -> tuple[int, int]:
        """The H x W to run at: `size` (what the command's `option` asked for) or, when None, the model's
        own. A static model runs only at its own size: another is one sentence saying to drop `option`."""
        if size is None:
            return self.input_size
        static = self.static_size
        if static is not None and tuple(size) != static:
            raise UserError(f"{self.path.name} has a static {static[0]}x{static[1]} input and runs only at that size; "
                            f"drop {option} {size[0]}x{size[1]} (or export the model with --dynamic)")
        return int(size[0]), int(size[1])
