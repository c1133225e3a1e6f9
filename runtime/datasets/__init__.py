"""Dataset readers (numpy/OpenCV only), opened through one `DataSpec` (runtime/datasets/spec.py):

    DataSpec.parse("cityscapes:/data/cityscapes").open("val")
    build_dataset("synthetic", "val", num_val=8)      # the same, in one call
"""

from __future__ import annotations

from typing import Any

from runtime.datasets.base import BadSample, SegmentationDataset
from runtime.datasets.spec import DataSpec, dataset_classes

__all__ = ["BadSample", "DataSpec", "SegmentationDataset", "build_dataset", "dataset_classes"]


def build_dataset(spec: str, split: str = "train", **options: Any) -> SegmentationDataset:
    """The reader of `"name:root"` (e.g. `cityscapes:/data/cityscapes`, `synthetic`) for `split`:
    `DataSpec.parse(spec).open(split, **options)`."""
    skip_bad = bool(options.pop("skip_bad", False))
    return DataSpec.parse(spec).open(split, skip_bad=skip_bad, **options)
