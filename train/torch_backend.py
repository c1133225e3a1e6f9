"""PyTorch backend for `.pt` student checkpoints, so that runtime.infer, runtime.eval and runtime.bench
run a checkpoint as they run an ONNX model or an engine.

It lives in train/ because it rebuilds the model with `train.engine.checkpoint.model_from_checkpoint(path) ->
(model.eval(), DataInfo, ckpt)`; runtime/ never imports train, and finds this class by name through the
`lfd_edge.backends` entry point in pyproject.toml (runtime/backends/__init__.py). The model runs under
`torch.inference_mode()` in channels-last memory format; `model.segment(x)` returns logits at the
input's size. torch is imported when the backend is created, with an install hint when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import Backend
from runtime.errors import UserError
from runtime.lazy import lazy_import


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 channels_last: bool = True) -> None:
        """`device`: auto (CUDA when available, else CPU), cpu, cuda or cuda:N; `threads`: torch CPU threads."""
        super().__init__(path)
        torch = lazy_import("torch", "PyTorch checkpoints (.pt); or run the exported .onnx model instead")
        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device '{device}' was asked for but torch sees no CUDA GPU; pass --device cpu")
        self.device = torch.device(device)
        # after torch: the hint above comes first
        from train.engine.checkpoint import model_from_checkpoint, training_data

        model, info, ckpt = model_from_checkpoint(self.path)
        self.ckpt_meta: dict[str, Any] = {k: v for k, v in ckpt.items() if k not in ("model",)}
        self.channels_last = channels_last
        model = model.to(self.device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.info = info
        train = ckpt.get("train") or {}
        self.training = {"method": train.get("method"), "iterations": train.get("iterations")}
        self.data_spec = training_data(ckpt, info)
        self.output_kind = "logits"
        self.input_shape = None  # eager models take any H x W

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.model.segment(x)
            return y.float().cpu().numpy()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.__dict__.pop("model", None)
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
            self._torch.cuda.empty_cache()
