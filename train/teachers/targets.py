"""Reading a teacher target cache in training (`TeacherTargets`: one reader per mode), opening one for a
run or a comparison (built on first use), and how far it is from the online teacher (`measure_agreement`).
The format is in train/teachers/cache_format.py."""


from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from runtime.errors import UserError
from runtime.metadata import IGNORE_INDEX
from train.config import Config
from train.models.output import SegOutput
from train.teachers.cache_build import build_cache, source_reader
from train.teachers.cache_format import (
    LOGITS,
    MANIFEST,
    SAMPLES,
    auto_path,
    cache_key,
    check_cache,
    dims_text,
    map_shape,
    mode_of,
    nearest_scale,
    output_parts,
    read_manifest,
    run_samples,
    sample_scale,
    topk_decode,
    verify_files,
    view_stem,
)
from train.teachers.geometry import Geometry, crop_cells, scaled_size, warp_map


class TeacherTargets(Protocol):
    """What a training dataset reads its teacher targets from (train/data.py): the maps of training image
    `index` for the sample of augmentation `seed` drawn with geometry `g`, at each output's stride of the
    crop, {output: float32 C x ceil(hc / r) x ceil(wc / r)}. Implemented by `TargetReader` (single),
    `MultiscaleReader` and `ExactReader`; `open_reader` picks the one of a cache's mode."""

    path: Path
    num_images: int

    def warped(self, index: int, g: Geometry, seed: int | None = None) -> dict[str, torch.Tensor]: ...




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
            expected = dims_text(want) if want else f"{channels} x h x w"
            raise UserError(f"teacher cache file {p} holds {m.dtype} {dims_text(m.shape)}, not the {dtype} "
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
            raise UserError(f"teacher cache file {p} holds {table.dtype} {dims_text(table.shape)}, not the int64 "
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
            raise UserError(f"the exact teacher cache {self.path} holds {dims_text(self.crop)} crops, not "
                            f"{dims_text(g.crop)}; build one for data.crop_size={list(g.crop)}")
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
               quiet: bool = False, world: int = 1, footage: bool = False) -> tuple[Path, dict[str, Any], bool]:
    """The cache `cfg.distill.teacher_cache` names for this teacher, data and `distill.cache_mode`:
    (folder, manifest, built now).

    `auto`: `<distill.cache_dir>/<key digest>`, built (or completed, extended) when `build`; a path: used
    as it is, refused with one sentence when it does not match. Exact: it must hold the samples a run of
    `world` processes reads (`run_samples`, when known before training; else `distill.cache_samples`).
    `footage`: the cache of the transfer set `data.unlabeled` instead, named by `distill.footage_cache`
    (`auto`: under distill.cache_dir, built on first use; or a folder)."""
    from train.teachers.source import teacher_sha256

    _, names, provenance = source_reader(cfg, footage)
    key = cache_key(teacher_sha256(teacher_path), cfg, names, provenance)
    where = cfg.distill.footage_cache if footage else cfg.distill.teacher_cache
    path = auto_path(cfg.distill.cache_dir, key) if where == "auto" else Path(where)
    auto = where == "auto"
    exact = key["mode"]["name"] == "exact"
    needed = max(run_samples(cfg, len(names), world) or 0, int(cfg.distill.cache_samples or 0)) if exact else 0
    if auto and build:
        m = read_manifest(path)
        if (m is None or not m.get("complete") or any(o not in m["outputs"] for o in outputs)
                or int(m.get("samples") or 0) < needed or verify_files(path, m, outputs, cfg)):
            build_cache(teacher_path, cfg, path, outputs, quiet=quiet, samples=needed or None, footage=footage)
            return path, check_cache(path, key, outputs, auto), True
    m = check_cache(path, key, outputs, auto)
    if exact and int(m["samples"]) < needed:
        raise UserError(too_few_samples(path, m, f"{needed} (data.batch_size x steps, over passes of "
                                                 f"{len(names)} images)", needed))
    bad = verify_files(path, m, outputs, cfg)
    if bad:
        f, problem = bad[0]
        flag = "" if key["mode"]["name"] == "single" else f" --mode {key['mode']['name']}"
        how = (f"rebuild them with python -m train.cache --teacher {teacher_path} --out {path}{flag} and this run's "
               f"--config and overrides" if not footage else
               f"rebuild them with python -m train.cache --teacher {teacher_path}{flag} and this run's --config and "
               f"overrides (with distill.footage_cache={path})")
        raise UserError(f"{len(bad)} file(s) of the teacher cache {path} do not match its manifest ({f}: "
                        f"{problem}); {how}")
    return path, m, False


def open_targets(cfg: Config, teacher_path: str | Path, outputs: Sequence[str], build: bool = True,
                 quiet: bool = False, world: int = 1, footage: bool = False
                 ) -> tuple[TeacherTargets, dict[str, Any], bool]:
    """`open_cache`, then the reader of its mode: (targets, manifest, built now)."""
    path, manifest, built = open_cache(cfg, teacher_path, outputs, build, quiet, world, footage)
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

    from train.data import SegmentationTorchDataset, TrainSampler, build_readers
    from train.losses.base import downsample_labels, pixel_kl
    from train.teachers.source import load_teacher

    d = cfg.data
    reader0, _ = build_readers(d)
    model = load_teacher(teacher_path, reader0.classes, d.mean, d.std, cfg.distill, "cpu")
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
