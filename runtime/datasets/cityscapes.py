"""Cityscapes (gtFine): `*_gtFine_labelIds.png` converted to the 19 train ids.

The label table (id -> trainId, name, colour) is copied as data from cityscapesscripts'
`cityscapesscripts/helpers/labels.py` (https://github.com/mcordts/cityscapesScripts), so that
cityscapesscripts is not needed at run time. The labelIds files are the source of truth; the
`*_labelTrainIds.png` files that `createTrainIdLabelImgs` writes are not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.datasets.base import BadSample, SegmentationDataset
from runtime.metadata import IGNORE_INDEX

# (name, id, trainId, colour RGB), as in cityscapesscripts/helpers/labels.py ('license plate', id -1,
# is left out: it never appears in labelIds images).
LABELS: list[tuple[str, int, int, tuple[int, int, int]]] = [
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
]

CLASSES = [name for name, _, tid, _ in sorted((lab for lab in LABELS if lab[2] != 255), key=lambda x: x[2])]
PALETTE = [col for _, _, tid, col in sorted((lab for lab in LABELS if lab[2] != 255), key=lambda x: x[2])]


def id_to_train_id_lut() -> np.ndarray:
    """A 256-entry uint8 lookup table labelId -> trainId; ids not in the table map to 255 (ignore)."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for _, lid, tid, _ in LABELS:
        lut[lid] = tid
    return lut


_LUT = id_to_train_id_lut()


class Cityscapes(SegmentationDataset):
    """Cityscapes fine annotations, 19 classes. Splits: train, val, test (test labels are all ignore)."""

    classes = CLASSES
    palette = PALETTE
    layout = ("<root>/\n"
              "  leftImg8bit/<split>/<city>/<name>_leftImg8bit.png\n"
              "  gtFine/<split>/<city>/<name>_gtFine_labelIds.png")

    def __init__(self, root: str | Path | None, split: str = "train", skip_bad: bool = False) -> None:
        super().__init__(root, split, skip_bad)
        root = self.require_root()
        img_dir = self.require_dir(root / "leftImg8bit" / split)
        gt_dir = root / "gtFine" / split
        if split != "test":
            self.require_dir(gt_dir)
        for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            stem = img.name[: -len("_leftImg8bit.png")]
            lbl: Path | None = gt_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
            if split == "test" and not lbl.is_file():  # type: ignore[union-attr]
                lbl = None
            self.items.append((img, lbl, f"{img.parent.name}/{stem}"))
        self.require_items(img_dir, "<city>/*_leftImg8bit.png images")

    def convert_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """labelIds -> trainIds; ids that Cityscapes does not define (34..255) are a bad sample."""
        if raw.max(initial=0) >= len(LABELS):
            ids = sorted(int(v) for v in np.unique(raw[raw >= len(LABELS)]))[:10]
            raise BadSample(f"label {path} has ids {ids} that are not Cityscapes labelIds (0..{len(LABELS) - 1}); "
                            "is it a labelTrainIds or colour file? fix it")
        return _LUT[raw]
