"""Checkpoints: the deployable student `*.pt` (docs/design.md, "Artefacts") and the resumable `last.pt`.

Deployable checkpoint, plain types only (`torch.load(weights_only=True)`):
    format_version  int (FORMAT_VERSION)
    model           state dict of the deployable Segmentor (encoder + decode head; no auxiliary head)
    arch            the model's `arch` dict: everything `train.models.build_model` needs to rebuild it
    data            DataInfo.to_dict(): classes, palette, mean, std, input_size, ignore_index
    train           method, resolved config, iterations, elapsed seconds, best val mIoU, git commit, ...

Training state (`last.pt`): the same five keys (so it can be evaluated too; its `model` keeps the
auxiliary head) plus `kind: "training_state"` and everything needed to continue exactly: objective,
optimizer, scaler, iteration, elapsed seconds, best mIoU, per-rank RNG and data-loader states.
All writes are atomic (temp file + rename).
"""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime.datasets import DataSpec
from runtime.errors import UserError
from runtime.io import atomic_write
from runtime.metadata import DataInfo
from train.config import to_plain
from train.models.arch import deployable_state_dict, describe_arch, model_arch, training_only, unwrap

FORMAT_VERSION = 1
CHECKPOINT_KEYS = ("format_version", "model", "arch", "data", "train")
TRAINING_STATE = "training_state"


# ----------------------------------------------------------------------------------------------
# Models


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                     source_arch: Mapping[str, Any] | None = None) -> None:
    """Load `state` into `model`; a shape or key mismatch names both architectures.

    Keys of training-only modules may be missing (deployable checkpoints drop them) or extra."""
    m = unwrap(model)
    target = getattr(m, "arch", None)
    mine = describe_arch(target) if isinstance(target, Mapping) else type(m).__name__
    theirs = describe_arch(source_arch) if source_arch is not None else "a different model"
    try:
        result = m.load_state_dict(dict(state), strict=False)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        what = f"{theirs} but the model it is loaded into is {mine}" if theirs != mine else \
            f"{theirs} with other layer widths than the model it is loaded into"
        raise UserError(f"{source} holds {what} ({first}); use a checkpoint of the same architecture and "
                        f"class count") from e
    drop = training_only(m)
    missing = [k for k in result.missing_keys if not k.startswith(drop)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(drop)]
    if missing or unexpected:
        detail = "; ".join(s for s in (f"missing {missing[:3]}" if missing else "",
                                       f"unexpected {unexpected[:3]}" if unexpected else "") if s)
        raise UserError(f"{source} holds {theirs} but the model it is loaded into is {mine} ({detail}); "
                        f"use a checkpoint of the same architecture")


def check_same_classes(a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str) -> None:
    """Two checkpoints (or their `data` blocks) must predict the same classes, in the same order."""
    ca = list((a.get("data") or a).get("classes", []))
    cb = list((b.get("data") or b).get("classes", []))
    if ca == cb:
        return

    def show(c: list[str]) -> str:
        return ", ".join(c[:6]) + (", ..." if len(c) > 6 else "")

    if len(ca) != len(cb):
        raise UserError(f"{name_a} has {len(ca)} classes ({show(ca)}) but {name_b} has {len(cb)} ({show(cb)}); "
                        f"use models trained on the same dataset")
    raise UserError(f"{name_a} and {name_b} both have {len(ca)} classes but in a different order or with other "
                    f"names ({show(ca)} vs {show(cb)}); use models trained on the same dataset")


# ----------------------------------------------------------------------------------------------
# Files


def _torch_load(path: str | Path, what: str) -> Any:
    """torch.load(weights_only=True); any file that is not a readable PyTorch file is one UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p} does not exist; check the path (training writes runs/<name>/best.pt)")
    if not os.access(p, os.R_OK):
        raise UserError(f"permission denied reading {what} {p}; ask its owner to make it readable, or copy it")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "safe_globals" in str(e):  # a readable file that holds classes, e.g. a whole pickled nn.Module
            raise UserError(f"{p} holds pickled Python objects, not the plain types of an LFD-Edge {what}; "
                            f"re-export it with this version of LFD-Edge") from e
        raise _corrupt(p, what, "not a PyTorch file") from e
    except PermissionError as e:
        raise UserError(f"permission denied reading {what} {p}; ask its owner to make it readable") from e
    except (MemoryError, UserError):
        raise
    except Exception as e:  # random bytes reach the unpickler's internals: KeyError, IndexError, struct.error...
        detail = str(e).splitlines()[0] if str(e) and not isinstance(e, (KeyError, IndexError)) else \
            f"{type(e).__name__} while unpickling"
        raise _corrupt(p, what, detail[:200]) from e


def _corrupt(p: Path, what: str, detail: str) -> UserError:
    return UserError(f"{what} {p} is truncated or corrupt ({detail}); copy it again, or re-train / re-export it")


def _check_dict(obj: Any, p: Path, what: str, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise UserError(f"{p} is not an LFD-Edge {what}: it holds a {type(obj).__name__}, not a dict with "
                        f"keys {', '.join(required)}")
    missing = [k for k in required if k not in obj]
    if missing:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            kind = "a raw state dict"
        else:
            kind = f"a dict with keys {', '.join(list(obj)[:6])}"
        raise UserError(f"{p} is not an LFD-Edge {what} (it is {kind}; missing {', '.join(missing)}); "
                        f"use a checkpoint written by train.teacher or train.distill")
    wrong = [k for k in required if k in ("model", "arch", "data", "train", "optimizer") and
             not isinstance(obj[k], dict)]
    if wrong:
        raise UserError(f"{p} is not an LFD-Edge {what}: its {', '.join(wrong)} block is a "
                        f"{type(obj[wrong[0]]).__name__}, not a dict; use a checkpoint written by train.teacher "
                        f"or train.distill")
    version = obj["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{p} has format version {version}, newer than this LFD-Edge reads ({FORMAT_VERSION}); "
                        f"upgrade LFD-Edge")
    return obj


def save_checkpoint(path: str | Path, model: nn.Module, data_info: DataInfo, train_info: Mapping[str, Any]) -> Path:
    """Write the deployable checkpoint of `model` (DDP/compile wrappers are unwrapped) atomically."""
    ckpt = {
        "format_version": FORMAT_VERSION,
        "model": deployable_state_dict(model),
        "arch": model_arch(model, deploy=True),
        "data": data_info.to_dict(),
        "train": to_plain(dict(train_info)),
    }
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint (deployable or last.pt); adds `_source` = the path."""
    p = Path(path)
    ckpt = _check_dict(_torch_load(p, "checkpoint"), p, "checkpoint", CHECKPOINT_KEYS)
    ckpt["_source"] = str(p)
    return ckpt


def model_from_checkpoint(path_or_ckpt: str | Path | Mapping[str, Any], device: str | torch.device = "cpu"
                          ) -> tuple[nn.Module, DataInfo, dict[str, Any]]:
    """Rebuild the model a checkpoint describes: `(model.eval() on device, DataInfo, checkpoint dict)`."""
    from train.models import build_model

    ckpt = dict(path_or_ckpt) if isinstance(path_or_ckpt, Mapping) else load_checkpoint(path_or_ckpt)
    source = str(ckpt.get("_source", "the checkpoint"))
    try:
        info = DataInfo.from_dict(ckpt["data"])
        arch = dict(ckpt["arch"])
        k = int(arch.get("num_classes", info.num_classes))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{source} is not a consistent LFD-Edge checkpoint (its data or arch block is incomplete: "
                        f"{type(e).__name__} {e}); re-export it") from e
    if k != info.num_classes:
        raise UserError(f"{source} is inconsistent: its model predicts {k} classes but its data block names "
                        f"{info.num_classes}; re-export it")
    model = build_model(dict(arch), k)
    load_model_state(model, ckpt["model"], source, arch)
    return model.to(device).eval(), info, ckpt


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write last.pt atomically; `state` must hold plain types and tensors only."""
    full = {"format_version": FORMAT_VERSION, "kind": TRAINING_STATE, **state}
    return atomic_write(path, lambda tmp: torch.save(full, tmp))


def load_training_state(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    obj = _check_dict(_torch_load(p, "training state"), p, "training state",
                      ("format_version", "kind", "model", "optimizer", "iteration"))
    if obj["kind"] != TRAINING_STATE:
        raise UserError(f"{p} is not a resumable training state (kind {obj['kind']!r}); resume from last.pt")
    return obj


# ----------------------------------------------------------------------------------------------
# RNG states as plain types


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (the state capture_rng saves)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as lists and tensors (weights_only-loadable)."""
    py = random.getstate()
    npk, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [str(npk), np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npk, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((npk, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_data(ckpt: Mapping[str, Any], info: DataInfo, override: str | None = None) -> DataSpec:
    """The data a checkpoint was trained on, or `override` (`--data name:root`; naming the same reader keeps
    the synthetic generator): what its DataInfo records, with the local choices of its resolved config's
    `data` block (the scene cache) where both name the same reader; else that config (checkpoints from
    before DataInfo recorded it); else synthetic."""
    config = (ckpt.get("train") or {}).get("config") or {}
    configured = DataSpec.from_config(config["data"]) if isinstance(config.get("data"), Mapping) else None
    recorded = DataSpec.recorded(info)
    if recorded is not None and configured is not None and recorded.name == configured.name:
        recorded = replace(recorded, root=recorded.root or configured.root,
                           options={**configured.options, **recorded.options})
    return (recorded or configured or DataSpec()).with_override(override)
