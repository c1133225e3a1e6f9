"""ADE20K scene parsing (ADEChallengeData2016, 150 classes).

Annotation id 0 ("other") becomes 255 (ignore) and ids 1..150 become 0..149 (mmseg's
`reduce_zero_label`). Class names and colours as in mmsegmentation's `ADE20KDataset`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.datasets.base import BadSample, SegmentationDataset
from runtime.errors import UserError
from runtime.metadata import IGNORE_INDEX

CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
]
_PALETTE_FLAT = [
    120, 120, 120, 180, 120, 120, 6, 230, 230, 80, 50, 50, 4, 200, 3, 120, 120, 80, 140, 140, 140, 204, 5, 255,
    230, 230, 230, 4, 250, 7, 224, 5, 255, 235, 255, 7, 150, 5, 61, 120, 120, 70, 8, 255, 51, 255, 6, 82,
    143, 255, 140, 204, 255, 4, 255, 51, 7, 204, 70, 3, 0, 102, 200, 61, 230, 250, 255, 6, 51, 11, 102, 255,
    255, 7, 71, 255, 9, 224, 9, 7, 230, 220, 220, 220, 255, 9, 92, 112, 9, 255, 8, 255, 214, 7, 255, 224,
    255, 184, 6, 10, 255, 71, 255, 41, 10, 7, 255, 255, 224, 255, 8, 102, 8, 255, 255, 61, 6, 255, 194, 7,
    255, 122, 8, 0, 255, 20, 255, 8, 41, 255, 5, 153, 6, 51, 255, 235, 12, 255, 160, 150, 20, 0, 163, 255,
    140, 140, 140, 250, 10, 15, 20, 255, 0, 31, 255, 0, 255, 31, 0, 255, 224, 0, 153, 255, 0, 0, 0, 255,
    255, 71, 0, 0, 235, 255, 0, 173, 255, 31, 0, 255, 11, 200, 200, 255, 82, 0, 0, 255, 245, 0, 61, 255,
    0, 255, 112, 0, 255, 133, 255, 0, 0, 255, 163, 0, 255, 102, 0, 194, 255, 0, 0, 143, 255, 51, 255, 0,
    0, 82, 255, 0, 255, 41, 0, 255, 173, 10, 0, 255, 173, 255, 0, 0, 255, 153, 255, 92, 0, 255, 0, 255,
    255, 0, 245, 255, 0, 102, 255, 173, 0, 255, 0, 20, 255, 184, 184, 0, 31, 255, 0, 255, 61, 0, 71, 255,
    255, 0, 204, 0, 255, 194, 0, 255, 82, 0, 10, 255, 0, 112, 255, 51, 0, 255, 0, 194, 255, 0, 122, 255,
    0, 255, 163, 255, 153, 0, 0, 255, 10, 255, 112, 0, 143, 255, 0, 82, 0, 255, 163, 255, 0, 255, 235, 0,
    8, 184, 170, 133, 0, 255, 0, 255, 92, 184, 0, 255, 255, 0, 31, 0, 184, 255, 0, 214, 255, 255, 0, 112,
    92, 255, 0, 0, 224, 255, 112, 224, 255, 70, 184, 160, 163, 0, 255, 153, 0, 255, 71, 255, 0, 255, 0, 163,
    255, 204, 0, 255, 0, 143, 0, 255, 235, 133, 255, 0, 255, 0, 235, 245, 0, 255, 255, 0, 122, 255, 245, 0,
    10, 190, 212, 214, 255, 0, 0, 204, 255, 20, 0, 255, 255, 255, 0, 0, 153, 255, 0, 41, 255, 0, 255, 204,
    41, 0, 255, 41, 255, 0, 173, 0, 255, 0, 245, 255, 71, 0, 255, 122, 0, 255, 0, 255, 184, 0, 92, 255,
    184, 255, 0, 0, 133, 255, 255, 214, 0, 25, 194, 194, 102, 255, 0, 92, 0, 255,
]
PALETTE = [tuple(_PALETTE_FLAT[i:i + 3]) for i in range(0, len(_PALETTE_FLAT), 3)]
SPLIT_DIRS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}

# 0 -> 255, k -> k - 1 (uint8 arithmetic wraps 0 - 1 to 255).
_LUT = (np.arange(256, dtype=np.int64) - 1).astype(np.uint8)
_LUT[0] = IGNORE_INDEX


class ADE20K(SegmentationDataset):
    """ADEChallengeData2016. Splits: train (training), val (validation)."""

    classes = CLASSES
    palette = PALETTE  # type: ignore[assignment]
    layout = ("<root>/  (ADEChallengeData2016)\n"
              "  images/{training,validation}/*.jpg\n"
              "  annotations/{training,validation}/*.png   (0 = other, 1..150 = classes)")

    def __init__(self, root: str | Path | None, split: str = "train", skip_bad: bool = False) -> None:
        super().__init__(root, split, skip_bad)
        root = self.require_root()
        if split not in SPLIT_DIRS:
            raise UserError(f"unknown ADE20K split '{split}'; choose train or val")
        sub = SPLIT_DIRS[split]
        img_dir = self.require_dir(root / "images" / sub)
        lbl_dir = self.require_dir(root / "annotations" / sub)
        for img in sorted(img_dir.glob("*.jpg")):
            self.items.append((img, lbl_dir / f"{img.stem}.png", img.stem))
        self.require_items(img_dir, ".jpg images")

    def convert_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """0 -> 255, 1..150 -> 0..149; ids above 150 are a bad sample."""
        if raw.max(initial=0) > len(CLASSES):
            ids = sorted(int(v) for v in np.unique(raw[raw > len(CLASSES)]))[:10]
            raise BadSample(f"label {path} has ids {ids} outside ADE20K's 0..150 (0 = other); fix the file")
        return _LUT[raw]
