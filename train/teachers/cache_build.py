"""Building a teacher target cache: the teacher run once over the training images (or, exact mode, the
sampler's crops), each output written as float16 files (or top-k) beside a manifest; resumable. The
format is in train/teachers/cache_format.py."""


from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from runtime.errors import UserError
from runtime.io import atomic_write_json, atomic_write_npy
from runtime.preprocess import normalize, resize_image
from train.config import Config
from train.models.output import SegOutput
from train.teachers.cache_format import (
    CHUNK,
    FORMAT,
    LOGITS,
    MANIFEST,
    SAMPLES,
    SINGLE,
    bad_files,
    cache_key,
    dims_text,
    key_differences,
    read_manifest,
    run_samples,
    sample_table,
    samples_hint,
    stems,
    topk_encode,
    view_stem,
)
from train.teachers.geometry import scaled_size

# ----------------------------------------------------------------------------------------------
# Building


def _out_strides(model: torch.nn.Module, outputs: Sequence[str]) -> dict[str, dict[str, int]]:
    from train.teachers.source import teacher_classes

    info = {f.name: f for f in model.feature_info}  # type: ignore[union-attr]
    out = {}
    for o in outputs:
        if o == LOGITS:
            out[o] = {"stride": int(model.stride), "channels": teacher_classes(model)}  # type: ignore[arg-type]
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
    image as read to `scaled_size(base, scale)` exactly as train/teachers/geometry.py `apply_geometry` resizes
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


def source_reader(cfg: Config, footage: bool = False) -> tuple[Any, list[str], dict[str, Any] | None]:
    """(reader, image ids, footage provenance or None) of what a cache stores: cfg's training split, or with
    `footage` its transfer set `data.unlabeled` (ids: each frame's file sha256 and frame index)."""
    from train.data import build_footage_reader, build_readers

    if footage:
        reader = build_footage_reader(cfg.data)
        return reader, list(reader.frame_ids()), reader.provenance()
    reader = build_readers(cfg.data)[0]
    return reader, [str(n) for n in image_names(reader)], None


def build_cache(teacher_path: str | Path, cfg: Config, out_dir: str | Path, outputs: Sequence[str],
                max_gb: float = 20.0, batch_size: int = 4, device: str | torch.device = "cpu",
                quiet: bool = False, samples: int | None = None, footage: bool = False) -> dict[str, Any]:
    """Build (or finish, or extend with more outputs or, exact, more samples) the cache of `teacher_path` on
    cfg's training split (with `footage`: on its transfer set, single or multiscale) in the mode
    `distill.cache_mode`. Exact: at least `samples`, `distill.cache_samples` and what cfg's budget reads.
    Prints the size it will take and refuses above `max_gb`; returns the manifest."""
    from train.engine.checkpoint import check_same_classes, model_from_checkpoint
    from train.teachers.source import (
        CHECKPOINT,
        check_teacher,
        describe_teacher,
        load_teacher,
        teacher_kind,
        teacher_sha256,
    )

    check_teacher(teacher_path)
    own = teacher_kind(teacher_path) == CHECKPOINT
    if footage and cfg.distill.cache_mode == "exact":
        raise UserError("the exact teacher cache holds the labeled split's seeded crops; a transfer set "
                        "(data.unlabeled) is cached in the single or multiscale mode: pass "
                        "distill.cache_mode=single or multiscale")
    out = Path(out_dir)
    reader, ids, provenance = source_reader(cfg, footage)
    sha = teacher_sha256(teacher_path)
    key = cache_key(sha, cfg, ids, provenance)
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
    if own:
        model, info, ckpt = model_from_checkpoint(teacher_path, device)
        check_same_classes(ckpt["data"], reader.data_info().to_dict(), f"the teacher {teacher_path}",
                           f"the dataset ({cfg.data.dataset})")
    else:  # a foreign or exported teacher: its classes mapped onto the data's (train/teachers/source.py)
        model = load_teacher(teacher_path, reader.classes, cfg.data.mean, cfg.data.std, cfg.distill, device)
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
        what = {"single": f"{len(ids)} {'frames' if footage else 'images'} at {size[0]}x{size[1]}",
                "multiscale": f"{len(ids)} images at {size[0]}x{size[1]} x {len(mode.get('scales', []))} scales "
                              f"x {len(mode.get('flips', []))} flips",
                "exact": f"{n_samples} augmented crops of {dims_text(mode.get('crop', []))} (seed {mode.get('seed')})"}
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
        "teacher": {"checkpoint": str(teacher_path), **describe_teacher(model)},
        "outputs": {o: {**specs[o], "dtype": "float16"} for o in wanted},
        "image_size": list(size) if cfg.data.val_size else None,
        "image_sizes": (existing or {}).get("image_sizes") or None,
        "build_seconds": float(existing.get("build_seconds", 0.0)) if existing else 0.0,
    }
    if mode["name"] == "exact":
        manifest.update(samples=n_samples, chunk=int((existing or {}).get("chunk") or CHUNK))
    fixed = getattr(reader, "size", None) if footage else None  # frames resized to one size by the reader
    if not manifest["image_sizes"] and not cfg.data.val_size:  # the teacher sees each image as read
        manifest["image_sizes"] = ([list(fixed)] * len(ids) if fixed else
                                   [list(reader[i][0].shape[:2]) for i in range(len(ids))])
    if mode["name"] != "single":  # compare.py counts a cache's build FLOPs from this when recorded
        per = ([tuple(mode["crop"])] * n_samples if mode["name"] == "exact"
               else [sz for _, _, _, sz in stems(manifest, cfg)])
        manifest["build_flops"] = _view_flops(model, per)  # type: ignore[arg-type]
    atomic_write_json(out / MANIFEST, manifest)
    bad = bad_files(out, manifest, wanted)
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


def image_names(reader: Any) -> list[str]:
    items = getattr(reader, "items", None)
    if items:
        return [it[2] for it in items]
    if callable(getattr(reader, "name", None)):
        return [reader.name(i) for i in range(len(reader))]
    return [reader[i][2] for i in range(len(reader))]


