"""Mixed precision and schedules for the training engine: the autocast dtype for a device, the poly
learning rate, and periods (`Every`) in iterations or budget-clock seconds."""

from __future__ import annotations

import math

import torch

from runtime.errors import UserError
from runtime.machine import cpu_has_bf16
from train.engine.budget import parse_budget
from train.engine.console import log


def choose_amp_dtype(amp: bool, amp_dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32): bf16 on CPUs with native bf16, bf16 or fp16 on GPUs."""
    if not amp:
        return None
    if device.type == "cuda":
        if amp_dtype == "bf16" and not torch.cuda.is_bf16_supported():
            raise UserError(f"{torch.cuda.get_device_name(device)} has no bf16; use train.amp_dtype=fp16")
        if amp_dtype == "fp16" or (amp_dtype == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    if amp_dtype == "fp16":
        raise UserError("train.amp_dtype=fp16 is for GPUs; on a CPU use train.amp_dtype=bf16 or train.amp=false")
    if cpu_has_bf16():
        return torch.bfloat16
    if amp_dtype == "bf16":
        log("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 autocast is emulated and slow")
        return torch.bfloat16
    log("this CPU has no native bf16 (AVX512-BF16/AMX): training in fp32 (train.amp_dtype=bf16 forces bf16)")
    return None


def poly_lr(base: float, progress: float, power: float = 0.9) -> float:
    """`base * (1 - progress) ** power`, progress clamped to 0..1."""
    return base * max(0.0, 1.0 - min(max(progress, 0.0), 1.0)) ** power


class Every:
    """A period in iterations or in budget-clock seconds (`"500"`, `"5m"`); `"0"` means never."""

    def __init__(self, spec: str) -> None:
        b = parse_budget(spec)
        self.iterations = b.iterations or 0
        self.seconds = b.seconds or 0.0
        self.next_s = self.seconds

    def restart(self, elapsed: float) -> None:
        if self.seconds:
            self.next_s = (math.floor(elapsed / self.seconds) + 1) * self.seconds

    def due(self, iteration: int, elapsed: float) -> bool:
        if self.iterations:
            return iteration % self.iterations == 0
        if self.seconds and elapsed >= self.next_s:
            self.restart(elapsed)
            return True
        return False
