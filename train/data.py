"""Training data: runtime readers -> paired augmentation -> normalised tensors -> loaders.

Training samples (train/teachers/geometry.py draws the geometry as parameters, so that image, label and cached
teacher maps get the same one):
  1. random scale: resize to `s * base`, s ~ U(scale_range), base = `val_size` or the image's own size
     (so training sees objects at the validation scale on average; image bilinear, label nearest);
  2. random crop to `crop_size`, padding when smaller (image 0, label 255 = ignore);
  3. horizontal flip (p = 0.5); 4. colour jitter on the image only;
  5. `x = (image / 255 - mean) / std` (runtime.preprocess.normalize's math, in torch).
With a teacher target cache (train/teachers/targets.py, any mode behind its `TeacherTargets` protocol),
each training item also carries the sample's teacher targets: the cached maps of its source image
warped with the sample's geometry (single, multiscale), or the maps of that very crop, looked up by
its augmentation seed (exact). Validation samples: optional resize to `val_size` with runtime.preprocess (image
bilinear, label nearest), then the same normalisation. Items are (image float32 3 x H x W, label int64
H x W[, {output name: float32 C x h x w}]).

Determinism: `TrainSampler` draws the order and one augmentation seed per sample from
(seed, epoch), and the dataset seeds torch's RNG with it (in a forked RNG state) for that sample, so
the same seed gives the same batches for every method, any number of workers and after a resume.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import random
import types
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from runtime.datasets import BadSample, DataSpec, SegmentationDataset
from runtime.errors import UserError
from runtime.metadata import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, DataInfo
from runtime.preprocess import normalize, resize_image, resize_label
from train.config import Config, DataConfig
from train.teachers.geometry import apply_geometry, draw_geometry

if TYPE_CHECKING:
    from train.teachers.targets import TeacherTargets

_MAX_BAD_IN_A_ROW = 100


def color_transform(color_jitter: float) -> v2.Transform | None:
    """Colour jitter (brightness, contrast, saturation) of the image only; None when disabled."""
    if color_jitter <= 0:
        return None
    return v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter)


def normalize_tensor(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 3 x H x W -> float32 `(x - 255 mean) / (255 std)`: runtime.preprocess.normalize in torch."""
    m = torch.tensor(mean, dtype=torch.float32).mul_(255.0).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).mul_(255.0).view(3, 1, 1)
    return (image.to(torch.float32) - m) / s


class SegmentationTorchDataset(Dataset):
    """A runtime reader as a torch Dataset with training augmentation or validation resizing.

    Index with an int, or with `(index, seed)` (what `TrainSampler` yields) for a reproducible
    augmentation of that sample. With `reader.skip_bad`, a corrupt sample is replaced by the next one.
    With `targets` (a train.teacher_cache.TeacherTargets of the same split: a cache of any mode), training
    items carry the sample's teacher targets for its geometry and augmentation seed."""

    def __init__(self, reader: SegmentationDataset, train: bool, crop_size: tuple[int, int] = (512, 1024),
                 scale_range: tuple[float, float] = (0.5, 2.0), flip: bool = True, color_jitter: float = 0.0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 val_size: tuple[int, int] | None = None, targets: TeacherTargets | None = None) -> None:
        self.reader = reader
        self.train = train
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.val_size = (int(val_size[0]), int(val_size[1])) if val_size else None
        self.crop = (int(crop_size[0]), int(crop_size[1]))
        self.scales = (float(scale_range[0]), float(scale_range[1]))
        self.flip = flip
        self.color = color_transform(color_jitter) if train else None
        self.targets = targets if train else None
        # which samples were skipped as corrupt (with reader.skip_bad); in shared memory, so that the
        # DataLoader's worker processes mark them where the training process reads them
        self.bad = torch.zeros(len(reader), dtype=torch.bool).share_memory_() if reader.skip_bad else None

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if not self.train:  # a corrupt validation sample is left out (None), not replaced
            try:
                image, label, _ = self.reader[int(index)]
            except BadSample:
                if self.bad is None:
                    raise
                self.bad[int(index)] = True
                return None
            return self._validation(image, label)
        index, image, label = self._read(int(index))
        if seed is None:
            return self._augment(index, image, label)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._augment(index, image, label, seed)

    def _read(self, index: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(the index actually read, image, label): a skipped corrupt sample is replaced by the next."""
        for k in range(min(len(self.reader), _MAX_BAD_IN_A_ROW)):
            i = (index + k) % len(self.reader)
            try:
                image, label, _ = self.reader[i]
                return i, image, label
            except BadSample:
                if self.bad is None:
                    raise
                self.bad[i] = True
        raise UserError(f"{_MAX_BAD_IN_A_ROW} samples in a row from index {index} are corrupt; check the dataset")

    def skipped(self) -> list[str]:
        """The files (or names) of the samples skipped as corrupt so far, in index order."""
        if self.bad is None:
            return []
        return [sample_name(self.reader, i) for i in torch.nonzero(self.bad).flatten().tolist()]

    def _augment(self, index: int, image: np.ndarray, label: np.ndarray, seed: int | None = None) -> Any:
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        lbl = torch.from_numpy(np.ascontiguousarray(label))
        g = draw_geometry((img.shape[-2], img.shape[-1]), self.scales, self.crop, self.flip, self.val_size)
        img, lbl = apply_geometry(img, lbl, g)
        if self.color is not None:
            img = self.color(tv_tensors.Image(img)).as_subclass(torch.Tensor)
        x = normalize_tensor(img, self.mean, self.std)
        if self.targets is None:
            return x, lbl.to(torch.int64)
        return x, lbl.to(torch.int64), self.targets.warped(index, g, seed)

    def _validation(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.val_size:
            image, label = resize_image(image, self.val_size), resize_label(label, self.val_size)
        x = torch.from_numpy(normalize(image, self.mean, self.std))
        return x, torch.from_numpy(np.ascontiguousarray(label)).to(torch.int64)


class MixedDataset(Dataset):
    """A labeled training set and a transfer set (unlabeled frames) in one index space: keys below
    `len(labeled)` are labeled samples, the rest frames (`MixedSampler` makes the keys). A frame's label is
    all ignore (255); the trainer knows which samples of a batch are labeled by their place (the first
    `data.batch_size`)."""

    def __init__(self, labeled: SegmentationTorchDataset, footage: SegmentationTorchDataset) -> None:
        self.labeled, self.footage = labeled, footage

    def __len__(self) -> int:
        return len(self.labeled) + len(self.footage)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        n = len(self.labeled)
        return self.labeled[key] if index < n else self.footage[(index - n, seed)]


# ----------------------------------------------------------------------------------------------
# Samplers


class TrainSampler(Sampler[tuple[int, int]]):
    """Shuffled `(index, augmentation seed)` pairs, a function of (seed, epoch) only.

    Each of `world` ranks gets every world-th sample of the epoch's permutation, `len(self)` each (the
    tail that does not divide is dropped so ranks stay in step). `skip(k)` makes the next pass start at
    its k-th sample (resume in the middle of an epoch without loading the skipped samples)."""

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world: int = 1, shuffle: bool = True) -> None:
        self.size, self.seed, self.rank, self.world, self.shuffle = size, int(seed), rank, world, shuffle
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, samples: int) -> None:
        self._skip = int(samples)

    def __len__(self) -> int:
        return self.size // self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=g)
        n = len(self)
        mine = order[self.rank: n * self.world: self.world].tolist()
        mine_seeds = seeds[self.rank: n * self.world: self.world].tolist()
        start, self._skip = self._skip, 0
        for i in range(start, n):
            yield mine[i], mine_seeds[i]


class MixedSampler(Sampler[tuple[int, int]]):
    """Batches of `labeled` labeled samples followed by `unlabeled` frames of a transfer set, as one flat
    sequence of `(key, augmentation seed)` that a DataLoader of batch size `labeled + unlabeled` cuts.

    The labeled part is `TrainSampler(labeled_size, seed, rank, world)`'s order, cut into batches exactly
    as without a transfer set (so the labeled batches of a run are the same with and without one). The
    frames come from an endless stream: position q = (g · world + rank) · unlabeled + j of global batch
    g = epoch · batches_per_epoch + b is frame `perm_E[q mod F]` of footage epoch E = q div F, perm_E a
    seeded permutation of the F frames with one augmentation seed per position, so every frame is seen
    once per footage epoch. Frame keys are offset by `labeled_size` (MixedDataset's index space).
    Everything is a function of (seed, epoch, position): reproducible, and `skip` resumes mid-epoch."""

    def __init__(self, labeled_size: int, footage_size: int, labeled: int, unlabeled: int, seed: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.base = TrainSampler(labeled_size, seed, rank, world)
        self.labeled_size, self.footage_size = int(labeled_size), int(footage_size)
        self.labeled, self.unlabeled = int(labeled), int(unlabeled)
        self.seed, self.rank, self.world = int(seed), rank, world
        self.epoch = 0
        self._skip_batches = 0
        self._perm: tuple[int, list[int], list[int]] | None = None  # (footage epoch, order, seeds)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.base) // self.labeled

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def skip(self, samples: int) -> None:
        self._skip_batches = int(samples) // (self.labeled + self.unlabeled)

    def __len__(self) -> int:
        return self.batches_per_epoch * (self.labeled + self.unlabeled)

    def _footage_epoch(self, e: int) -> tuple[list[int], list[int]]:
        if self._perm is None or self._perm[0] != e:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e + 7_919 * 1_000_003)
            order = torch.randperm(self.footage_size, generator=g).tolist()
            seeds = torch.randint(0, 2**62, (self.footage_size,), generator=g).tolist()
            self._perm = (e, order, seeds)
        return self._perm[1], self._perm[2]

    def frames(self, batch: int) -> list[tuple[int, int]]:
        """The (MixedDataset key, seed) of the frames of global batch `batch` on this rank."""
        out = []
        for j in range(self.unlabeled):
            q = (batch * self.world + self.rank) * self.unlabeled + j
            order, seeds = self._footage_epoch(q // self.footage_size)
            p = q % self.footage_size
            out.append((self.labeled_size + order[p], seeds[p]))
        return out

    def __iter__(self) -> Iterator[tuple[int, int]]:
        nb, n = self.batches_per_epoch, self.labeled
        keys = list(iter(self.base))
        start, self._skip_batches = self._skip_batches, 0
        for b in range(start, nb):
            yield from keys[b * n:(b + 1) * n]
            yield from self.frames(self.epoch * nb + b)


class ShardSampler(DistributedSampler):
    """Validation shard `rank::world` with no padding, so summed confusion matrices count each image once
    (a DistributedSampler, so the engine knows to all-reduce)."""

    def __init__(self, dataset: Dataset, rank: int, world: int) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=False)
        self.indices = list(range(rank, len(dataset), world))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def sample_name(reader: SegmentationDataset, i: int) -> str:
    """The image file of sample `i` when the reader lists files, else its name."""
    items = getattr(reader, "items", None)
    if items and i < len(items):
        return str(items[i][0] if items[i][0] is not None else items[i][2])
    name = getattr(reader, "name", None)
    return str(name(i)) if callable(name) else f"sample {i}"


def _segmentation_dataset(loader: Any, part: str = "labeled") -> SegmentationTorchDataset | None:
    """The SegmentationTorchDataset behind a DataLoader or InfiniteLoader, over Subsets or not; of a mixed
    loader, its `part` (labeled, footage). A plain loader has no footage part (None)."""
    ds = getattr(getattr(loader, "loader", loader), "dataset", None)
    while isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    if isinstance(ds, MixedDataset):
        ds = getattr(ds, part)
    elif part != "labeled":
        return None
    return ds if isinstance(ds, SegmentationTorchDataset) else None


def footage_view(loader: Any) -> Any:
    """Something `skipped_samples`/`skipped_mask` read as the transfer set of a mixed `loader` (None
    when it has none): what `gather_skipped` reports as the `footage` split."""
    ds = _segmentation_dataset(loader, "footage")
    return None if ds is None else types.SimpleNamespace(dataset=ds)


def skipped_samples(loader: Any) -> list[str]:
    """The samples a loader (DataLoader, InfiniteLoader, over a Subset or not) has skipped as corrupt."""
    ds = _segmentation_dataset(loader)
    return ds.skipped() if ds is not None else []


def skipped_mask(loader: Any) -> torch.Tensor | None:
    """The shared skipped-sample mask behind `loader` (None without skip_bad)."""
    ds = _segmentation_dataset(loader)
    return ds.bad if ds is not None else None


def gather_skipped(loaders: dict[str, Any], env: Any, device: torch.device) -> dict[str, list[str]]:
    """The samples left out as corrupt (data.skip_bad), per split (`loaders`: split -> loader or None),
    OR-ed over the ranks of `env` (train.distributed.DistEnv); said once, on the main rank."""
    from train.engine import distributed as D
    from train.engine.console import log

    out: dict[str, list[str]] = {}
    for split, loader in loaders.items():
        mask = skipped_mask(loader) if loader is not None else None
        if mask is None:
            continue
        if env.distributed:
            total = mask.to(torch.int32).to(device)
            D.all_reduce_(total, "sum")
            mask.copy_(total.cpu() > 0)
        out[split] = skipped_samples(loader)
        if out[split] and env.is_main:
            shown = ", ".join(out[split][:3]) + (", ..." if len(out[split]) > 3 else "")
            why = " (unreadable frames are always skipped)" if split == "footage" else " (data.skip_bad)"
            log(f"skipped {len(out[split])} corrupt {split} sample(s){why}: {shown}; all are listed in results.json")
    return out


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor] | None]
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stack samples; images of different sizes are padded bottom/right (image 0, label 255 = ignore).
    Left-out (None) samples are dropped; a batch of none is None."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    h = max(x.shape[-2] for x, _ in batch)
    w = max(x.shape[-1] for x, _ in batch)
    images = torch.zeros(len(batch), 3, h, w)
    labels = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)
    for i, (x, y) in enumerate(batch):
        images[i, :, : x.shape[-2], : x.shape[-1]] = x
        labels[i, : y.shape[-2], : y.shape[-1]] = y
    return images, labels


def seed_worker(worker_id: int) -> None:
    """DataLoader worker start: seed numpy/random from torch's per-worker seed; one OpenCV thread."""
    import cv2

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    cv2.setNumThreads(1)


# ----------------------------------------------------------------------------------------------
# Loaders


def data_spec(data: DataConfig) -> DataSpec:
    """The DataSpec of the data config (reader, root, the synthetic generator's options)."""
    return DataSpec.from_config(dataclasses.asdict(data))


def build_readers(data: DataConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train reader, val reader) from the data config; a corrupt sample's sentence names data.skip_bad=true."""
    spec = data_spec(data)

    def reader(split: str) -> SegmentationDataset:
        return spec.open(split, skip_bad=data.skip_bad, skip_option="data.skip_bad=true")

    return reader(data.train_split), reader(data.val_split)


def unlabeled_per_batch(d: DataConfig) -> int:
    """Unlabeled frames in each batch: round(unlabeled_ratio x batch_size), at least 1; 0 without a transfer set."""
    return max(1, round(d.unlabeled_ratio * d.batch_size)) if d.unlabeled else 0


def build_footage_reader(d: DataConfig, train_reader: SegmentationDataset | None = None) -> Any:
    """The transfer set `data.unlabeled` as a reader (runtime.datasets.footage.FootageReader): frames resized
    to the labeled training images' size when they all share one (else data.val_size, else as read), the
    labeled data's classes, the synthetic generator's options for `synthetic[:N]`; corrupt frames skipped
    and counted. UserError when data.unlabeled is empty."""
    from runtime.datasets.footage import FootageReader

    if not d.unlabeled:
        raise UserError("no transfer set: data.unlabeled is empty; give a folder, glob, video or synthetic:N")
    train_reader = train_reader if train_reader is not None else build_readers(d)[0]
    sizes = image_sizes(train_reader)
    size = sizes.pop() if len(sizes) == 1 else (tuple(int(v) for v in d.val_size) if d.val_size else None)
    syn = dataclasses.asdict(d.synthetic)
    return FootageReader(d.unlabeled, stride=d.unlabeled_stride, size=size, classes=train_reader.classes,  # type: ignore[arg-type]
                         palette=train_reader.palette, synthetic=syn, skip_bad=True)


def build_loaders(cfg: Config, distributed: bool = False, rank: int = 0, world: int = 1,
                  targets: TeacherTargets | None = None, footage_targets: TeacherTargets | None = None
                  ) -> tuple[DataLoader, DataLoader, DataInfo]:
    """Train loader (shuffled by `cfg.train.seed`, augmented, drop_last), val loader, and the DataInfo
    (classes, palette, mean/std, input size = val_size or the first val image's size). With `targets`
    (a train.teacher_cache.TeacherTargets), training batches are (images, labels, {output: maps}).
    With a transfer set (`data.unlabeled`), each batch is `data.batch_size` labeled samples followed by
    `unlabeled_per_batch` frames (labels all 255; `MixedSampler`), with `footage_targets` (the footage
    cache) beside `targets`."""
    d = cfg.data
    train_reader, val_reader = build_readers(d)
    if not distributed:
        rank, world = 0, 1
    per_rank = len(train_reader) // world
    if per_rank < d.batch_size:
        raise UserError(f"the {d.train_split} split has {len(train_reader)} images, fewer than one batch of "
                        f"{d.batch_size} per process; lower data.batch_size or use more data")
    train_set = SegmentationTorchDataset(train_reader, True, d.crop_size, d.scale_range, d.flip, d.color_jitter,
                                         d.mean, d.std, d.val_size, targets=targets)
    if targets is not None and targets.num_images != len(train_reader):
        raise UserError(f"the teacher cache {targets.path} holds {targets.num_images} images but the "
                        f"{d.train_split} split has {len(train_reader)}; build the cache for this dataset")
    val_set: Dataset = SegmentationTorchDataset(val_reader, False, mean=d.mean, std=d.std, val_size=d.val_size)
    if d.max_val_images is not None:
        val_set = torch.utils.data.Subset(val_set, range(min(d.max_val_images, len(val_reader))))
    pin = torch.cuda.is_available() and cfg.train.device != "cpu"
    common: dict[str, Any] = dict(num_workers=d.workers, pin_memory=pin, persistent_workers=d.workers > 0,
                                  worker_init_fn=seed_worker)
    if d.workers > 0 and "forkserver" in mp.get_all_start_methods():
        # Workers forked from a clean server process: a plain fork copies the state of whatever threads
        # the parent runs (OpenCV's thread pool after a parallel resize), and the worker can deadlock in
        # its first OpenCV call.
        common["multiprocessing_context"] = "forkserver"
    if d.unlabeled:
        if (targets is None) != (footage_targets is None):
            raise UserError("a teacher cache was given for only one of the labeled data and the transfer set "
                            "(data.unlabeled); build both (train.distill does) or neither")
        footage = build_footage_reader(d, train_reader)
        if rank == 0 and (note := footage.size_note()):
            print(note, flush=True)
        if footage_targets is not None and footage_targets.num_images != len(footage):
            raise UserError(f"the footage teacher cache {footage_targets.path} holds {footage_targets.num_images} "
                            f"frames but data.unlabeled has {len(footage)}; build the cache for this transfer set")
        footage_set = SegmentationTorchDataset(footage, True, d.crop_size, d.scale_range, d.flip, d.color_jitter,
                                               d.mean, d.std, d.val_size, targets=footage_targets)
        u = unlabeled_per_batch(d)
        train_loader = DataLoader(MixedDataset(train_set, footage_set), batch_size=d.batch_size + u,
                                  drop_last=True,
                                  sampler=MixedSampler(len(train_reader), len(footage), d.batch_size, u,
                                                       cfg.train.seed, rank, world),
                                  generator=torch.Generator().manual_seed(cfg.train.seed), **common)
    else:
        train_loader = DataLoader(train_set, batch_size=d.batch_size, drop_last=True,
                                  sampler=TrainSampler(len(train_reader), cfg.train.seed, rank, world),
                                  generator=torch.Generator().manual_seed(cfg.train.seed), **common)
    val_sampler = ShardSampler(val_set, rank, world) if distributed else None
    val_loader = DataLoader(val_set, batch_size=d.val_batch_size, shuffle=False, sampler=val_sampler,
                            collate_fn=pad_collate, **common)
    size = model_input_size(d, val_reader)
    info = dataclasses.replace(train_reader.data_info(size), mean=d.mean, std=d.std, extra=data_provenance(d))
    return train_loader, val_loader, info


def model_input_size(d: DataConfig, val_reader: SegmentationDataset) -> tuple[int, int]:
    """The size a model is trained and validated at, recorded as `DataInfo.input_size` (export's default):
    `data.val_size` when set; else the validation images' own size when they all share one; else (sizes
    vary, as in VOC or ADE20K, or no image can be read) the training crop."""
    if d.val_size:
        return (int(d.val_size[0]), int(d.val_size[1]))
    sizes = image_sizes(val_reader)
    return sizes.pop() if len(sizes) == 1 else (int(d.crop_size[0]), int(d.crop_size[1]))


def image_sizes(reader: SegmentationDataset) -> set[tuple[int, int]]:
    """The distinct (H, W) of a reader's images: from the file headers when it lists files (PIL reads no
    pixels), else from its `size` (synthetic), else by reading the first readable sample."""
    fixed = getattr(reader, "size", None)
    if isinstance(fixed, tuple) and len(fixed) == 2:
        return {(int(fixed[0]), int(fixed[1]))}
    items = getattr(reader, "items", None)
    if items and all(item[0] is not None for item in items):
        try:
            from PIL import Image

            sizes = set()
            for item in items:
                with Image.open(item[0]) as im:
                    sizes.add((int(im.height), int(im.width)))
            return sizes
        except (ImportError, OSError, ValueError):
            pass  # an unreadable header: read samples instead (skip_bad applies there)
    first = next((smp for smp in (reader.get_or_skip(i) for i in range(len(reader))) if smp is not None), None)
    return {(int(first[0].shape[0]), int(first[0].shape[1]))} if first is not None else set()


def data_provenance(d: DataConfig) -> dict[str, Any]:
    """What `DataInfo.extra` records so that runtime.eval, export parity and calibration read the same
    data the model was trained on: the dataset spec, its splits and, for synthetic data, its generator."""
    return {**data_spec(d).to_extra(), "train_split": d.train_split, "val_split": d.val_split}


class InfiniteLoader:
    """Endless batches from a DataLoader, advancing the sampler's epoch (`set_epoch`) at each pass.

    `state_dict()` = {epoch, position (batches consumed in this epoch)}; after `load_state_dict` the
    iteration continues with the same batches (the sampler skips the consumed ones when it can)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.epoch = 0
        self.position = 0
        self._it: Iterator[Any] | None = None

    def __iter__(self) -> InfiniteLoader:
        return self

    def __next__(self) -> Any:
        for _ in range(2):
            if self._it is None:
                self._it = self._start()
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.epoch += 1
                self.position = 0
                continue
            self.position += 1
            return batch
        raise UserError("the training loader yields no batches; lower data.batch_size or use more data")

    def _start(self) -> Iterator[Any]:
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        skipped = 0
        if self.position and hasattr(sampler, "skip") and self.loader.batch_size:
            sampler.skip(self.position * self.loader.batch_size)
            skipped = self.position
        it = iter(self.loader)
        for _ in range(self.position - skipped):  # samplers that cannot skip: consume the batches
            next(it)
        return it

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._it = None
