"""Teacher target cache: the frozen teacher's outputs on the training data, computed once.

Three modes (`distill.cache_mode`; `python -m train.cache --mode`), each in a folder of its own (the mode
and its parameters are part of the key, so one is never read as another):

single (default)
    The teacher on each whole training image as the augmentation starts from it (resized to
    `data.val_size` when set: the size scale 1 maps to; else as read), normalised, no colour jitter.
    `TargetReader.warped` applies each sample's scale/crop/flip to it (train/geometry.py `warp_map`).
    Exact for scale 1 without crop or flip; under augmentation it differs from the online teacher by the
    context beyond the crop, by resampling the coarse map (a scale of 2 enlarges a stride-16 map twice as
    much as the online teacher's own upsampling does), by the flip (the teacher saw the unflipped image)
    and by the colour jitter it never sees. One view per image.
multiscale
    The teacher on each whole image at every scale s_c of `distill.cache_scales` and, with `data.flip`, on
    its mirror too, each view resized from the image exactly as the augmentation resizes it (torchvision,
    antialiased, rounded to uint8). The default scales are geometric steps of ratio at most 2^(1/4) from
    the low to the high end of `data.scale_range` (0.5-2: 0.5, 0.59, 0.71, 0.84, 1, 1.19, 1.41, 1.68, 2):
    the warp's resampling is what matters, and it is a ratio, so every sample's scale is then within
    2^(1/8) (9 %) of a cached one, where even steps of 0.25 leave 25 % at 0.625 and 6 % at 1.875.
    A sample of scale s (sqrt(Hs·Ws / H·W)) and flip f reads the view whose scale is nearest in ratio
    (|log s_c - log s|; the larger one when two are equidistant, so the warp shrinks the map, with
    antialiasing, rather than enlarging it) and whose flip is f, and `warp_map` maps that view to the crop.
    At s = s_c and the same flip the warp only crops: for a pixel-wise teacher the target then equals its
    output on the crop. Storage and build cost sum(s_c^2) x flips times single's (13.1 x 2 for 0.5-2).
exact
    The teacher on the very crops the seeded sampler draws: `TrainSampler(|train|, train.seed)` at epochs
    0, 1, ... yields (image index, augmentation seed) pairs; the pair at position p of epoch e is sample
    q = e·|train| + p, and the first N are stored, each computed on the sample's augmented crop exactly as
    `SegmentationTorchDataset` makes it from that seed (geometry and colour jitter: the online teacher's
    input). A run of I iterations of batch B on W processes reads samples
    q < floor((I-1)/n_b)·|train| + k·B·W, with n_b = floor(|train|/W/B) batches per epoch and
    k = I - floor((I-1)/n_b)·n_b (`samples_for`). The key records the seed and the augmentation (crop,
    scale range, flip, jitter); N is in the manifest: a cache of more samples serves a run that reads
    fewer, a run that reads more is refused in one sentence (`auto` extends the cache in place). Built
    once, it serves every method of a comparison with that seed. Targets are looked up by the sample's seed
    (the index is stored alongside).

Top-k logits (multiscale and exact, `distill.cache_topk` = k > 0; as FKD and ReLabel store soft labels
for datasets of many classes): per cell, the k largest logits (float16) and their class ids (int16).
The reader restores

    z~_c = z_c for the k stored classes,   z~_c = f = min over the stored z - M otherwise (M = TOPK_MARGIN = 100),

so softmax(z~ / T) is softmax(z / T) renormalised over the top-k: each class outside it gets at most
e^(-M/T) of the weight of the smallest kept class (4e-44 at T = 1, 1.4e-11 at T = 4), arg max is
unchanged, and at T = 1 the cell's KL from the full teacher distribution p to the restored one is
-log(1 - p_rest), p_rest the mass p put outside the top-k. Per cell 4k bytes instead of 2C. Losses that
read one class across space (CWD's channel softmax) see f where that class was not in a cell's top-k, a
larger change than for per-cell losses (KD, LFD). Features are always stored in full.

Layout of a cache folder:

    manifest.json                            what was stored and from what; "complete": true once every file exists
    single:     <output>/<index:06d>.npy     float16 C x h x w, one file per training image and output
    multiscale: <output>/<index:06d>_s<scale>_<n|m>.npy   per scale, as read (n) or mirrored (m)
    exact:      samples.npy                  int64 N x 2: (image index, augmentation seed) in sampler order
                <output>/<chunk:06d>.npy     float16 rows x C x h x w: samples chunk·64 ... (64 a file, the last fewer)
    top-k:      <stem>.values.npy float16 and <stem>.indices.npy int16, k channels, instead of <stem>.npy

`<output>` is `logits` (z_T at the teacher's head stride) or a named feature (`decoder`, `stage3`, ...)
at its own stride r: ceil(H / r) x ceil(W / r) cells of an H x W view (or crop).

The manifest names the teacher checkpoint (sha256), the dataset (spec, synthetic generator), the split,
the image ids, the pre-processing, the mode (scales and flips, or seed, augmentation and sample count),
and each output's stride, channels, dtype (and top-k). A cache whose key differs from what a run needs is
refused with one sentence naming what differs. Building is resumable: each file is written atomically,
existing files are kept, and a missing output (or, exact, more samples) is added to an existing cache.
`measure_agreement` (python -m train.cache --check N) measures how far a cache of any mode is from the
online teacher.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from runtime.errors import UserError
from runtime.io import atomic_write_json, atomic_write_npy, sha256_file
from runtime.metadata import IGNORE_INDEX
from runtime.preprocess import normalize, resize_image
from train.config import Config
from train.geometry import Geometry, crop_cells, scaled_size, warp_map
from train.models.output import FeatureInfo, SegOutput

FORMAT = 1
MANIFEST = "manifest.json"
LOGITS = "logits"
# Bumped when the code changes what a teacher's named outputs are (2: LR-ASPP's `decoder` is its high
# branch), so that a cache of the old outputs is not read as the new ones: `auto` builds a new folder.
OUTPUTS_VERSION = 2
KEY_FIELDS = ("teacher_sha256", "outputs_version", "dataset", "split", "preprocess", "image_ids", "mode")
MODES = ("single", "multiscale", "exact")
SINGLE = {"name": "single"}  # the mode of a manifest that records none (made before modes existed)
SCALE_STEP = 2 ** 0.25  # the largest ratio between neighbouring default multiscale scales
TOPK_MARGIN = 100.0  # a class outside the stored top-k gets the smallest stored logit minus this
CHUNK = 64  # exact mode: samples per file
SAMPLES = "samples.npy"


class TeacherTargets(Protocol):
    """What a training dataset reads its teacher targets from (train/data.py): the maps of training image
    `index` for the sample of augmentation `seed` drawn with geometry `g`, at each output's stride of the
    crop, {output: float32 C x ceil(hc / r) x ceil(wc / r)}. Implemented by `TargetReader` (single),
    `MultiscaleReader` and `ExactReader`; `open_reader` picks the one of a cache's mode."""

    path: Path
    num_images: int

    def warped(self, index: int, g: Geometry, seed: int | None = None) -> dict[str, torch.Tensor]: ...


# ----------------------------------------------------------------------------------------------
# Modes and keys


def default_scales(scale_range: Sequence[float]) -> list[float]:
    """Geometric steps of ratio at most SCALE_STEP from scale_range's low to its high end (4 decimals)."""
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if hi <= lo * (1 + 1e-9):
        return [round(lo, 4)]
    n = math.ceil(math.log(hi / lo) / math.log(SCALE_STEP) - 1e-9)
    return [round(lo * (hi / lo) ** (k / n), 4) for k in range(n + 1)]


def cache_scales(cfg: Config) -> list[float]:
    """The scales a multiscale cache stores: `distill.cache_scales`, else `default_scales(data.scale_range)`."""
    given = [round(float(v), 4) for v in cfg.distill.cache_scales or []]
    return sorted(set(given)) if given else default_scales(cfg.data.scale_range)


def nearest_scale(scales: Sequence[float], s: float) -> float:
    """The cached scale nearest to `s` in ratio (|log s_c - log s|), the larger one when equidistant."""
    return min(scales, key=lambda c: (round(abs(math.log(c / s)), 9), -c))


def sample_scale(g: Geometry) -> float:
    """The scale of a sample's geometry: sqrt(Hs · Ws / (H · W)) of its extent H x W."""
    (hs, ws), (h, w) = g.scaled, g.extent
    return math.sqrt(hs * ws / (h * w))


def view_stem(index: int, scale: float, mirrored: bool) -> str:
    """File stem of a multiscale view: `<index:06d>_s<scale>_<n|m>`."""
    return f"{index:06d}_s{scale:g}_{'m' if mirrored else 'n'}"


def mode_key(cfg: Config) -> dict[str, Any]:
    """The part of the cache key that depends on `distill.cache_mode` (module docstring)."""
    dc, d = cfg.distill, cfg.data
    topk = int(dc.cache_topk or 0)
    if dc.cache_mode == "single":
        if topk:
            raise UserError(f"distill.cache_topk={topk} applies to the multiscale and exact caches; the single cache "
                            f"stores the logits in full (pass distill.cache_topk=0 or another distill.cache_mode)")
        return dict(SINGLE)
    if dc.cache_mode == "multiscale":
        return {"name": "multiscale", "scales": cache_scales(cfg), "flips": [False, True] if d.flip else [False],
                "resize": "torchvision bilinear antialias, uint8", "topk": topk}
    if dc.cache_mode == "exact":
        return {"name": "exact", "seed": int(cfg.train.seed), "crop": [int(v) for v in d.crop_size],
                "scale_range": [float(v) for v in d.scale_range], "flip": bool(d.flip),
                "color_jitter": float(d.color_jitter), "sampler": "TrainSampler", "topk": topk}
    raise UserError(f"distill.cache_mode '{dc.cache_mode}' is not one of {', '.join(MODES)}")


def mode_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest.get("mode") or SINGLE


def cache_key(teacher_sha256: str, cfg: Config, image_ids: Sequence[str]) -> dict[str, Any]:
    """What a cache must match to serve a run: teacher, dataset, split, pre-processing, image ids, mode."""
    from train.data import data_provenance

    d = cfg.data
    dataset = {k: v for k, v in data_provenance(d).items() if k not in ("train_split", "val_split")}
    return {
        "teacher_sha256": teacher_sha256,
        "outputs_version": OUTPUTS_VERSION,
        "dataset": dataset,
        "split": d.train_split,
        "preprocess": {"resize": list(d.val_size) if d.val_size else None, "interpolation": "bilinear",
                       "mean": [float(v) for v in d.mean], "std": [float(v) for v in d.std]},
        "image_ids": list(image_ids),
        "mode": mode_key(cfg),
    }


def auto_path(root: str | Path, key: dict[str, Any]) -> Path:
    """`<root>/<teacher sha256[:12]>-<digest of the rest of the key>`: one folder per teacher, data and
    mode (the single mode adds nothing to the digest, so its folders are those it had before modes)."""
    rest = json.dumps({k: key[k] for k in KEY_FIELDS if k != "teacher_sha256"
                       and not (k == "mode" and key[k] == SINGLE)}, sort_keys=True)
    return Path(root) / f"{key['teacher_sha256'][:12]}-{hashlib.sha256(rest.encode()).hexdigest()[:10]}"


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest of cache folder `path`, or None when there is none (UserError when unreadable)."""
    p = Path(path) / MANIFEST
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{p} is not a readable cache manifest ({e}); delete {path} and build it again") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise UserError(f"{p} is a cache of another format ({m.get('format') if isinstance(m, dict) else '?'}, "
                        f"this version reads {FORMAT}); delete {path} and build it again")
    return m


def key_differences(manifest: dict[str, Any], key: dict[str, Any]) -> list[str]:
    """Human-readable list of the key fields in which `manifest` differs from `key`."""
    out = []
    for f in KEY_FIELDS:
        have, want = (mode_of(manifest) if f == "mode" else manifest.get(f)), key[f]
        if have == want:
            continue
        if f == "teacher_sha256":
            out.append(f"teacher (sha256 {str(have)[:12]}… vs {str(want)[:12]}…)")
        elif f == "image_ids":
            n = len(have or [])
            out.append(f"image ids ({n} images vs {len(want)}" + (", same count, other names)" if n == len(want)
                                                                  else ")"))
        elif f == "mode":
            if have.get("name") != want.get("name"):
                out.append(f"cache mode ({have.get('name')} vs {want.get('name')})")
            else:
                diff = {k: (have.get(k), want.get(k)) for k in {*have, *want} if have.get(k) != want.get(k)}
                out.append(f"{want['name']} cache (" + ", ".join(f"{k} {json.dumps(a)} vs {json.dumps(b)}"
                                                                 for k, (a, b) in sorted(diff.items())) + ")")
        else:
            out.append(f"{f} ({json.dumps(have, sort_keys=True)} vs {json.dumps(want, sort_keys=True)})")
    return out


def check_cache(path: str | Path, key: dict[str, Any], outputs: Sequence[str], auto: bool = False
                ) -> dict[str, Any]:
    """The manifest of a complete cache that matches `key` and holds `outputs`, else a UserError.
    `auto`: the folder was chosen by distill.teacher_cache=auto (the hints differ)."""
    m = read_manifest(path)
    if m is None:
        raise UserError(f"{path} is not a teacher target cache (no {MANIFEST}); build one with python -m "
                        f"train.cache, or pass distill.teacher_cache=auto")
    diff = key_differences(m, key)
    if diff:
        fix = (f"delete {path} and run again: distill.teacher_cache=auto then builds it for this run" if auto else
               "pass distill.teacher_cache=auto to build one for this run, or the folder of a matching cache")
        raise UserError(f"the teacher cache {path} was made for another {'; '.join(diff)}; {fix}")
    missing = [o for o in outputs if o not in m["outputs"]]
    if missing:
        raise UserError(f"the teacher cache {path} holds {', '.join(m['outputs'])} but this run also reads "
                        f"{', '.join(missing)}; add them with python -m train.cache (it keeps what exists)")
    if not m.get("complete"):
        raise UserError(f"the teacher cache {path} is incomplete (its build was interrupted); run python -m "
                        f"train.cache again to finish it")
    return m


# ----------------------------------------------------------------------------------------------
# Exact mode: which samples a run reads


def samples_for(iterations: int, batch_size: int, world: int, num_images: int) -> int:
    """How many samples of the seeded order (epochs of `num_images` positions) a run of `iterations` steps
    of `batch_size` per process on `world` processes reads: positions q < this (module docstring)."""
    per_epoch = (num_images // world) // batch_size
    if per_epoch < 1:
        raise UserError(f"{num_images} training images make no batch of {batch_size} per process on {world}; "
                        f"lower data.batch_size")
    full = (int(iterations) - 1) // per_epoch
    return full * num_images + (int(iterations) - full * per_epoch) * batch_size * world


def run_samples(cfg: Config, num_images: int, world: int = 1) -> int | None:
    """The samples a run of `cfg` reads (`samples_for`), or None when its iteration count is not known
    before training (a wall-clock budget not yet resolved to train.iterations)."""
    from train.budget import parse_budget

    iterations = cfg.train.iterations or parse_budget(cfg.train.budget).iterations
    return samples_for(iterations, cfg.data.batch_size, world, num_images) if iterations else None


def sample_table(num_images: int, seed: int, samples: int) -> np.ndarray:
    """int64 samples x 2: (image index, augmentation seed) of the first `samples` positions of
    TrainSampler(num_images, seed) over epochs 0, 1, ... (one process: every position of each epoch)."""
    from train.data import TrainSampler

    rows: list[tuple[int, int]] = []
    epoch = 0
    while len(rows) < samples:
        sampler = TrainSampler(num_images, seed)
        sampler.set_epoch(epoch)
        rows += list(sampler)
        epoch += 1
    return np.asarray(rows[:samples], dtype=np.int64).reshape(-1, 2)


def samples_hint(cfg: Config, num_images: int) -> str:
    d = cfg.data
    per_epoch = num_images // d.batch_size * d.batch_size
    return (f"give train.budget as iterations, train.iterations, or distill.cache_samples (an iteration of batch "
            f"{d.batch_size} reads {d.batch_size}; {per_epoch} a pass over the {num_images} images)")


# ----------------------------------------------------------------------------------------------
# Files


def map_shape(manifest: dict[str, Any], output: str, size: Sequence[int]) -> tuple[int, int, int]:
    """The stored shape of `output` for a view of H x W = `size`: channels (top-k: k) x ceil(H / r) x ceil(W / r)."""
    o = manifest["outputs"][output]
    r = int(o["stride"])
    return int(o.get("topk") or o["channels"]), math.ceil(int(size[0]) / r), math.ceil(int(size[1]) / r)


def output_parts(manifest: dict[str, Any], output: str) -> list[tuple[str, np.dtype]]:
    """(file suffix, dtype) of each file of `output` per stem: `.npy` float16, or with top-k
    `.values.npy` float16 and `.indices.npy` int16."""
    if manifest["outputs"][output].get("topk"):
        return [(".values.npy", np.dtype(np.float16)), (".indices.npy", np.dtype(np.int16))]
    return [(".npy", np.dtype(np.float16))]


def stems(manifest: dict[str, Any], cfg: Config | None = None) -> list[tuple[int, str, tuple[int, ...], tuple[int, int]]]:
    """Every file stem of the cache: (build unit: image index, or chunk of an exact cache; stem; leading
    dimensions: () or (rows,); the H x W pixels its maps cover)."""
    mode = mode_of(manifest)
    if mode["name"] == "exact":
        n, chunk, crop = int(manifest["samples"]), int(manifest.get("chunk", CHUNK)), tuple(mode["crop"])
        return [(c, f"{c:06d}", (min(chunk, n - c * chunk),), (int(crop[0]), int(crop[1])))
                for c in range(math.ceil(n / chunk))]
    sizes = image_sizes(manifest, cfg)
    if mode["name"] == "single":
        return [(i, f"{i:06d}", (), size) for i, size in enumerate(sizes)]
    return [(i, view_stem(i, s, f), (), scaled_size(size, s))
            for i, size in enumerate(sizes) for s in mode["scales"] for f in mode["flips"]]


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a .npy file's header, without reading the data; ValueError or
    OSError when the header is unreadable."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(int(v) for v in shape), np.dtype(dtype), f.tell()


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape)


def file_problem(path: Path, expected: tuple[int, ...], dtype: Any = np.float16) -> str | None:
    """What is wrong with one cache file against the manifest's `expected` shape and `dtype` (header and
    file length only, no data read), or None when it matches."""
    dtype = np.dtype(dtype)
    if not path.is_file():
        return "missing"
    try:
        shape, found, offset = npy_header(path)
    except (OSError, ValueError) as e:
        return f"unreadable header ({e})"
    if found != dtype:
        return f"dtype {found} (expected {dtype})"
    if shape != tuple(expected):
        return f"shape {_dims(shape)} (expected {_dims(expected)})"
    size, want = path.stat().st_size, offset + dtype.itemsize * math.prod(shape)
    if size != want:
        return f"{size} bytes (expected {want}: truncated or padded)"
    return None


def image_sizes(manifest: dict[str, Any], cfg: Config | None = None) -> list[tuple[int, int]]:
    """Each training image's teacher-view size H x W at scale 1: from the manifest (`image_sizes`, or
    `image_size` when every image is resized to data.val_size), else read from the dataset of `cfg`."""
    n = len(manifest["image_ids"])
    if manifest.get("image_sizes") and len(manifest["image_sizes"]) == n:
        return [(int(h), int(w)) for h, w in manifest["image_sizes"]]
    if manifest.get("image_size"):
        h, w = manifest["image_size"]
        return [(int(h), int(w))] * n
    if cfg is None:
        raise ValueError("the manifest records no image sizes; pass the config to read them")
    from train.data import build_readers

    reader, _ = build_readers(cfg.data)
    return [tuple(int(v) for v in reader[i][0].shape[:2]) for i in range(n)]  # type: ignore[misc]


def _check_files(path: str | Path, manifest: dict[str, Any], outputs: Sequence[str] | None = None,
                 cfg: Config | None = None) -> list[tuple[Path, str, int]]:
    """(file, problem, build unit) of every file of `outputs` that does not match the manifest."""
    bad = []
    units = stems(manifest, cfg)
    for o in outputs or list(manifest["outputs"]):
        parts = output_parts(manifest, o)
        for unit, stem, lead, size in units:
            shape = (*lead, *map_shape(manifest, o, size))
            for suffix, dtype in parts:
                f = Path(path) / o / f"{stem}{suffix}"
                problem = file_problem(f, shape, dtype)
                if problem:
                    bad.append((f, problem, unit))
    if mode_of(manifest)["name"] == "exact":
        f = Path(path) / SAMPLES
        problem = file_problem(f, (int(manifest["samples"]), 2), np.int64)
        if problem:
            bad.append((f, problem, -1))
    return bad


def verify_files(path: str | Path, manifest: dict[str, Any], outputs: Sequence[str] | None = None,
                 cfg: Config | None = None) -> list[tuple[Path, str]]:
    """(file, problem) for every cache file of `outputs` (default: all the manifest's) that does not match
    the manifest: missing, unreadable, another dtype, shape or length. Reads headers only."""
    return [(f, p) for f, p, _ in _check_files(path, manifest, outputs, cfg)]


def file_count(manifest: dict[str, Any], cfg: Config | None = None) -> int:
    """How many files the manifest's outputs take (samples.npy not counted)."""
    return len(stems(manifest, cfg)) * sum(len(output_parts(manifest, o)) for o in manifest["outputs"])


def disk_bytes(path: str | Path) -> int:
    """Bytes of every file under a cache folder."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def teacher_feature_info(manifest: dict[str, Any]) -> list[FeatureInfo]:
    return [FeatureInfo(**f) for f in manifest["teacher"]["feature_info"]]


def topk_encode(z: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest values along the class axis (-3) of `z` (float16) and their class ids (int16)."""
    values, indices = z.float().topk(k, dim=-3)
    return values.numpy().astype(np.float16), indices.numpy().astype(np.int16)


def topk_decode(values: Any, indices: Any, channels: int) -> torch.Tensor:
    """Logits from `topk_encode`'s output: the stored values at their classes, every other class at the
    cell's smallest stored value minus TOPK_MARGIN (module docstring). float32 ... x channels x h x w."""
    v = torch.from_numpy(np.asarray(values, dtype=np.float32))
    i = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    floor = v.amin(dim=-3, keepdim=True) - TOPK_MARGIN
    full = floor.expand(*v.shape[:-3], channels, *v.shape[-2:]).contiguous()
    return full.scatter_(-3, i, v)


# ----------------------------------------------------------------------------------------------
# Building


def _out_strides(model: torch.nn.Module, outputs: Sequence[str]) -> dict[str, dict[str, int]]:
    info = {f.name: f for f in model.feature_info}  # type: ignore[union-attr]
    out = {}
    for o in outputs:
        if o == LOGITS:
            out[o] = {"stride": int(model.stride), "channels": int(model.arch["num_classes"])}  # type: ignore[union-attr,index]
        elif o in info:
            out[o] = {"stride": int(info[o].reduction), "channels": int(info[o].channels)}
        else:
            names = ", ".join([LOGITS, *info])
            raise UserError(f"the teacher has no output '{o}' to cache; it has {names}")
    return out


def teacher_view(image: np.ndarray, cfg: Config) -> np.ndarray:
    """The teacher's input for one whole training image: resized to data.val_size if set, normalised
    (3 x H x W float32), as the validation pipeline prepares images."""
    d = cfg.data
    if d.val_size:
        image = resize_image(image, tuple(d.val_size))
    return normalize(image, d.mean, d.std)


def multiscale_views(image: np.ndarray, cfg: Config, scales: Sequence[float], flips: Sequence[bool]
                     ) -> list[tuple[float, bool, torch.Tensor]]:
    """(scale, mirrored, normalised 3 x H x W input) of every view of one training image: resized from the
    image as read to `scaled_size(base, scale)` exactly as train/geometry.py `apply_geometry` resizes
    (base: data.val_size, else the image's size), mirrored, normalised."""
    from torchvision.transforms.v2 import functional as TF

    from train.data import normalize_tensor

    d = cfg.data
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    base = (int(d.val_size[0]), int(d.val_size[1])) if d.val_size else (int(img.shape[1]), int(img.shape[2]))
    out = []
    for s in scales:
        sized = TF.resize(img, list(scaled_size(base, s)), antialias=True)
        for f in flips:
            out.append((float(s), bool(f), normalize_tensor(sized.flip(-1) if f else sized, d.mean, d.std)))
    return out


def teacher_outputs(out: SegOutput, names: Sequence[str]) -> dict[str, torch.Tensor]:
    return {n: (out.logits if n == LOGITS else out.features[n]) for n in names}


def run_teacher(model: torch.nn.Module, xs: Sequence[torch.Tensor], names: Sequence[str],
                device: str | torch.device, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """The teacher's `names` outputs (float32, CPU) on each 3 x H x W input, in batches of equal sizes."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in xs]
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, x in enumerate(xs):
        groups.setdefault(tuple(x.shape), []).append(j)
    for idx in groups.values():
        for start in range(0, len(idx), batch_size):
            part = idx[start:start + batch_size]
            x = torch.stack([torch.as_tensor(xs[j]) for j in part]).to(device)
            res = teacher_outputs(model(x.contiguous(memory_format=torch.channels_last)), names)
            for b, j in enumerate(part):
                out[j] = {n: res[n][b].float().cpu() for n in names}
    return out


def _save_output(out: Path, manifest: dict[str, Any], output: str, stem: str, z: torch.Tensor,
                 stale: set[str]) -> None:
    """Write the files of `output` for `stem` that are in `stale` (float16, or top-k values and ids)."""
    k = int(manifest["outputs"][output].get("topk") or 0)
    arrays = dict(zip((".values.npy", ".indices.npy"), topk_encode(z, k))) if k else {
        ".npy": z.numpy().astype(np.float16)}
    for suffix, array in arrays.items():
        path = out / output / f"{stem}{suffix}"
        if str(path) in stale:
            atomic_write_npy(path, array)


def _bytes_per_view(outputs: dict[str, dict[str, int]], size: Sequence[int]) -> int:
    return sum((4 * o["topk"] if o.get("topk") else 2 * o["channels"])
               * math.ceil(size[0] / o["stride"]) * math.ceil(size[1] / o["stride"]) for o in outputs.values())


def estimate_bytes(outputs: dict[str, dict[str, int]], size: tuple[int, int], n: int,
                   mode: dict[str, Any] | None = None, samples: int = 0) -> int:
    """Bytes of the maps of `n` images of `size` (at scale 1) for the given outputs (channels x ceil(H/r)
    x ceil(W/r) float16, or 4k bytes a cell with top-k), in the cache `mode` (default single); exact: of
    `samples` crops."""
    mode = mode or SINGLE
    if mode["name"] == "exact":
        return samples * _bytes_per_view(outputs, mode["crop"])
    if mode["name"] == "multiscale":
        return n * len(mode["flips"]) * sum(_bytes_per_view(outputs, scaled_size(size, s)) for s in mode["scales"])
    return n * _bytes_per_view(outputs, size)


def _view_flops(model: torch.nn.Module, sizes: list[tuple[int, int]]) -> int | None:
    """Counted FLOPs of one teacher forward per view of `sizes` (None when they cannot be counted)."""
    from collections import Counter

    try:
        from train.models.flops import forward_flops

        counts = Counter(sizes)
        if len(counts) <= 32:
            return sum(n * forward_flops(model, (1, 3, *size)) for size, n in counts.items())
        ref = counts.most_common(1)[0][0]  # many sizes: a convolutional network's FLOPs scale with the area
        per_pixel = forward_flops(model, (1, 3, *ref)) / (ref[0] * ref[1])
        return round(per_pixel * sum(n * h * w for (h, w), n in counts.items()))
    except Exception:  # noqa: BLE001 - FLOP counting is a report, never a reason to fail a build
        return None


def build_cache(teacher_path: str | Path, cfg: Config, out_dir: str | Path, outputs: Sequence[str],
                max_gb: float = 20.0, batch_size: int = 4, device: str | torch.device = "cpu",
                quiet: bool = False, samples: int | None = None) -> dict[str, Any]:
    """Build (or finish, or extend with more outputs or, exact, more samples) the cache of `teacher_path` on
    cfg's training split in the mode `distill.cache_mode`. Exact: at least `samples`, `distill.cache_samples`
    and what cfg's budget reads. Prints the size it will take and refuses above `max_gb`; returns the manifest."""
    from train.checkpoint import check_same_classes, model_from_checkpoint
    from train.data import build_readers

    if not Path(teacher_path).is_file():
        raise UserError(f"teacher checkpoint {teacher_path} does not exist; train one with python -m train.teacher")
    out = Path(out_dir)
    reader, _ = build_readers(cfg.data)
    ids = [str(n) for n in _names(reader)]
    sha = sha256_file(teacher_path)
    key = cache_key(sha, cfg, ids)
    mode = key["mode"]
    existing = read_manifest(out)
    if existing is not None:
        diff = key_differences(existing, key)
        if diff:
            raise UserError(f"{out} holds a cache made for another {'; '.join(diff)}; choose another --out "
                            f"or delete it")
    n_samples = 0
    if mode["name"] == "exact":
        n_samples = max(int(samples or 0), int(cfg.distill.cache_samples or 0),
                        int((existing or {}).get("samples") or 0), run_samples(cfg, len(ids)) or 0)
        if not n_samples:
            raise UserError(f"an exact teacher cache stores the crops a run draws, so it needs their number before "
                            f"training: {samples_hint(cfg, len(ids))}")
    model, info, ckpt = model_from_checkpoint(teacher_path, device)
    check_same_classes(ckpt["data"], reader.data_info().to_dict(), f"the teacher {teacher_path}",
                       f"the dataset ({cfg.data.dataset})")
    wanted = list(dict.fromkeys([*(existing["outputs"] if existing else []), *outputs]))
    specs = _out_strides(model, wanted)
    topk = int(mode.get("topk") or 0)
    if topk and LOGITS in specs:
        if topk >= specs[LOGITS]["channels"]:
            raise UserError(f"distill.cache_topk={topk} keeps all {specs[LOGITS]['channels']} classes of the teacher; "
                            f"store them in full with distill.cache_topk=0")
        specs[LOGITS]["topk"] = topk
    size = ((int(cfg.data.val_size[0]), int(cfg.data.val_size[1])) if cfg.data.val_size
            else tuple(int(v) for v in reader[0][0].shape[:2]))
    need = estimate_bytes(specs, size, len(ids), mode, n_samples)  # type: ignore[arg-type]
    if not quiet:
        what = {"single": f"{len(ids)} images at {size[0]}x{size[1]}",
                "multiscale": f"{len(ids)} images at {size[0]}x{size[1]} x {len(mode.get('scales', []))} scales "
                              f"x {len(mode.get('flips', []))} flips",
                "exact": f"{n_samples} augmented crops of {_dims(mode.get('crop', []))} (seed {mode.get('seed')})"}
        print(f"teacher cache {out} ({mode['name']}): {', '.join(wanted)} of {what[mode['name']]}, "
              f"about {need / 2**30:.2f} GiB" + (f" (logits: top {topk})" if topk else " (float16)"), flush=True)
    if need > max_gb * 2**30:
        less = {"single": "a smaller data.val_size",
                "multiscale": "fewer distill.cache_scales, distill.cache_topk=K for the logits, a smaller data.val_size",
                "exact": "fewer samples (distill.cache_samples, a shorter budget), distill.cache_topk=K"}
        raise UserError(f"the teacher cache would take {need / 2**30:.1f} GiB, above --max-gb {max_gb:g}; store "
                        f"less (logits only: --outputs logits; or {less[mode['name']]}) or raise --max-gb")
    manifest = {
        "format": FORMAT, **key, "complete": False,
        "teacher": {"checkpoint": str(teacher_path), "arch": ckpt["arch"], "stride": int(model.stride),  # type: ignore[arg-type]
                    "feature_info": [dataclasses.asdict(f) for f in model.feature_info]},  # type: ignore[union-attr]
        "outputs": {o: {**specs[o], "dtype": "float16"} for o in wanted},
        "image_size": list(size) if cfg.data.val_size else None,
        "image_sizes": (existing or {}).get("image_sizes") or None,
        "build_seconds": float(existing.get("build_seconds", 0.0)) if existing else 0.0,
    }
    if mode["name"] == "exact":
        manifest.update(samples=n_samples, chunk=int((existing or {}).get("chunk") or CHUNK))
    if not manifest["image_sizes"] and not cfg.data.val_size:  # the teacher sees each image as read
        manifest["image_sizes"] = [list(reader[i][0].shape[:2]) for i in range(len(ids))]
    if mode["name"] != "single":  # compare.py counts a cache's build FLOPs from this when recorded
        per = ([tuple(mode["crop"])] * n_samples if mode["name"] == "exact"
               else [sz for _, _, _, sz in stems(manifest, cfg)])
        manifest["build_flops"] = _view_flops(model, per)  # type: ignore[arg-type]
    atomic_write_json(out / MANIFEST, manifest)
    bad = _check_files(out, manifest, wanted)
    present = [f for f, p, _ in bad if p != "missing"]
    if present and not quiet:
        print(f"teacher cache {out}: {len(present)} file(s) do not match the manifest and are rebuilt "
              f"(e.g. {present[0]})", flush=True)
    stale = {str(f) for f, _, _ in bad}
    todo = sorted({u for _, _, u in bad if u >= 0})
    units = len(stems(manifest, cfg)) if mode["name"] == "exact" else len(ids)
    if mode["name"] == "exact" and str(out / SAMPLES) in stale:
        atomic_write_npy(out / SAMPLES, sample_table(len(ids), mode["seed"], n_samples))
    step = 1 if mode["name"] == "exact" else batch_size
    bar = tqdm(total=units, initial=units - len(todo), unit="chunk" if mode["name"] == "exact" else "img",
               desc="teacher cache", dynamic_ncols=True, mininterval=1.0, disable=quiet)
    t0, since_save = time.perf_counter(), time.perf_counter()
    try:
        with torch.no_grad():
            if mode["name"] == "exact":
                table = np.load(out / SAMPLES)
                ds = _augmenting_dataset(reader, cfg)
            for start in range(0, len(todo), step):
                chunk = todo[start:start + step]
                if mode["name"] == "exact":
                    c, rows = chunk[0], manifest["chunk"]
                    xs = [ds[(int(i), int(sd))][0] for i, sd in table[c * rows:(c + 1) * rows]]
                    res = run_teacher(model, xs, wanted, device, batch_size)
                    for o in wanted:
                        _save_output(out, manifest, o, f"{c:06d}", torch.stack([r[o] for r in res]), stale)
                else:
                    views: list[tuple[str, Any]] = []
                    for i in chunk:
                        image = reader[i][0]
                        if mode["name"] == "single":
                            views.append((f"{i:06d}", torch.from_numpy(teacher_view(image, cfg))))
                        else:
                            views += [(view_stem(i, s, f), x)
                                      for s, f, x in multiscale_views(image, cfg, mode["scales"], mode["flips"])]
                    res = run_teacher(model, [x for _, x in views], wanted, device, batch_size)
                    for (stem, _), r in zip(views, res):
                        for o in wanted:
                            _save_output(out, manifest, o, stem, r[o], stale)
                bar.update(len(chunk))
                if time.perf_counter() - since_save > 10:  # keep the build time across interruptions
                    manifest["build_seconds"] += time.perf_counter() - t0
                    t0 = since_save = time.perf_counter()
                    atomic_write_json(out / MANIFEST, manifest)
    finally:
        bar.close()
        manifest["build_seconds"] += time.perf_counter() - t0
        atomic_write_json(out / MANIFEST, manifest)
    manifest["complete"] = True
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _augmenting_dataset(reader: Any, cfg: Config) -> Any:
    """The training dataset of cfg without targets: `ds[(index, seed)]` is the sample the run draws."""
    from train.data import SegmentationTorchDataset

    d = cfg.data
    return SegmentationTorchDataset(reader, True, d.crop_size, d.scale_range, d.flip, d.color_jitter, d.mean, d.std,
                                    d.val_size)


def _names(reader: Any) -> list[str]:
    items = getattr(reader, "items", None)
    if items:
        return [it[2] for it in items]
    if callable(getattr(reader, "name", None)):
        return [reader.name(i) for i in range(len(reader))]
    return [reader[i][2] for i in range(len(reader))]


# ----------------------------------------------------------------------------------------------
# Reading in training


class TargetReader:
    """Reads a complete single-mode cache in the DataLoader workers (a `TeacherTargets`):
    `warped(index, geometry)` gives {output: float32 C x h x w}, the stored maps of training image `index`
    under that geometry, at each output's stride of the crop (ceil(crop / stride))."""

    def __init__(self, path: str | Path, manifest: dict[str, Any], outputs: Sequence[str]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.outputs = list(outputs)
        self.strides = {o: int(manifest["outputs"][o]["stride"]) for o in self.outputs}
        self.channels = {o: int(manifest["outputs"][o]["channels"]) for o in self.outputs}
        self.num_images = len(manifest["image_ids"])

    def _load(self, p: Path, dtype: np.dtype, want: tuple[int, ...] | None, ndim: int, channels: int) -> np.ndarray:
        """The memory map of cache file `p`, its header checked against the manifest (UserError naming it)."""
        try:
            m = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"teacher cache file {p} is missing or corrupt ({e}); {self.rebuild_hint()}") from e
        if m.dtype != dtype or m.ndim != ndim or m.shape[-3] != channels or (
                want is not None and tuple(m.shape) != want):
            expected = _dims(want) if want else f"{channels} x h x w"
            raise UserError(f"teacher cache file {p} holds {m.dtype} {_dims(m.shape)}, not the {dtype} "
                            f"{expected} its manifest says; {self.rebuild_hint()}")
        return m

    def _stored(self, o: str, stem: str, want: tuple[int, ...] | None, ndim: int = 3) -> list[np.ndarray]:
        """The memory maps of `o`'s files for `stem` (one, or top-k values and ids)."""
        ch = int(self.manifest["outputs"][o].get("topk") or self.channels[o])
        return [self._load(self.path / o / f"{stem}{suffix}", dtype, want, ndim, ch)
                for suffix, dtype in output_parts(self.manifest, o)]

    def _full(self, o: str, parts: list[Any]) -> torch.Tensor:
        """float32 logits or features from the stored part(s), top-k decoded."""
        if len(parts) == 2:
            return topk_decode(parts[0], parts[1], self.channels[o])
        return torch.from_numpy(np.asarray(parts[0], dtype=np.float32))

    def read(self, index: int, size: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """{output: C x h x w float16 memory map} of training image `index`, each file's header checked
        against the manifest (channels, dtype, and h x w for a teacher view of H x W = `size` if given)."""
        return {o: self._stored(o, f"{index:06d}", map_shape(self.manifest, o, size) if size is not None else None)[0]
                for o in self.outputs}

    def rebuild_hint(self) -> str:
        teacher = self.manifest.get("teacher", {}).get("checkpoint", "T.pt")
        mode = mode_of(self.manifest)["name"]
        flag = "" if mode == "single" else f" --mode {mode}"
        return (f"rebuild it with python -m train.cache --teacher {teacher} --out {self.path}{flag} and this run's "
                f"--config and overrides (it checks every file and rebuilds those that do not match)")

    def warped(self, index: int, g: Geometry, seed: int | None = None) -> dict[str, torch.Tensor]:
        return {o: warp_map(torch.from_numpy(np.asarray(m, dtype=np.float32)), g, crop_cells(g, self.strides[o]),
                            self.strides[o])
                for o, m in self.read(index, g.extent).items()}


class MultiscaleReader(TargetReader):
    """Reads a multiscale cache: each sample reads the view of the nearest cached scale and of its flip
    (module docstring) and warps it to the crop."""

    def __init__(self, path: str | Path, manifest: dict[str, Any], outputs: Sequence[str]) -> None:
        super().__init__(path, manifest, outputs)
        mode = mode_of(manifest)
        self.scales = [float(s) for s in mode["scales"]]
        self.mirrors = True in mode["flips"]

    def view(self, g: Geometry) -> tuple[float, bool]:
        """(cached scale, mirrored) of the view a sample of geometry `g` reads."""
        return nearest_scale(self.scales, sample_scale(g)), bool(g.flip and self.mirrors)

    def warped(self, index: int, g: Geometry, seed: int | None = None) -> dict[str, torch.Tensor]:
        s, mirrored = self.view(g)
        stem, size = view_stem(index, s, mirrored), scaled_size(g.extent, s)
        out = {}
        for o in self.outputs:
            r = self.strides[o]
            m = self._full(o, self._stored(o, stem, map_shape(self.manifest, o, size)))
            out[o] = warp_map(m, g, crop_cells(g, r), r, s, mirrored)
        return out


class ExactReader(TargetReader):
    """Reads an exact cache: the stored maps of the sample of augmentation `seed` (already the crop's)."""

    def __init__(self, path: str | Path, manifest: dict[str, Any], outputs: Sequence[str]) -> None:
        super().__init__(path, manifest, outputs)
        mode = mode_of(manifest)
        self.samples, self.chunk, self.seed = int(manifest["samples"]), int(manifest["chunk"]), int(mode["seed"])
        self.crop = (int(mode["crop"][0]), int(mode["crop"][1]))
        table = self._load_table()
        self.where = {int(sd): q for q, sd in enumerate(table[:, 1].tolist())}

    def _load_table(self) -> np.ndarray:
        p = self.path / SAMPLES
        try:
            table = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"teacher cache file {p} is missing or corrupt ({e}); {self.rebuild_hint()}") from e
        if table.dtype != np.int64 or table.shape != (self.samples, 2):
            raise UserError(f"teacher cache file {p} holds {table.dtype} {_dims(table.shape)}, not the int64 "
                            f"{self.samples}x2 its manifest says; {self.rebuild_hint()}")
        return table

    def warped(self, index: int, g: Geometry, seed: int | None = None) -> dict[str, torch.Tensor]:
        if seed is None:
            raise UserError("an exact teacher cache holds the targets of seeded samples: index the training dataset "
                            "with (index, seed) as TrainSampler yields")
        q = self.where.get(int(seed))
        if q is None:
            raise UserError(too_few_samples(self.path, self.manifest,
                                              f"a sample beyond them (image {index}, augmentation seed {seed})"))
        if tuple(g.crop) != self.crop:
            raise UserError(f"the exact teacher cache {self.path} holds {_dims(self.crop)} crops, not "
                            f"{_dims(g.crop)}; build one for data.crop_size={list(g.crop)}")
        c, row = divmod(q, self.chunk)
        rows = min(self.chunk, self.samples - c * self.chunk)
        out = {}
        for o in self.outputs:
            want = (rows, *map_shape(self.manifest, o, self.crop))
            out[o] = self._full(o, [m[row] for m in self._stored(o, f"{c:06d}", want, ndim=4)])
        return out


def too_few_samples(path: str | Path, manifest: dict[str, Any], reads: str, needed: int | None = None) -> str:
    """The sentence for a run that reads (`reads`: what, in words) more samples than the exact cache at
    `path` holds; `needed`: how many, when known."""
    teacher = manifest.get("teacher", {}).get("checkpoint", "T.pt")
    return (f"the exact teacher cache {path} holds the first {manifest['samples']} samples of seed "
            f"{mode_of(manifest)['seed']} but this run reads {reads}; extend it with python -m train.cache --teacher "
            f"{teacher} --out {path} --mode exact --samples {needed or 'N'} and this run's --config and overrides, "
            f"or use distill.teacher_cache=auto")


def require_exact_samples(path: str | Path, cfg: Config, world: int = 1) -> None:
    """Refuse, in one sentence, a run whose iteration count (resolved by now: `train.iterations` or an
    iteration budget) reads more samples than the exact cache at `path` holds."""
    manifest = read_manifest(path)
    if manifest is None:
        raise UserError(f"{path} is not a teacher target cache (no {MANIFEST})")
    needed = run_samples(cfg, len(manifest["image_ids"]), world)
    if needed is not None and needed > int(manifest["samples"]):
        raise UserError(too_few_samples(path, manifest, f"{needed} ({cfg.train.iterations or cfg.train.budget} "
                                                        f"iterations of batch {cfg.data.batch_size})", needed))


def open_reader(path: str | Path, manifest: dict[str, Any], outputs: Sequence[str]) -> TeacherTargets:
    """The reader of a complete cache's mode."""
    name = mode_of(manifest)["name"]
    readers: dict[str, type[TargetReader]] = {"single": TargetReader, "multiscale": MultiscaleReader,
                                              "exact": ExactReader}
    return readers[name](path, manifest, outputs)


def cached_output(targets: dict[str, torch.Tensor], device: torch.device) -> SegOutput:
    """A batch of warped cached maps as the teacher's `SegOutput` (what the online teacher returns)."""
    moved = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
    logits = moved.pop(LOGITS, None)
    if logits is None:  # feature-only methods: losses never read the logits; keep the contract typed
        ref = next(iter(moved.values()))
        logits = ref.new_zeros((ref.shape[0], 0, *ref.shape[-2:]))
    return SegOutput(logits=logits, aux=None, features=moved)


# ----------------------------------------------------------------------------------------------
# Opening a cache for a run or a comparison, and how far it is from the online teacher


def open_cache(cfg: Config, teacher_path: str | Path, outputs: Sequence[str], build: bool = True,
               quiet: bool = False, world: int = 1) -> tuple[Path, dict[str, Any], bool]:
    """The cache `cfg.distill.teacher_cache` names for this teacher, data and `distill.cache_mode`:
    (folder, manifest, built now).

    `auto`: `<distill.cache_dir>/<key digest>`, built (or completed, extended) when `build`; a path: used
    as it is, refused with one sentence when it does not match. Exact: it must hold the samples a run of
    `world` processes reads (`run_samples`, when known before training; else `distill.cache_samples`)."""
    from train.data import build_readers

    reader, _ = build_readers(cfg.data)
    names = _names(reader)
    key = cache_key(sha256_file(teacher_path), cfg, names)
    where = cfg.distill.teacher_cache
    path = auto_path(cfg.distill.cache_dir, key) if where == "auto" else Path(where)
    auto = where == "auto"
    exact = key["mode"]["name"] == "exact"
    needed = max(run_samples(cfg, len(names), world) or 0, int(cfg.distill.cache_samples or 0)) if exact else 0
    if auto and build:
        m = read_manifest(path)
        if (m is None or not m.get("complete") or any(o not in m["outputs"] for o in outputs)
                or int(m.get("samples") or 0) < needed or verify_files(path, m, outputs, cfg)):
            build_cache(teacher_path, cfg, path, outputs, quiet=quiet, samples=needed or None)
            return path, check_cache(path, key, outputs, auto), True
    m = check_cache(path, key, outputs, auto)
    if exact and int(m["samples"]) < needed:
        raise UserError(too_few_samples(path, m, f"{needed} (data.batch_size x steps, over passes of "
                                                 f"{len(names)} images)", needed))
    bad = verify_files(path, m, outputs, cfg)
    if bad:
        f, problem = bad[0]
        flag = "" if key["mode"]["name"] == "single" else f" --mode {key['mode']['name']}"
        raise UserError(f"{len(bad)} file(s) of the teacher cache {path} do not match its manifest ({f}: "
                        f"{problem}); rebuild them with python -m train.cache --teacher {teacher_path} --out {path}"
                        f"{flag} and this run's --config and overrides")
    return path, m, False


def open_targets(cfg: Config, teacher_path: str | Path, outputs: Sequence[str], build: bool = True,
                 quiet: bool = False, world: int = 1) -> tuple[TeacherTargets, dict[str, Any], bool]:
    """`open_cache`, then the reader of its mode: (targets, manifest, built now)."""
    path, manifest, built = open_cache(cfg, teacher_path, outputs, build, quiet, world)
    return open_reader(path, manifest, outputs), manifest, built


def cache_record(path: str | Path, manifest: dict[str, Any], outputs: Sequence[str], built: bool) -> dict[str, Any]:
    """What results.json records of the cache a run read."""
    mode = mode_of(manifest)
    return {"path": str(path), "mode": mode["name"], "outputs": list(outputs),
            "build_seconds": manifest.get("build_seconds"), "built_by_this_run": built,
            **({"samples": manifest["samples"]} if mode["name"] == "exact" else {}),
            **({"scales": mode["scales"]} if mode["name"] == "multiscale" else {})}


@torch.no_grad()
def measure_agreement(cfg: Config, teacher_path: str | Path, path: str | Path, manifest: dict[str, Any],
                      samples: int = 32) -> dict[str, Any]:
    """How the cached logits (warped, in any mode) differ from the online teacher's on the same augmented
    crops (the first `samples` of the seeded training order), over the crops' valid pixels:

        agreement = mean [argmax z_cache = argmax z_online],   KL = mean KL(softmax z_online ‖ softmax z_cache),

    with the online teacher on the crop without colour jitter (`geometry`: the warp and the context beyond
    the crop) and with the config's jitter (`as_trained`: what the online teacher sees in training). The
    cache gives the same targets to both; an exact cache holds the jittered crop's, so it matches
    `as_trained` and its `geometry` row measures what the jitter changes."""
    import torch.nn.functional as F

    from train.checkpoint import model_from_checkpoint
    from train.data import SegmentationTorchDataset, TrainSampler, build_readers
    from train.losses.base import downsample_labels, pixel_kl

    d = cfg.data
    model, _, _ = model_from_checkpoint(teacher_path, "cpu")
    reader, _ = build_readers(d)
    n = min(samples, len(reader))
    mode = mode_of(manifest)
    if mode["name"] == "exact" and int(manifest["samples"]) < n:
        raise UserError(f"the exact teacher cache {path} holds {manifest['samples']} samples, fewer than the {n} to "
                        f"check; build it with --samples {n}")
    targets = open_reader(path, manifest, [LOGITS])
    views = {"geometry": 0.0, "as_trained": d.color_jitter}
    sets = {k: SegmentationTorchDataset(reader, True, d.crop_size, d.scale_range, d.flip, j, d.mean, d.std,
                                        d.val_size, targets=targets) for k, j in views.items()}
    sums = {k: {"agree": 0.0, "kl": 0.0, "n": 0.0} for k in views}
    order = iter(TrainSampler(len(reader), cfg.train.seed))
    for _ in range(n):
        key = next(order)
        for name, ds in sets.items():
            x, y, t = ds[key]
            z_on = model(x[None]).logits.float()
            z_c = t[LOGITS][None]
            valid = downsample_labels(y[None], z_on.shape[-2:]) != IGNORE_INDEX
            agree = (z_on.argmax(1) == z_c.argmax(1)) & valid
            kl = pixel_kl(F.log_softmax(z_on, 1), F.log_softmax(z_c, 1))
            sums[name]["agree"] += float(agree.sum())
            sums[name]["kl"] += float((kl * valid).sum())
            sums[name]["n"] += float(valid.sum())
    return {"samples": n, "mode": mode["name"], **{
        k: {"argmax_agreement": v["agree"] / max(1.0, v["n"]), "mean_kl": v["kl"] / max(1.0, v["n"]),
            "pixels": int(v["n"]), "color_jitter": views[k]} for k, v in sums.items()}}
