"""Dataset readers (numpy/OpenCV only). `build_dataset("cityscapes:/data/cityscapes", split="val")`."""

from __future__ import annotations

from typing import Any

from runtime.datasets.base import BadSample, SegmentationDataset
from runtime.errors import UserError

__all__ = ["BadSample", "SegmentationDataset", "build_dataset", "dataset_classes", "parse_data_spec"]


def dataset_classes() -> dict[str, type[SegmentationDataset]]:
    """Name -> reader class (a plain dictionary; imported lazily to keep start-up cheap)."""
    from runtime.datasets.ade20k import ADE20K
    from runtime.datasets.camvid import CamVid
    from runtime.datasets.cityscapes import Cityscapes
    from runtime.datasets.folder import FolderDataset
    from runtime.datasets.synthetic import SyntheticStreets
    from runtime.datasets.voc import PascalVOC

    return {
        "synthetic": SyntheticStreets,
        "cityscapes": Cityscapes,
        "voc": PascalVOC,
        "camvid": CamVid,
        "ade20k": ADE20K,
        "folder": FolderDataset,
    }


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """`"name:root"` -> (name, root); `"name"` -> (name, None). Windows drive letters are not split."""
    name, sep, root = spec.partition(":")
    return name.strip().lower(), (root if sep and root else None)


def build_dataset(spec: str, split: str = "train", **options: Any) -> SegmentationDataset:
    """Build a reader from `"name:root"` (e.g. `cityscapes:/data/cityscapes`, `synthetic`)."""
    name, root = parse_data_spec(spec)
    classes = dataset_classes()
    if name not in classes:
        import difflib

        close = difflib.get_close_matches(name, classes, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown dataset '{name}'; choose one of {', '.join(classes)} as name:root.{hint}")
    if name != "synthetic" and root is None:
        raise UserError(f"dataset '{name}' needs a root folder: --data {name}:/path/to/{name}")
    return classes[name](root, split=split, **options)
