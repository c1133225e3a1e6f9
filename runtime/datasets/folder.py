"""A generic folder of images and index-PNG labels, and the writer of that layout.

Layout: `<root>/images/<split>/<name>.<ext>` with `<root>/labels/<split>/<name>.png` (matched by stem),
or `<root>/images/*` and `<root>/labels/*.png` without split folders (then every split reads them all).
Class names (and optionally colours) come from `<root>/classes.yaml`:

    names: [road, car, ...]
    palette: [[128, 64, 128], [0, 0, 142], ...]   # optional, RGB

or, without that file, from the Python argument `num_classes=K` (names "class0".."class{K-1}", VOC
colours; no command-line option or config key sets it, so commands need the file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

from runtime.datasets.base import SegmentationDataset
from runtime.errors import UserError
from runtime.io import atomic_write_bytes, atomic_write_text
from runtime.metadata import default_palette

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class FolderDataset(SegmentationDataset):
    """Images + index-PNG labels in plain folders; classes from classes.yaml or `num_classes`."""

    layout = ("<root>/\n"
              "  images/<split>/<name>.jpg|png   (or images/<name>.* without split folders)\n"
              "  labels/<split>/<name>.png       (single-channel ids 0..K-1, 255 = ignore)\n"
              "  classes.yaml                    (names: [...], optional palette: [[r,g,b], ...])")

    def __init__(self, root: str | Path | None, split: str = "train", skip_bad: bool = False,
                 num_classes: int | None = None) -> None:
        super().__init__(root, split, skip_bad)
        root = self.require_root()
        images = self.require_dir(root / "images")
        labels = self.require_dir(root / "labels")
        self.classes, self.palette = _read_classes(root, num_classes)
        if (images / split).is_dir():
            images, labels = images / split, self.require_dir(labels / split)
        elif any(p.is_dir() for p in images.iterdir()):
            splits = sorted(p.name for p in images.iterdir() if p.is_dir())
            raise UserError(f"split '{split}' not found in {images}; it has split folders {', '.join(splits)}")
        for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTS):
            self.items.append((img, labels / f"{img.stem}.png", img.stem))
        self.require_items(images, f"images ({', '.join(IMAGE_EXTS)})")


def _read_classes(root: Path, num_classes: int | None) -> tuple[list[str], list[tuple[int, int, int]]]:
    path = root / "classes.yaml"
    if not path.is_file():
        if num_classes is None:
            raise UserError(f"{path} does not exist: write it with 'names: [...]', one class name per label id "
                            "(0..K-1), e.g. names: [road, car, person]")
        return [f"class{i}" for i in range(num_classes)], default_palette(num_classes)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({e})") from e
    names = doc.get("names") if isinstance(doc, dict) else None
    if not isinstance(names, list) or not names or len(names) > 255:
        raise UserError(f"{path} needs 'names:', a list of 1..255 class names (one per id)")
    if num_classes is not None and num_classes != len(names):
        raise UserError(f"{path} lists {len(names)} classes but num_classes={num_classes}; make them agree")
    palette = doc.get("palette")
    if palette is None:
        return [str(n) for n in names], default_palette(len(names))
    ok = (isinstance(palette, list) and len(palette) == len(names)
          and all(isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
                  for c in palette))
    if not ok:
        raise UserError(f"{path}: 'palette' must list one [r, g, b] (0..255) per class ({len(names)} classes)")
    return [str(n) for n in names], [tuple(c) for c in palette]  # type: ignore[misc]


def write_classes_yaml(root: str | Path, classes: Sequence[str], palette: Sequence[Sequence[int]]) -> Path:
    """Write `<root>/classes.yaml` (atomically) for FolderDataset."""
    doc = {"names": list(classes), "palette": [[int(v) for v in c] for c in palette]}
    return atomic_write_text(Path(root) / "classes.yaml", yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))


def write_sample(root: str | Path, split: str, name: str, image: np.ndarray, label: np.ndarray) -> None:
    """Write one RGB image and its uint8 label as `images/<split>/<name>.png`, `labels/<split>/<name>.png`.

    The label is written first, so a folder whose image exists always has its label (readers list images)."""
    root = Path(root)
    for sub, arr in (("labels", label), ("images", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))):
        ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise UserError(f"could not encode {name} as PNG")
        atomic_write_bytes(root / sub / split / f"{name}.png", buf.tobytes())
