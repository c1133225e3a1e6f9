"""Teacher target cache: the frozen teacher's outputs on every training image, computed once.

Layout of a cache folder:

    manifest.json             what was stored and from what (below); "complete": true once every file exists
    <output>/<index:06d>.npy  float16 C x h x w, one file per training image and output

`<output>` is `logits` (z_T at the teacher's head stride) or a named feature (`decoder`, `stage3`, ...)
at its own stride, computed on the whole training image as the augmentation starts from it: resized to
`data.val_size` when set (the size scale 1 maps to), else as read; normalised with the config's mean/std;
no colour jitter. In training, `TargetReader.warped` applies each sample's scale/crop/flip to the stored
maps (train/geometry.py), so the targets are aligned with the student's crop; they are exact for scale
1 without crop or flip, and under augmentation they differ from the online teacher by the context the
teacher saw beyond the crop (`measure_agreement` reports how much).

The manifest names the teacher checkpoint (sha256), the dataset (spec, synthetic generator), the split,
the image ids, the pre-processing, and each output's stride, channels and dtype. A cache whose key differs
from what a run needs is refused with one sentence naming what differs. Building is resumable: each file
is written atomically, existing files are kept, and a missing output is added to an existing cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from runtime.errors import UserError
from runtime.io import atomic_write, atomic_write_json, sha256_file
from runtime.metadata import IGNORE_INDEX
from runtime.preprocess import normalize, resize_image
from train.config import Config
from train.geometry import Geometry, crop_cells, warp_map
from train.models.output import FeatureInfo, SegOutput

FORMAT = 1
MANIFEST = "manifest.json"
LOGITS = "logits"
# Bumped when the code changes what a teacher's named outputs are (2: LR-ASPP's `decoder` is its high
# branch), so that a cache of the old outputs is not read as the new ones: `auto` builds a new folder.
OUTPUTS_VERSION = 2
KEY_FIELDS = ("teacher_sha256", "outputs_version", "dataset", "split", "preprocess", "image_ids")


def cache_key(teacher_sha256: str, cfg: Config, image_ids: Sequence[str]) -> dict[str, Any]:
    """What a cache must match to serve a run: teacher, dataset, split, pre-processing, image ids."""
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
    }


def auto_path(root: str | Path, key: dict[str, Any]) -> Path:
    """`<root>/<teacher sha256[:12]>-<digest of the rest of the key>`: one folder per teacher and data."""
    rest = json.dumps({k: key[k] for k in KEY_FIELDS if k != "teacher_sha256"}, sort_keys=True)
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
        have, want = manifest.get(f), key[f]
        if have == want:
            continue
        if f == "teacher_sha256":
            out.append(f"teacher (sha256 {str(have)[:12]}… vs {str(want)[:12]}…)")
        elif f == "image_ids":
            n = len(have or [])
            out.append(f"image ids ({n} images vs {len(want)}" + (", same count, other names)" if n == len(want)
                                                                  else ")"))
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


def map_shape(manifest: dict[str, Any], output: str, size: Sequence[int]) -> tuple[int, int, int]:
    """The stored shape of `output` for an image whose teacher view is H x W = `size`:
    channels x ceil(H / r) x ceil(W / r)."""
    o = manifest["outputs"][output]
    r = int(o["stride"])
    return int(o["channels"]), math.ceil(int(size[0]) / r), math.ceil(int(size[1]) / r)


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


def file_problem(path: Path, expected: tuple[int, ...]) -> str | None:
    """What is wrong with one cache file against the manifest's `expected` C x h x w float16 shape (header
    and file length only, no data read), or None when it matches."""
    if not path.is_file():
        return "missing"
    try:
        shape, dtype, offset = npy_header(path)
    except (OSError, ValueError) as e:
        return f"unreadable header ({e})"
    if dtype != np.float16:
        return f"dtype {dtype} (expected float16)"
    if shape != tuple(expected):
        return f"shape {_dims(shape)} (expected {_dims(expected)})"
    size, want = path.stat().st_size, offset + 2 * math.prod(shape)
    if size != want:
        return f"{size} bytes (expected {want}: truncated or padded)"
    return None


def image_sizes(manifest: dict[str, Any], cfg: Config | None = None) -> list[tuple[int, int]]:
    """Each training image's teacher-view size H x W: from the manifest (`image_sizes`, or `image_size`
    when every image is resized to data.val_size), else read from the dataset of `cfg`."""
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


def verify_files(path: str | Path, manifest: dict[str, Any], outputs: Sequence[str] | None = None,
                 cfg: Config | None = None) -> list[tuple[Path, str]]:
    """(file, problem) for every cache file of `outputs` (default: all the manifest's) that does not match
    the manifest: missing, unreadable, another dtype, shape or length. Reads headers only."""
    sizes = image_sizes(manifest, cfg)
    bad = []
    for o in outputs or list(manifest["outputs"]):
        for i, size in enumerate(sizes):
            f = Path(path) / o / f"{i:06d}.npy"
            problem = file_problem(f, map_shape(manifest, o, size))
            if problem:
                bad.append((f, problem))
    return bad


def teacher_feature_info(manifest: dict[str, Any]) -> list[FeatureInfo]:
    return [FeatureInfo(**f) for f in manifest["teacher"]["feature_info"]]


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


def teacher_outputs(out: SegOutput, names: Sequence[str]) -> dict[str, torch.Tensor]:
    return {n: (out.logits if n == LOGITS else out.features[n]) for n in names}


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


def estimate_bytes(outputs: dict[str, dict[str, int]], size: tuple[int, int], n: int) -> int:
    """float16 bytes of `n` images of `size` for the given outputs (channels x ceil(H/r) x ceil(W/r))."""
    per = sum(o["channels"] * math.ceil(size[0] / o["stride"]) * math.ceil(size[1] / o["stride"])
              for o in outputs.values())
    return 2 * per * n


def build_cache(teacher_path: str | Path, cfg: Config, out_dir: str | Path, outputs: Sequence[str],
                max_gb: float = 20.0, batch_size: int = 4, device: str | torch.device = "cpu",
                quiet: bool = False) -> dict[str, Any]:
    """Build (or finish, or extend with more outputs) the cache of `teacher_path` on cfg's training split.

    Prints the size it will take and refuses above `max_gb`; returns the manifest."""
    from train.checkpoint import check_same_classes, model_from_checkpoint
    from train.data import build_readers

    if not Path(teacher_path).is_file():
        raise UserError(f"teacher checkpoint {teacher_path} does not exist; train one with python -m train.teacher")
    out = Path(out_dir)
    reader, _ = build_readers(cfg.data)
    ids = [str(n) for n in _names(reader)]
    sha = sha256_file(teacher_path)
    key = cache_key(sha, cfg, ids)
    existing = read_manifest(out)
    if existing is not None:
        diff = key_differences(existing, key)
        if diff:
            raise UserError(f"{out} holds a cache made for another {'; '.join(diff)}; choose another --out "
                            f"or delete it")
    model, info, ckpt = model_from_checkpoint(teacher_path, device)
    check_same_classes(ckpt["data"], reader.data_info().to_dict(), f"the teacher {teacher_path}",
                       f"the dataset ({cfg.data.dataset})")
    wanted = list(dict.fromkeys([*(existing["outputs"] if existing else []), *outputs]))
    specs = _out_strides(model, wanted)
    first = teacher_view(reader[0][0], cfg)
    size = (int(first.shape[1]), int(first.shape[2]))
    need = estimate_bytes(specs, size, len(ids))
    if not quiet:
        print(f"teacher cache {out}: {', '.join(wanted)} of {len(ids)} images at {size[0]}x{size[1]}, "
              f"about {need / 2**30:.2f} GiB (float16)", flush=True)
    if need > max_gb * 2**30:
        raise UserError(f"the teacher cache would take {need / 2**30:.1f} GiB, above --max-gb {max_gb:g}; store "
                        f"less (logits only: --outputs logits; or a smaller data.val_size) or raise --max-gb")
    manifest = {
        "format": FORMAT, **key, "complete": False,
        "teacher": {"checkpoint": str(teacher_path), "arch": ckpt["arch"], "stride": int(model.stride),  # type: ignore[arg-type]
                    "feature_info": [dataclasses.asdict(f) for f in model.feature_info]},  # type: ignore[union-attr]
        "outputs": {o: {**specs[o], "dtype": "float16"} for o in wanted},
        "image_size": list(size) if cfg.data.val_size else None,
        "image_sizes": (existing or {}).get("image_sizes") or None,
        "build_seconds": float(existing.get("build_seconds", 0.0)) if existing else 0.0,
    }
    if not manifest["image_sizes"] and not cfg.data.val_size:  # the teacher sees each image as read
        manifest["image_sizes"] = [list(reader[i][0].shape[:2]) for i in range(len(ids))]
    atomic_write_json(out / MANIFEST, manifest)
    bad = verify_files(out, manifest, wanted)
    present = [f for f, p in bad if p != "missing"]
    if present and not quiet:
        print(f"teacher cache {out}: {len(present)} file(s) do not match the manifest and are rebuilt "
              f"(e.g. {present[0]})", flush=True)
    stale = {str(f) for f, _ in bad}
    todo = sorted({int(Path(f).stem) for f in stale})
    bar = tqdm(total=len(ids), initial=len(ids) - len(todo), unit="img", desc="teacher cache",
               dynamic_ncols=True, mininterval=1.0, disable=quiet)
    t0, since_save = time.perf_counter(), time.perf_counter()
    try:
        with torch.no_grad():
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                views = [teacher_view(reader[i][0], cfg) for i in chunk]
                for group in _same_size_groups(chunk, views):
                    x = torch.from_numpy(np.stack([views[chunk.index(i)] for i in group])).to(device)
                    res = teacher_outputs(model(x.contiguous(memory_format=torch.channels_last)), wanted)
                    for j, i in enumerate(group):
                        for o in wanted:
                            path = out / o / f"{i:06d}.npy"
                            if str(path) in stale:
                                _save_npy(path, res[o][j].float().cpu().numpy().astype(np.float16))
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


def _names(reader: Any) -> list[str]:
    items = getattr(reader, "items", None)
    if items:
        return [it[2] for it in items]
    if callable(getattr(reader, "name", None)):
        return [reader.name(i) for i in range(len(reader))]
    return [reader[i][2] for i in range(len(reader))]


def _same_size_groups(chunk: list[int], views: list[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, v in zip(chunk, views):
        groups.setdefault(tuple(v.shape), []).append(i)
    return list(groups.values())


# ----------------------------------------------------------------------------------------------
# Reading in training


class TargetReader:
    """Reads a complete cache in the DataLoader workers: `warped(index, geometry)` gives
    {output: float32 C x h x w}, the stored maps of training image `index` under that geometry, at each
    output's stride of the crop (ceil(crop / stride))."""

    def __init__(self, path: str | Path, manifest: dict[str, Any], outputs: Sequence[str]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.outputs = list(outputs)
        self.strides = {o: int(manifest["outputs"][o]["stride"]) for o in self.outputs}
        self.num_images = len(manifest["image_ids"])

    def read(self, index: int, size: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """{output: C x h x w float16 memory map} of training image `index`, each file's header checked
        against the manifest (channels, dtype, and h x w for a teacher view of H x W = `size` if given)."""
        out = {}
        for o in self.outputs:
            p = self.path / o / f"{index:06d}.npy"
            try:
                m = np.load(p, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise UserError(f"teacher cache file {p} is missing or corrupt ({e}); {self.rebuild_hint()}") from e
            want = map_shape(self.manifest, o, size) if size is not None else None
            channels = int(self.manifest["outputs"][o]["channels"])
            if m.dtype != np.float16 or m.ndim != 3 or m.shape[0] != channels or (
                    want is not None and tuple(m.shape) != want):
                expected = _dims(want) if want else f"{channels} x h x w"
                raise UserError(f"teacher cache file {p} holds {m.dtype} {_dims(m.shape)}, not the float16 "
                                f"{expected} its manifest says; {self.rebuild_hint()}")
            out[o] = m
        return out

    def rebuild_hint(self) -> str:
        teacher = self.manifest.get("teacher", {}).get("checkpoint", "T.pt")
        return (f"rebuild it with python -m train.cache --teacher {teacher} --out {self.path} and this run's "
                f"--config and overrides (it checks every file and rebuilds those that do not match)")

    def warped(self, index: int, g: Geometry) -> dict[str, torch.Tensor]:
        return {o: warp_map(torch.from_numpy(np.asarray(m, dtype=np.float32)), g, crop_cells(g, self.strides[o]))
                for o, m in self.read(index, g.extent).items()}


def cached_output(targets: dict[str, torch.Tensor], device: torch.device) -> SegOutput:
    """A batch of warped cached maps as the teacher's `SegOutput` (what the online teacher returns)."""
    moved = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
    logits = moved.pop(LOGITS, None)
    if logits is None:  # feature-only methods: losses never read the logits; keep the contract typed
        ref = next(iter(moved.values()))
        logits = ref.new_zeros((ref.shape[0], 0, *ref.shape[-2:]))
    return SegOutput(logits=logits, aux=None, features=moved)


# ----------------------------------------------------------------------------------------------
# Opening a cache for a run, and how far it is from the online teacher


def open_cache(cfg: Config, teacher_path: str | Path, outputs: Sequence[str], build: bool = True,
               quiet: bool = False) -> tuple[Path, dict[str, Any], bool]:
    """The cache `cfg.distill.teacher_cache` names for this teacher and data: (folder, manifest, built now).

    `auto`: `<distill.cache_dir>/<key digest>`, built (or completed, or extended) when `build`; a path:
    used as it is, refused with one sentence when it does not match."""
    from train.data import build_readers

    reader, _ = build_readers(cfg.data)
    key = cache_key(sha256_file(teacher_path), cfg, _names(reader))
    mode = cfg.distill.teacher_cache
    path = auto_path(cfg.distill.cache_dir, key) if mode == "auto" else Path(mode)
    auto = mode == "auto"
    if auto and build:
        m = read_manifest(path)
        if (m is None or not m.get("complete") or any(o not in m["outputs"] for o in outputs)
                or verify_files(path, m, outputs, cfg)):
            build_cache(teacher_path, cfg, path, outputs, quiet=quiet)
            return path, check_cache(path, key, outputs, auto), True
    m = check_cache(path, key, outputs, auto)
    bad = verify_files(path, m, outputs, cfg)
    if bad:
        f, problem = bad[0]
        raise UserError(f"{len(bad)} file(s) of the teacher cache {path} do not match its manifest ({f}: "
                        f"{problem}); rebuild them with python -m train.cache --teacher {teacher_path} --out {path} "
                        f"and this run's --config and overrides")
    return path, m, False


@torch.no_grad()
def measure_agreement(cfg: Config, teacher_path: str | Path, path: str | Path, manifest: dict[str, Any],
                      samples: int = 32) -> dict[str, Any]:
    """How the warped cached logits differ from the online teacher's on the same augmented crops
    (the first `samples` of the seeded training order), over the crops' valid pixels:

        agreement = mean [argmax z_cache = argmax z_online],   KL = mean KL(softmax z_online ‖ softmax z_cache),

    on the crop without colour jitter (`geometry`: the warp and the context beyond the crop) and with
    the config's jitter (`as_trained`: what the online teacher would see in training)."""
    import torch.nn.functional as F

    from train.checkpoint import model_from_checkpoint
    from train.data import SegmentationTorchDataset, TrainSampler, build_readers
    from train.losses.base import downsample_labels, pixel_kl

    d = cfg.data
    model, _, _ = model_from_checkpoint(teacher_path, "cpu")
    reader, _ = build_readers(d)
    targets = TargetReader(path, manifest, [LOGITS])
    views = {"geometry": 0.0, "as_trained": d.color_jitter}
    sets = {k: SegmentationTorchDataset(reader, True, d.crop_size, d.scale_range, d.flip, j, d.mean, d.std,
                                        d.val_size, targets=targets) for k, j in views.items()}
    sums = {k: {"agree": 0.0, "kl": 0.0, "n": 0.0} for k in views}
    order = iter(TrainSampler(len(reader), cfg.train.seed))
    for _ in range(min(samples, len(reader))):
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
    return {"samples": min(samples, len(reader)), **{
        k: {"argmax_agreement": v["agree"] / max(1.0, v["n"]), "mean_kl": v["kl"] / max(1.0, v["n"]),
            "pixels": int(v["n"]), "color_jitter": views[k]} for k, v in sums.items()}}
