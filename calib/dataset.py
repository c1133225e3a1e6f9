"""The calibration set: TRAINING images that cover every class, pre-processed by runtime's code, cached.

Selection (seeded, reproducible): scan the labels of (a seeded random subset of at most
`max(4 * count, 500)`) training images; greedily pick the image that adds the most classes not yet
covered (ties broken by the seeded order) until every class present is covered, then fill up to `count`
in the seeded random order. A model class absent from every scanned label is an error naming the
classes (unless `allow_missing`), since the calibration could not see its activations.

Cache format (also read by the TensorRT entropy calibrator in export/), under `cache_dir`:

    calib_<key>.npy    float32 N x 3 x H x W, exactly runtime.preprocess.preprocess_for(info, image, (H, W))
    calib_<key>.json   {"format": 1, "key": ..., "names": [N image names, in array order],
                        "dataset": "name[:root]", "split": "train", "size": [H, W], "count": N,
                        "seed": s, "data_sha256": sha256 of the model's data block JSON,
                        "classes_covered": [...], "classes_missing": [...]}

`key` = the first 16 hex digits of sha256 over the JSON of (dataset, split, size, count, seed,
data_sha256, number of images in the split): the same request finds the same files, and a different model data block (mean, std,
classes) never reuses another's cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from runtime.datasets import SegmentationDataset
from runtime.errors import UserError
from runtime.io import atomic_write_json, atomic_write_npy
from runtime.metadata import DataInfo
from runtime.preprocess import preprocess_for, resize_label

FORMAT = 1
DEFAULT_CACHE_DIR = Path("data/cache/calib")


@dataclass
class CalibrationSet:
    """Pre-processed images (float32 N x 3 x H x W), their names and the manifest."""

    images: np.ndarray
    names: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the .npy file


def data_sha256(info: DataInfo) -> str:
    return hashlib.sha256(json.dumps(info.to_dict(), sort_keys=True).encode()).hexdigest()


def cache_key(dataset: str, split: str, size: tuple[int, int], count: int, seed: int, data_hash: str,
              num_images: int) -> str:
    blob = json.dumps([dataset, split, list(size), count, seed, data_hash, num_images])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_classes(ds: SegmentationDataset, info: DataInfo, what: str) -> None:
    """The reader must label the model's classes (same count) for calibration and mIoU to mean anything."""
    if ds.num_classes != info.num_classes:
        raise UserError(f"{what} has {ds.num_classes} classes but the model has {info.num_classes} "
                        f"({', '.join(info.classes[:5])}, ...); calibrate with the dataset the model was trained on")


def select_images(label_classes: Sequence[set[int]], count: int, seed: int) -> list[int]:
    """Greedy class cover, then seeded random fill; returns up to `count` indices into `label_classes`."""
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(label_classes))]
    chosen: list[int] = []
    covered: set[int] = set()
    while len(chosen) < count:
        best, gain = -1, 0
        for i in order:
            g = len(label_classes[i] - covered)
            if g > gain:
                best, gain = i, g
        if gain == 0:
            break
        chosen.append(best)
        covered |= label_classes[best]
    taken = set(chosen)
    chosen += [i for i in order if i not in taken][:count - len(chosen)]
    return chosen


def build_calibration_set(ds: SegmentationDataset, spec: str, info: DataInfo, size: tuple[int, int],
                          count: int = 200, seed: int = 0, cache_dir: str | Path = DEFAULT_CACHE_DIR,
                          allow_missing: bool = False) -> CalibrationSet:
    """Select, pre-process and cache `count` training images of `ds` (see the module docstring)."""
    if count < 1:
        raise UserError(f"--images {count}: the calibration set needs at least one image")
    check_classes(ds, info, f"dataset {spec}")
    dh = data_sha256(info)
    key = cache_key(spec, ds.split, size, count, seed, dh, len(ds))
    npy, manifest_path = Path(cache_dir) / f"calib_{key}.npy", Path(cache_dir) / f"calib_{key}.json"
    if npy.is_file() and manifest_path.is_file():
        cached = load_calibration_cache(npy)
        if cached.manifest.get("key") == key:
            return cached
    n = len(ds)
    if n == 0:
        raise UserError(f"dataset {spec} has no {ds.split} images to calibrate with")
    rng = np.random.default_rng(seed)
    scan = sorted(rng.permutation(n)[:max(4 * count, 500)].tolist())
    classes_of = []
    readable = []
    for i in scan:
        sample = ds.get_or_skip(i)
        if sample is None:
            continue
        readable.append(i)
        classes_of.append({int(c) for c in np.unique(sample[1]) if c < info.num_classes})
    scan = readable
    if not scan:
        raise UserError(f"none of the scanned {ds.split} images of {spec} could be read (skip_bad)")
    present = set().union(*classes_of)
    missing = [info.classes[c] for c in range(info.num_classes) if c not in present]
    if missing and not allow_missing:
        raise UserError(f"no scanned {ds.split} image of {spec} contains the model's classes {', '.join(missing)}; "
                        "calibrate on the dataset the model was trained on, or pass --allow-missing-classes")
    selected = select_images(classes_of, count, seed)
    picked = [scan[j] for j in selected]
    covered = set().union(*(classes_of[j] for j in selected))
    samples = [ds[i] for i in picked]
    images = preprocess_for(info, [s[0] for s in samples], size).astype(np.float32)
    manifest = {"format": FORMAT, "key": key, "names": [s[2] for s in samples], "dataset": spec, "split": ds.split,
                "size": list(size), "count": len(samples), "seed": seed, "data_sha256": dh,
                "classes_covered": [info.classes[c] for c in sorted(covered)],
                "classes_missing": [info.classes[c] for c in range(info.num_classes) if c not in covered]}
    atomic_write_npy(npy, images)
    atomic_write_json(manifest_path, manifest)
    return CalibrationSet(images, [s[2] for s in samples], manifest, npy)


def load_calibration_cache(npy: str | Path) -> CalibrationSet:
    """Read `calib_<key>.npy` and its `.json` manifest (the format in the module docstring)."""
    npy = Path(npy)
    manifest_path = npy.with_suffix(".json")
    try:
        images = np.load(npy, allow_pickle=False)
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(f"calibration cache {npy} (+ .json) is unreadable ({e}); delete it to rebuild") from e
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.float32:
        raise UserError(f"calibration cache {npy} is not float32 N x 3 x H x W; delete it to rebuild")
    return CalibrationSet(images, list(manifest.get("names", [])), manifest, npy)


def evaluation_set(ds: SegmentationDataset, info: DataInfo, size: tuple[int, int], count: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` images of `ds` (a held-out split) at `size` and their labels (nearest resize)."""
    check_classes(ds, info, f"the {ds.split} split")
    samples = [s for s in (ds.get_or_skip(i) for i in range(min(count, len(ds)))) if s is not None]
    if not samples:
        raise UserError(f"the {ds.split} split has no images to measure mIoU on")
    images = preprocess_for(info, [s[0] for s in samples], size)
    labels = np.stack([resize_label(s[1], size) for s in samples], 0)
    return images, labels


class ArrayDataReader(CalibrationDataReader):
    """ONNX Runtime calibration reader over a float32 N x 3 x H x W array, `batch_size` images at a time."""

    def __init__(self, images: np.ndarray, input_name: str = "images", batch_size: int = 1) -> None:
        self.images = images
        self.input_name = input_name
        self.batch_size = batch_size
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.images):
            return None
        x = np.ascontiguousarray(self.images[self.pos:self.pos + self.batch_size], dtype=np.float32)
        self.pos += self.batch_size
        return {self.input_name: x}

    def rewind(self) -> None:
        self.pos = 0

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)
