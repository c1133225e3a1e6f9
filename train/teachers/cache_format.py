"""Teacher target cache: the frozen teacher's outputs on the training data, computed once.

Three modes (`distill.cache_mode`; `python -m train.cache --mode`), each in a folder of its own (the mode
and its parameters are part of the key, so one is never read as another):

single (default)
    The teacher on each whole training image as the augmentation starts from it (resized to
    `data.val_size` when set: the size scale 1 maps to; else as read), normalised, no colour jitter.
    `TargetReader.warped` applies each sample's scale/crop/flip to it (train/teachers/geometry.py `warp_map`).
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

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.errors import UserError
from train.config import Config
from train.models.output import FeatureInfo
from train.teachers.geometry import Geometry, scaled_size

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


def cache_key(teacher_sha256: str, cfg: Config, image_ids: Sequence[str],
              footage: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a cache must match to serve a run: teacher, dataset, split, pre-processing, image ids, mode.
    `footage`: the provenance of a transfer set (FootageReader.provenance()) whose frames the cache holds
    (split `footage`; image ids are the frames' file sha256 and frame index) instead of the training split."""
    from train.data import data_provenance

    d = cfg.data
    dataset = {k: v for k, v in data_provenance(d).items() if k not in ("train_split", "val_split")}
    if footage is not None:
        dataset = {"footage": footage}
    return {
        "teacher_sha256": teacher_sha256,
        "outputs_version": OUTPUTS_VERSION,
        "dataset": dataset,
        "split": "footage" if footage is not None else d.train_split,
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
    `auto`: the folder was chosen by `auto` (the hints differ). A cache of a transfer set (key split
    `footage`) is named by distill.footage_cache, which the hints then name."""
    option = "distill.footage_cache" if key.get("split") == "footage" else "distill.teacher_cache"
    m = read_manifest(path)
    if m is None:
        raise UserError(f"{path} is not a teacher target cache (no {MANIFEST}); build one with python -m "
                        f"train.cache, or pass {option}=auto")
    diff = key_differences(m, key)
    if diff:
        fix = (f"delete {path} and run again: {option}=auto then builds it for this run" if auto else
               f"pass {option}=auto to build one for this run, or the folder of a matching cache")
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
    from train.engine.budget import parse_budget

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


def dims_text(shape: Sequence[int]) -> str:
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
        return f"shape {dims_text(shape)} (expected {dims_text(expected)})"
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


def bad_files(path: str | Path, manifest: dict[str, Any], outputs: Sequence[str] | None = None,
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
    return [(f, p) for f, p, _ in bad_files(path, manifest, outputs, cfg)]


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


