"""Configuration: dataclasses with defaults, YAML recipes and `key=value` overrides.

`load_config("configs/demo.yaml", ["method=lfd", "budget=30m", "optim.lr=0.02"])` returns a `Config`.
Dotted keys address nested fields (`distill.lfd.beta=0.3`); a few short aliases exist for the keys that
users type most (`method`, `budget`, `teacher`, `recipe`, `name`, `seed`). Unknown keys are errors with
a "did you mean" hint. The resolved config is saved into each run folder and checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from runtime.errors import UserError
from runtime.metadata import IMAGENET_MEAN, IMAGENET_STD
from train.engine.budget import parse_budget

# ----------------------------------------------------------------------------------------------
# Sections


@dataclass
class SyntheticConfig:
    """Knobs of the built-in synthetic street scenes (runtime/datasets/synthetic/)."""

    num_train: int = 400
    num_val: int = 60
    size: tuple[int, int] = (256, 512)  # H, W of the generated images
    seed: int = 0
    difficulty: float = 1.0  # scales clutter, thin/small objects, occlusion, noise and blur
    cache: bool = True  # cache generated samples to disk (data/cache/synthetic-...)


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # synthetic | cityscapes | voc | camvid | ade20k | folder, or name:root
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    crop_size: tuple[int, int] = (128, 256)  # training crop H, W
    val_size: tuple[int, int] | None = None  # resize validation images to H, W (None: native size)
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    color_jitter: float = 0.3  # brightness/contrast/saturation strength; 0 disables
    batch_size: int = 8
    val_batch_size: int = 4
    workers: int = 2
    skip_bad: bool = False  # skip and count corrupt samples instead of stopping
    max_val_images: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # Unlabeled transfer set (train/footage.py): image folders, globs, image or video files, or `synthetic[:N]`
    # (the generator's frames, labels discarded). Each batch holds batch_size labeled samples plus
    # round(unlabeled_ratio x batch_size) unlabeled frames, which feed the distillation terms only.
    unlabeled: list[str] = field(default_factory=list)
    unlabeled_stride: int = 1  # videos: every n-th frame
    unlabeled_ratio: float = 1.0  # unlabeled frames per labeled sample in a batch


@dataclass
class ModelConfig:
    recipe: str = "deeplabv3_resnet18"  # see train/models/recipes.py
    output_stride: int | None = None  # None: the recipe's default (8 or 16)
    aux_head: bool | None = None  # FCN auxiliary head on encoder stage 3 (None: the recipe's default)
    pretrained: bool = False  # timm ImageNet weights (hub, or pretrained_path)
    pretrained_path: str | None = None  # local weights file for the encoder
    head_channels: int | None = None  # None: the recipe's default


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup_iters: int = 0
    grad_clip: float | None = None  # max global grad norm; None disables
    head_lr_mult: float = 1.0  # lr multiplier for decode heads relative to the encoder


@dataclass
class TrainConfig:
    budget: str = "2000"  # iterations ("40000") or wall-clock ("90s", "30m", "2h")
    budget_mode: Literal["wallclock", "probe"] = "wallclock"  # wallclock: a time budget runs live; probe: resolved to iterations first
    iterations: int | None = None  # the iteration count a time budget resolved to (probe, compare --resolved)
    probe_steps: int = 5  # timed training steps of the probe (after probe_warmup untimed ones); median s/iter
    probe_warmup: int = 3  # untimed steps first (then the loader's prefetched batches are drained, untimed)
    probe_recheck: int = 30  # re-resolve the probed count from the speed of this many training steps; 0: never
    val_every: str = "0"  # same forms as budget; "0" validates only at the end
    log_every: int = 10
    ckpt_every: str = "5m"  # how often last.pt is written (iterations or wall-clock)
    amp: bool = True  # bf16 on CPUs that support it, fp16/bf16 on GPUs
    amp_dtype: Literal["auto", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads (None: torch default)
    runs_dir: str = "runs"
    name: str | None = None  # run folder name (None: derived from config, method, seed)
    resume: bool = True  # continue from runs/<name>/last.pt when it exists
    compile: bool = False  # torch.compile the student


@dataclass
class KDConfig:
    tau: float = 1.0
    weight: float = 1.0


@dataclass
class CWDConfig:
    tau: float = 4.0
    weight: float = 3.0
    features: bool = True  # also distil the deep features through a 1x1 adapter (CIRKD's CWD recipe)
    feature_tau: float = 4.0
    feature_weight: float = 50.0


@dataclass
class FitNetConfig:
    weight: float = 10.0


@dataclass
class ATConfig:
    weight: float = 10000.0  # λ, CIRKD's; L_at is scaled to its 64x128 maps, so λ means the same at any size


@dataclass
class LFDConfig:
    tau: float = 1.0
    mask: Literal["kl", "entropy", "uniform"] = "kl"
    beta: float = 0.5
    extra_pairs: list[list[str]] = field(default_factory=list)  # [[student_stage, teacher_stage], ...]
    aux_stages: list[str] = field(default_factory=lambda: ["stage2", "stage3"])
    aux_target: Literal["student", "teacher"] = "student"
    aux_channels: int = 128
    shared_channels: int = 128
    shared_tau: float = 1.0
    kl_start: int | None = None  # None: 1000 iterations, or 5 % of a wall-clock budget
    kl_tau: float = 1.0
    self_normalize: bool = True  # = normalize [task, fea]
    normalize: list[Literal["task", "fea", "kd", "kl"]] | None = None  # terms divided by their own detached value (task, fea, kd, kl);
    # None: [task, fea] with self_normalize, else none. The authors' script: method=lfd+kd normalize=[task,kd,fea]
    w_fea: float = 1.0
    w_aux: float = 0.1
    w_shared: float = 1.0
    w_kl: float = 1.0


@dataclass
class FKDConfig:
    pairs: list[list[str]] = field(default_factory=lambda: [["stage4", "stage4"]])  # [student, teacher]
    weight: float = 1.0


@dataclass
class DistillConfig:
    method: str = "baseline"  # baseline | kd | cwd | fitnet | at | lfd | fkd, combined with '+'
    teacher: str | None = None  # teacher: a .pt checkpoint, hf:DIR, torchvision:NAME:WEIGHTS, smp:DIR, or .onnx/.xml/.engine
    class_map: str | None = None  # YAML {student class: [teacher classes]} for a teacher of other classes (None: by name)
    teacher_layers: list[str] = field(default_factory=list)  # a foreign teacher's named layers as features; the first is its `decoder`
    teacher_cache: str = "off"  # off: online teacher; auto: build on first use, reuse after; or a cache folder
    cache_dir: str = "data/cache/teacher"  # where teacher_cache=auto keeps its caches
    footage_cache: str = "auto"  # the transfer set's (data.unlabeled) cache when teacher_cache is on: auto or a folder
    # what the cache stores (train/teachers/cache_format.py): single: each whole image at scale 1, warped per sample;
    # multiscale: each image at several scales (cache_scales) and mirrored, the nearest view warped;
    # exact: the teacher on the very crops (and colour jitter) the seeded sampler draws
    cache_mode: Literal["single", "multiscale", "exact"] = "single"
    cache_scales: list[float] = field(default_factory=list)  # multiscale; []: geometric steps of 2^(1/4) over data.scale_range
    cache_topk: int = 0  # multiscale/exact: store the logits' k largest (+ int16 class ids) instead of all; 0: all
    cache_samples: int | None = None  # exact: samples to store (None: what train.budget/train.iterations need)
    # hard pseudo-labels on unlabeled frames (data.unlabeled): CE against the teacher's arg-max where its
    # softmax confidence is at least pseudo_threshold (train/losses/pseudo.py)
    pseudo_labels: bool = False
    pseudo_threshold: float = 0.9
    pseudo_weight: float = 1.0
    kd: KDConfig = field(default_factory=KDConfig)
    cwd: CWDConfig = field(default_factory=CWDConfig)
    fitnet: FitNetConfig = field(default_factory=FitNetConfig)
    at: ATConfig = field(default_factory=ATConfig)
    lfd: LFDConfig = field(default_factory=LFDConfig)
    fkd: FKDConfig = field(default_factory=FKDConfig)


@dataclass
class ExportConfig:
    size: tuple[int, int] | None = None  # ONNX input H, W (None: the size the model was trained and validated at)
    opset: int = 17
    calib_images: int = 200


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    teacher_model: ModelConfig | None = None  # recipe of the teacher, for train.teacher via `model_as=teacher`
    source: str | None = None  # the YAML file this came from

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


ALIASES = {
    "method": "distill.method",
    "teacher": "distill.teacher",
    "budget": "train.budget",
    "recipe": "model.recipe",
    "name": "train.name",
    "seed": "train.seed",
    "lr": "optim.lr",
    "batch": "data.batch_size",
    "dataset": "data.dataset",
}

# ----------------------------------------------------------------------------------------------
# Loading


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, recursively (YAML/JSON/torch.save(weights_only) safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        _check_choice(where, value, args)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except (UserError, TypeError, ValueError) as e:
                errors.append(str(e))
        raise UserError(f"{where}: cannot use {value!r} ({'; '.join(errors)})")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in re.split(r"[x,\s]+", value.strip("()[] ")) if v]
        if not isinstance(value, (list, tuple)) or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            raise UserError(f"{where}: expected {len(args)} values, got {value!r}")
        inner = args if args and args[-1] is not Ellipsis else [args[0]] * len(value)
        return tuple(_coerce(v, a, where) for v, a in zip(value, inner))
    if origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) if args else v for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Any:
        return value
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise UserError(_unknown_key(f"{where}.{key}".lstrip("."), names))
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}".lstrip("."))
    return cls(**kwargs)


def _unknown_key(key: str, names: list[str]) -> str:
    leaf = key.split(".")[-1]
    close = difflib.get_close_matches(leaf, names, n=1)
    hint = f" Did you mean '{'.'.join(key.split('.')[:-1] + [close[0]])}'?" if close else ""
    return f"unknown config key '{key}'; valid keys here: {', '.join(names)}.{hint}"


def _full_keys(obj: Any, prefix: str = "") -> dict[str, str]:
    """leaf name -> its first full dotted key, over the nested config dataclasses."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            for leaf, full in _full_keys(value, key + ".").items():
                out.setdefault(leaf, full)
        else:
            out.setdefault(f.name, key)
    return out


def set_by_path(cfg: Any, dotted: str, value: Any) -> None:
    """Set `cfg.a.b.c = value` with type coercion; errors name the key and the valid choices."""
    dotted = ALIASES.get(dotted, dotted)
    parts = dotted.split(".")
    obj = cfg
    for i, p in enumerate(parts[:-1]):
        names = [f.name for f in dataclasses.fields(obj)]
        if p not in names:
            raise UserError(_unknown_key(".".join(parts[: i + 1]), names))
        child = getattr(obj, p)
        if child is None:  # e.g. teacher_model not yet set: create it with defaults
            tp = _hints(type(obj))[p]
            dc = next(a for a in typing.get_args(tp) if dataclasses.is_dataclass(a))
            child = dc()
            setattr(obj, p, child)
        obj = child
    leaf = parts[-1]
    names = [f.name for f in dataclasses.fields(obj)]
    if leaf not in names:
        if len(parts) == 1:  # a short key: an alias, or the leaf of a full key
            alias = difflib.get_close_matches(dotted, list(ALIASES), n=1)
            if alias:
                raise UserError(f"unknown config key '{dotted}'. Did you mean '{alias[0]}' ({ALIASES[alias[0]]})? "
                                f"Short keys: {', '.join(ALIASES)}")
            full = _full_keys(Config())
            leaf = difflib.get_close_matches(dotted, list(full), n=1)
            if leaf:
                raise UserError(f"unknown config key '{dotted}'. Did you mean '{full[leaf[0]]}'?")
        raise UserError(_unknown_key(dotted, names))
    tp = _hints(type(obj))[leaf]
    if isinstance(value, str) and tp is not str:  # a str field keeps the text as typed (off, 1e3, yes)
        parsed = yaml.safe_load(value) if value.strip() else value
        value = parsed if not isinstance(parsed, str) else value
    setattr(obj, leaf, _coerce(value, tp, dotted))


def parse_overrides(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}' is not key=value (e.g. method=lfd budget=30m optim.lr=0.02)")
        out.append((key.strip(), value))
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key=value` overrides, with types checked at each step."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file {p} does not exist; see configs/ for the recipes")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise UserError(f"config file {p} must hold a mapping of sections (data, model, train, ...)")
        cfg = _build(Config, raw)
        cfg.source = str(p)
    for key, value in parse_overrides(overrides or []):
        set_by_path(cfg, key, value)
    validate(cfg)
    return cfg


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config saved with `to_dict()` (e.g. from a checkpoint)."""
    return _build(Config, d)


# Allowed ranges of numeric settings: key -> (lowest, highest, whether the lowest is excluded); None = open.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "data.batch_size": (1, None, False),
    "data.val_batch_size": (1, None, False),
    "data.workers": (0, None, False),
    "data.max_val_images": (0, None, False),
    "data.color_jitter": (0, 1, False),
    "data.scale_range": (0, None, True),
    "data.crop_size": (1, None, False),
    "data.val_size": (1, None, False),
    "data.std": (0, None, True),
    "data.synthetic.num_train": (1, None, False),
    "data.synthetic.num_val": (1, None, False),
    "optim.lr": (0, None, True),
    "optim.momentum": (0, 1, False),
    "optim.weight_decay": (0, None, False),
    "optim.poly_power": (0, None, False),
    "optim.warmup_iters": (0, None, False),
    "optim.grad_clip": (0, None, True),
    "optim.head_lr_mult": (0, None, True),
    "train.log_every": (0, None, False),
    "train.threads": (1, None, False),
    "train.iterations": (1, None, False),
    "train.probe_steps": (1, None, False),
    "train.probe_warmup": (0, None, False),
    "train.probe_recheck": (0, None, False),
    "distill.cache_scales": (0, None, True),
    "distill.cache_topk": (0, None, False),
    "distill.cache_samples": (1, None, False),
    "distill.pseudo_threshold": (0, 1, False),
    "distill.pseudo_weight": (0, None, False),
    "data.unlabeled_stride": (1, None, False),
    "data.unlabeled_ratio": (0, None, True),
    "distill.kd.tau": (0, None, True),
    "distill.kd.weight": (0, None, False),
    "distill.cwd.tau": (0, None, True),
    "distill.cwd.feature_tau": (0, None, True),
    "distill.lfd.tau": (0, None, True),
    "distill.lfd.beta": (0, 1, False),
    "distill.lfd.kl_tau": (0, None, True),
    "distill.lfd.shared_tau": (0, None, True),
    "export.opset": (17, None, False),
    "export.size": (1, None, False),
}


def _check_range(key: str, value: Any, low: float | None, high: float | None, open_low: bool) -> None:
    if value is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        below = low is not None and (v <= low if open_low else v < low)
        above = high is not None and v > high
        if below or above or v != v:  # v != v: NaN
            if low is not None and high is not None:
                allowed = f"{'above' if open_low else 'from'} {low:g} to {high:g}"
            elif low is not None:
                allowed = f"{'above' if open_low else 'at least'} {low:g}"
            else:
                allowed = f"at most {high:g}"
            shown = list(value) if isinstance(value, (list, tuple)) else value
            which = "each value" if isinstance(value, (list, tuple)) else "it"
            raise UserError(f"{key}={shown} is out of range: {which} must be {allowed}")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if cfg is None:
            return None
        cfg = getattr(cfg, part)
    return cfg


def _check_choice(key: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise UserError(f"{key} '{value}' is not one of {', '.join(map(str, choices))}")


def _check_choices(obj: Any, prefix: str = "") -> None:
    """Every field typed `Literal[...]` (or a list of them) holds one of its choices, however the config
    was made (YAML, key=value, or dataclasses built in Python)."""
    for f in dataclasses.fields(obj):
        tp, value, key = _hints(type(obj))[f.name], getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{key}.")
            continue
        for t in (tp, *typing.get_args(tp)):  # X, or the members of X | None
            if typing.get_origin(t) is Literal:
                _check_choice(key, value, typing.get_args(t))
            elif typing.get_origin(t) is list and value is not None:
                inner = typing.get_args(t)
                if inner and typing.get_origin(inner[0]) is Literal:
                    for v in value:
                        _check_choice(key, v, typing.get_args(inner[0]))


def validate(cfg: Config) -> None:
    """Ranges (RANGES), budgets and the names of choices (the `Literal` fields); one sentence naming the
    key and what is allowed."""
    _check_choices(cfg)
    for key, (low, high, open_low) in RANGES.items():
        _check_range(key, _get(cfg, key), low, high, open_low)
    lo, hi = cfg.data.scale_range
    if lo > hi:
        raise UserError(f"data.scale_range={[lo, hi]}: the first value (smallest scale) must not exceed the second")
    for key in ("train.budget",):
        b = parse_budget(cfg.train.budget)
        if (b.iterations is not None and b.iterations < 1) or (b.seconds is not None and b.seconds <= 0):
            raise UserError(f"{key}={cfg.train.budget} trains nothing; give at least 1 iteration or a positive "
                            f"time (90s, 30m)")
    parse_budget(cfg.train.budget)
    parse_budget(cfg.train.val_every)
    parse_budget(cfg.train.ckpt_every)
    if isinstance(cfg.distill.teacher_cache, str) and cfg.distill.teacher_cache in ("False", "false", "no"):
        cfg.distill.teacher_cache = "off"  # YAML reads a bare `off` as false
    if not cfg.distill.teacher_cache:
        raise UserError("distill.teacher_cache is empty; give off, auto or a cache folder")


def save_config(cfg: Config, path: str | Path) -> None:
    from runtime.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
