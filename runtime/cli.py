"""Command-line pieces every LFD-Edge command shares: parsing sizes, shapes and numeric ranges, and the
options of commands that run a model file (`--backend`, `--threads`, `--providers`, `--device`).

    parse_size("512x1024") -> (512, 1024)        # H x W; "512,1024" too; None stays None
    parse_shape("1x3x256x512") -> (1, 3, 256, 512)
    parse_ms("30ms") -> 30.0                     # also "30", "0.03s"
    p.add_argument("--iters", type=int_at_least(1))      # argparse types for numeric ranges:
    p.add_argument("--tie", type=float_at_least(0))      # "argument --tie: 'nan' is not a number >= 0"

Bad text is a UserError naming the option and an example, so that every command words it alike; a
number out of range is argparse's usage error naming the option and the value.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import TypeVar

from runtime.errors import UserError

__all__ = ["add_backend_options", "backend_options", "float_at_least", "int_at_least", "parse_ms", "parse_shape",
           "parse_size"]

Shape = tuple[int, ...]
N = TypeVar("N", int, float)


def parse_shape(text: str, what: str = "shape") -> Shape:
    """'1x3x256x512' (or ',' separated) -> positive ints; `what` names the value in the error."""
    parts = [p for p in re.split(r"[x,]", str(text).strip().lower()) if p.strip() != ""]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise UserError(f"{what} {text!r} is not a shape like 1x3x256x512 (positive integers separated by 'x')")
    return dims


def parse_size(text: str | None, what: str = "--size") -> tuple[int, int] | None:
    """'512x1024' (height x width, also '512,1024') -> (512, 1024); None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise UserError(f"{what} '{text}' is not HxW (height x width), e.g. 512x1024")
    return int(m.group(1)), int(m.group(2))


def parse_ms(text: str, what: str = "--latency-budget") -> float:
    """'30ms', '30 ms', '30' (milliseconds) or '0.03s' -> 30.0; positive."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*", str(text).lower())
    value = float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0) if m else 0.0
    if value <= 0:
        raise UserError(f"{what} '{text}' is not a positive duration such as 30ms or 0.03s")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse `type`: an integer >= `low` (`int_at_least(1)` for counts, `(0)` for an index)."""
    return _number_at_least(int, low, "an integer")


def float_at_least(low: float) -> Callable[[str], float]:
    """An argparse `type`: a number >= `low`; NaN (which every comparison lets through) is refused."""
    return _number_at_least(float, low, "a number")


def _number_at_least(kind: Callable[[str], N], low: N, noun: str) -> Callable[[str], N]:
    def parse(text: str) -> N:
        # argparse words it "argument --OPTION: '0' is not an integer >= 1", naming the option and value
        wrong = argparse.ArgumentTypeError(f"{text!r} is not {noun} >= {low}")
        try:
            value = kind(text)
        except ValueError:
            raise wrong from None
        if not value >= low:  # `not >=`, so that NaN fails too
            raise wrong
        return value

    return parse


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that runs models shares: --backend, --threads, --providers, --device,
    --ov-hint, --ov-precision. Pass them on with `load_backend(path, args.backend, **backend_options(args))`;
    each backend takes those it understands."""
    from runtime.backends import registry

    parser.add_argument("--backend", choices=sorted(registry()), help="override the backend chosen from the suffix")
    parser.add_argument("--threads", type=int, help="CPU threads for inference (ONNX Runtime intra-op, OpenVINO, torch)")
    parser.add_argument("--providers", help="ONNX Runtime providers in order, e.g. cuda,cpu or tensorrt,cuda,cpu "
                        "(default: CUDA when available, then CPU)")
    parser.add_argument("--device", help="PyTorch device for .pt checkpoints: auto, cpu, cuda, cuda:N (default auto); "
                        "OpenVINO device: CPU, GPU, GPU.N, NPU, AUTO (default CPU)")
    parser.add_argument("--ov-hint", choices=("latency", "throughput"), default=None,
                        help="OpenVINO performance hint (default latency)")
    parser.add_argument("--ov-precision", choices=("f32", "bf16", "f16"), default=None,
                        help="OpenVINO inference precision hint (default f32; bf16 is fast on CPUs with AMX or "
                             "AVX512-BF16)")


def backend_options(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of `load_backend` from the options `add_backend_options` added."""
    return {"threads": args.threads, "providers": args.providers, "device": args.device,
            "performance_hint": args.ov_hint, "precision_hint": args.ov_precision}
