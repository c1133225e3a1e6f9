"""Helpers for the dataset-reader tests: write tiny images and labels in each dataset's real layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

H, W = 16, 32


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """A random RGB image written losslessly (PNG) or as JPEG; returns the RGB array written."""
    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def write_label(path: Path, label: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), label.astype(np.uint8))
    return label


def label_with(ids: list[int], size: tuple[int, int] = (H, W)) -> np.ndarray:
    """A label whose columns cycle through `ids` (every id is present)."""
    cols = np.array(ids, np.uint8)[np.arange(size[1]) % len(ids)]
    return np.broadcast_to(cols, size).copy()


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a PNG file")
    return path


@pytest.fixture
def files() -> Callable[..., object]:
    """Namespace of the writers above, for tests in this folder."""

    class F:
        image = staticmethod(write_image)
        label = staticmethod(write_label)
        ids = staticmethod(label_with)
        corrupt = staticmethod(corrupt)

    return F  # type: ignore[return-value]
