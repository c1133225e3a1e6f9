"""Counted FLOPs: what torch's FlopCounterMode counts while a function runs.

FlopCounterMode counts 2 FLOPs per multiply-accumulate of every convolution and matrix product, forward
and backward when a backward runs (GFLOPs = 2 x GMACs, as papers and timm's model cards count);
element-wise ops, pooling, resizing and data loading are not counted. Compute budgets
(`train.compare --match flops`) and model summaries both count this way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


def counted_flops(fn: Callable[[], Any]) -> int:
    """The FLOPs FlopCounterMode counts while `fn()` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def forward_flops(model: nn.Module, shape: Sequence[int]) -> int:
    """Counted FLOPs of one forward of `model` (as called, in its current mode) on a zero input of
    `shape` (N x 3 x H x W), without autograd."""
    p = next(model.parameters())
    x = torch.zeros(tuple(shape), dtype=p.dtype, device=p.device)
    with torch.no_grad():
        return counted_flops(lambda: model(x))


def format_flops(flops: float) -> str:
    """1.23e12 -> '1.23 TFLOP' (G, T, P prefixes)."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if abs(flops) >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"
