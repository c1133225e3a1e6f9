"""timm encoders as five-level feature extractors, with the output stride set by dilation.

`Encoder(name, output_stride)` wraps `timm.create_model(name, features_only=True, output_stride=...)`.
Its levels are named `stage0`..`stage4` (stage0 = stride 2), with channels and reductions read from
timm's `feature_info` (dilation keeps the last levels at the output stride). Pretrained weights come
from the timm hub (`pretrained=True`) or a local file (`pretrained_path`: a timm/torchvision-style
state dict in .pt/.pth/.bin (loaded with `weights_only=True`) or .safetensors).
"""

from __future__ import annotations

import importlib
import urllib.error
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runtime.errors import UserError
from train.models.output import FeatureInfo

STAGES = ("stage0", "stage1", "stage2", "stage3", "stage4")
# Prefixes that wrappers put in front of encoder keys (DDP, our own Segmentor, some exporters).
_KEY_PREFIXES = ("module.", "encoder.body.", "encoder.", "model.", "backbone.")


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a hub download raises when the network (or the hub) cannot be reached."""
    errors: list[type[BaseException]] = [urllib.error.URLError, ConnectionError, TimeoutError]
    try:
        from huggingface_hub import errors as hf_errors

        errors += [hf_errors.LocalEntryNotFoundError, hf_errors.HfHubHTTPError]
    except ImportError:
        pass
    for module, name in (("httpx", "TransportError"), ("requests.exceptions", "ConnectionError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except ImportError:
            pass
    return tuple(errors)


def create_timm_features(name: str, output_stride: int, pretrained: bool) -> nn.Module:
    """`timm.create_model(features_only=True)`; hub failures become one-sentence UserErrors."""
    import timm

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"timm has no encoder named '{name}'.{hint}")
    try:
        return timm.create_model(name, pretrained=pretrained, features_only=True,
                                 output_stride=output_stride, out_indices=(0, 1, 2, 3, 4))
    except _network_errors() as e:
        raise UserError(f"pretrained weights for encoder '{name}' could not be downloaded (the timm hub is "
                        f"unreachable: {type(e).__name__}); pass model.pretrained_path=/path/to/weights "
                        "or model.pretrained=false") from e


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weights file (.safetensors, or a torch file with `weights_only=True`) as a flat state dict.

    Accepts a bare state dict or one nested under `state_dict` / `model` (checkpoint styles)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"pretrained weights file {p} does not exist; fix model.pretrained_path")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except SafetensorError as e:
            raise UserError(f"pretrained weights file {p} is not a valid safetensors file ({e})") from e
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError) as e:  # torch.load's corrupt-archive / unpickling errors
        raise UserError(f"pretrained weights file {p} cannot be read with torch.load(weights_only=True) ({e}); "
                        "pass a plain state dict (.pt/.pth) or a .safetensors file") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"pretrained weights file {p} does not hold a state dict (name -> tensor)")
    return obj


def _strip_prefixes(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (`module.`, `encoder.`, ...) as long as that makes more keys match."""
    out = dict(state)
    changed = True
    while changed:
        changed = False
        for prefix in _KEY_PREFIXES:
            stripped = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in out.items()}
            if len(wanted & stripped.keys()) > len(wanted & out.keys()):
                out, changed = stripped, True
    return out


def load_encoder_weights(module: nn.Module, path: str | Path) -> None:
    """Copy a local weights file into a timm features module.

    Strict-ish: every encoder tensor must be present with the right shape; extra keys (the classifier
    and other layers that `features_only` drops) are ignored."""
    own = module.state_dict()
    state = _strip_prefixes(read_state_dict(path), set(own))
    missing = [k for k in own if k not in state]
    if missing:
        raise UserError(f"pretrained weights file {path} lacks {len(missing)} of the encoder's {len(own)} tensors "
                        f"(first: {missing[0]}); is it for another encoder?")
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise UserError(f"pretrained weights file {path}: {k} has shape {tuple(state[k].shape)}, the encoder needs "
                        f"{tuple(own[k].shape)}; is it for another encoder?")
    module.load_state_dict({k: state[k] for k in own}, strict=True)


class Encoder(nn.Module):
    """timm features module returning a dict `stage0`..`stage4` -> N x C x H/r x W/r."""

    def __init__(self, name: str, output_stride: int = 8, pretrained: bool = False,
                 pretrained_path: str | None = None) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise UserError(f"model.output_stride={output_stride} is not supported; use 8 or 16")
        self.body = create_timm_features(name, output_stride, pretrained and pretrained_path is None)
        if pretrained_path:
            load_encoder_weights(self.body, pretrained_path)
        fi: Any = self.body.feature_info  # timm's FeatureInfo
        self.feature_info = [FeatureInfo(n, c, r) for n, c, r in zip(STAGES, fi.channels(), fi.reduction())]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(STAGES, self.body(x)))
