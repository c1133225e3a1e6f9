"""Pascal VOC 2012 segmentation (21 classes), optionally with the SBD augmented training set.

Labels are palette PNGs whose indices are the class ids; index 255 (the object borders) is ignore.
Split `train_aug` reads `ImageSets/Segmentation/train_aug.txt` and `SegmentationClassAug/` (the
10,582-image list made from SBD, as in DeepLab); `train`/`val` read the official lists.
"""

from __future__ import annotations

from pathlib import Path

from runtime.datasets.base import SegmentationDataset
from runtime.errors import UserError
from runtime.metadata import default_palette

CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
PALETTE = default_palette(len(CLASSES))  # the VOC colour map is the bit-interleaved one


class PascalVOC(SegmentationDataset):
    """VOC2012 (`VOCdevkit/VOC2012` as the root). Splits: train, val, trainval, train_aug."""

    classes = CLASSES
    palette = PALETTE
    layout = ("<root>/  (VOCdevkit/VOC2012)\n"
              "  JPEGImages/<name>.jpg\n"
              "  SegmentationClass/<name>.png        (palette PNGs, 255 = border)\n"
              "  ImageSets/Segmentation/{train,val}.txt\n"
              "  SegmentationClassAug/<name>.png     (split train_aug only, from SBD)\n"
              "  ImageSets/Segmentation/train_aug.txt")

    def __init__(self, root: str | Path | None, split: str = "train", skip_bad: bool = False) -> None:
        super().__init__(root, split, skip_bad)
        root = self.require_root()
        img_dir = self.require_dir(root / "JPEGImages")
        lbl_dir = self.require_dir(root / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass"))
        list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise UserError(f"split list {list_file} does not exist; VOC splits are train, val, trainval and "
                            f"train_aug (with SBD); expected layout:\n{self.layout}")
        names = [ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()]
        # train_aug lists sometimes hold "/JPEGImages/x.jpg /SegmentationClassAug/x.png" pairs: keep the stem.
        names = sorted({Path(n).stem for n in names})
        for n in names:
            self.items.append((img_dir / f"{n}.jpg", lbl_dir / f"{n}.png", n))
        self.require_items(list_file, "image names")
