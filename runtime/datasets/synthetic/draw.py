"""Drawing primitives of the synthetic scenes: classes and palette, noise banks, the projecting canvas that
paints image and label together, and the colour sampler."""

from __future__ import annotations

import cv2
import numpy as np

from runtime.datasets.cityscapes import LABELS

GENERATOR_VERSION = 2  # bump when the rendering changes, so caches of older samples are not reused

CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
           "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bicycle"]
_CS_COLOUR = {name: col for name, _, _, col in LABELS}
PALETTE = [_CS_COLOUR[n] for n in CLASSES]
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK,
 BICYCLE) = range(len(CLASSES))
# A split's code seeds its scenes. "footage" (unlabeled frames for distillation, runtime/datasets/footage.py)
# is a world of scenes of its own, disjoint from train, val and test; existing codes never change.
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "footage": 3}

# Per-class texture amplitudes (grey levels) for fine grain and coarse blotches.
FINE_AMP = np.full(256, 4.0, np.float32)
COARSE_AMP = np.full(256, 4.0, np.float32)
for _c, _fine, _coarse in [(ROAD, 7, 8), (SIDEWALK, 6, 6), (BUILDING, 4, 7), (WALL, 6, 9), (FENCE, 3, 3),
                           (POLE, 2, 2), (VEG, 12, 22), (TERRAIN, 11, 14), (SKY, 1.5, 6), (PERSON, 4, 5),
                           (CAR, 2, 3), (TRUCK, 3, 4)]:
    FINE_AMP[_c], COARSE_AMP[_c] = _fine, _coarse

Colour = tuple[int, int, int]

# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

_BANKS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
_PAD = 64


def noise_banks(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seeded) fine and coarse unit-variance noise fields, a little larger than the image; samples
    take random crops of them, which is far cheaper than drawing fresh noise for every pixel."""
    key = (h, w)
    if key not in _BANKS:
        rng = np.random.default_rng(20240607)
        fine = cv2.GaussianBlur(rng.standard_normal((h + _PAD, w + _PAD, 3)).astype(np.float32), (0, 0), 0.6)
        coarse = cv2.GaussianBlur(rng.standard_normal((h + _PAD, w + _PAD)).astype(np.float32), (0, 0), 3.0)
        _BANKS[key] = (np.asarray(fine / fine.std(), np.float32), np.asarray(coarse / coarse.std(), np.float32))
    return _BANKS[key]


def crop_bank(bank: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = (int(v) for v in rng.integers(0, _PAD, 2))
    return bank[y:y + h, x:x + w]


class Canvas:
    """An RGB image and its label map drawn together, plus the camera that projects world points.

    World: X right, Y up, Z forward (metres); the camera sits at (0, cam_h, 0) looking along +Z."""

    def __init__(self, h: int, w: int, f: float, cam_h: float, xv: float, yh: float) -> None:
        self.h, self.w, self.f, self.cam_h, self.xv, self.yh = h, w, f, cam_h, xv, yh
        self.img = np.zeros((h, w, 3), np.uint8)
        self.lab = np.zeros((h, w), np.uint8)
        self.shadow = np.zeros((h, w), np.uint8)  # darkening (0..255) applied to the ground layer
        self.lim = 50_000  # keeps fillPoly in int range without bending near-camera polygons

    def proj(self, pts: list[tuple[float, float, float]]) -> np.ndarray:
        """World (X, Y, Z) points -> int32 pixel polygon (Z clamped to 0.3 m in front of the camera).

        Plain Python: these lists are short and numpy's per-call overhead would dominate."""
        f, xv, yh, ch, lim = self.f, self.xv, self.yh, self.cam_h, self.lim
        out = []
        for x, y, z in pts:
            k = f / (z if z > 0.3 else 0.3)
            px, py = xv + k * x, yh + k * (ch - y)
            if not (-lim < px < lim and -lim < py < lim):
                px, py = min(max(px, -lim), lim), min(max(py, -lim), lim)
            out.append((int(px + 0.5) if px >= 0 else -int(0.5 - px), int(py + 0.5) if py >= 0 else -int(0.5 - py)))
        return np.array(out, np.int32)

    def proj_array(self, pts: np.ndarray) -> np.ndarray:
        """`proj` for an N x 3 array."""
        z = np.maximum(pts[:, 2], 0.3)
        x = self.xv + self.f * pts[:, 0] / z
        y = self.yh + self.f * (self.cam_h - pts[:, 1]) / z
        return np.clip(np.stack([x, y], 1), -self.lim, self.lim).round().astype(np.int32)

    def scale(self, z: float) -> float:
        """Pixels per metre at depth z."""
        return self.f / max(z, 0.3)

    def poly(self, pts: np.ndarray, colour: Colour, cls: int) -> None:
        cv2.fillPoly(self.img, [pts], colour)
        cv2.fillPoly(self.lab, [pts], cls)

    def wpoly(self, pts: list[tuple[float, float, float]], colour: Colour, cls: int) -> None:
        self.poly(self.proj(pts), colour, cls)

    def line(self, p0: tuple[int, int], p1: tuple[int, int], colour: Colour, cls: int, t: int) -> None:
        cv2.line(self.img, p0, p1, colour, t)
        cv2.line(self.lab, p0, p1, cls, t)

    def circle(self, c: tuple[int, int], r: int, colour: Colour, cls: int, t: int = -1) -> None:
        cv2.circle(self.img, c, r, colour, t)
        cv2.circle(self.lab, c, r, cls, t)

    def ellipse(self, c: tuple[int, int], axes: tuple[int, int], colour: Colour, cls: int) -> None:
        cv2.ellipse(self.img, c, axes, 0, 0, 360, colour, -1)
        cv2.ellipse(self.lab, c, axes, 0, 0, 360, cls, -1)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour, cls: int) -> None:
        p0 = (int(round(x0)), int(round(y0)))
        p1 = (int(round(x1)), int(round(y1)))
        cv2.rectangle(self.img, p0, p1, colour, -1)
        cv2.rectangle(self.lab, p0, p1, cls, -1)


class Palette:
    """Colour distributions per class. `spread` widens them (difficulty), and several classes draw from
    the same families (greys, beiges, greens) so that colour alone does not separate them."""

    def __init__(self, rng: np.random.Generator, spread: float) -> None:
        self.rng = rng
        self.s = spread
        self._normal = rng.standard_normal(3 * 1024).tolist()  # drawn once: per-call draws cost more
        self._k = 0

    def jitter(self, c: tuple[float, float, float], amount: float) -> Colour:
        k, a = self._k, amount * self.s
        n = self._normal[k:k + 3] if k + 3 <= len(self._normal) else self.rng.standard_normal(3).tolist()
        self._k = k + 3
        return tuple(min(255, max(0, int(v + a * e))) for v, e in zip(c, n))  # type: ignore[return-value]

    def grey(self, lo: float, hi: float, tint: float = 8) -> Colour:
        g = self.rng.uniform(lo, hi)
        return self.jitter((g, g, g), tint)

    def shade(self, c: Colour, k: float) -> Colour:
        return tuple(min(255, max(0, int(v * k))) for v in c)  # type: ignore[return-value]

    def building(self) -> Colour:
        kind = self.rng.integers(0, 5)
        if kind == 0:
            return self.grey(70, 200)
        if kind == 1:  # beige / sandstone
            return self.jitter((190, 170, 135), 20)
        if kind == 2:  # brick
            return self.jitter((150, 80, 60), 20)
        if kind == 3:  # white / pastel
            return self.jitter((215, 210, 200), 18)
        return self.jitter((120, 110, 100), 25)

    def wall(self) -> Colour:
        return self.grey(90, 190) if self.rng.random() < 0.6 else self.jitter((175, 160, 130), 22)

    def fence(self) -> Colour:
        kind = self.rng.integers(0, 3)
        if kind == 0:
            return self.grey(60, 170)
        if kind == 1:
            return self.jitter((120, 95, 70), 18)  # wood
        return self.jitter((60, 90, 65), 15)  # green metal

    def road(self) -> Colour:
        return self.jitter((self.rng.uniform(70, 125),) * 3, 6)  # type: ignore[arg-type]

    def sidewalk(self) -> Colour:
        if self.rng.random() < 0.6:
            return self.grey(100, 175)
        return self.jitter((165, 145, 130), 18)

    def terrain(self) -> Colour:
        kind = self.rng.integers(0, 3)
        if kind == 0:
            return self.jitter((105, 130, 65), 18)  # grass
        if kind == 1:
            return self.jitter((135, 120, 90), 18)  # dry earth
        return self.jitter((120, 125, 100), 18)

    def vegetation(self) -> Colour:
        return self.jitter((70, 100, 40), 18) if self.rng.random() < 0.7 else self.jitter((100, 115, 55), 20)

    def pole(self) -> Colour:
        return self.grey(50, 150) if self.rng.random() < 0.8 else self.jitter((50, 70, 55), 10)

    def sky(self) -> Colour:
        kind = self.rng.integers(0, 3)
        if kind == 0:
            return self.jitter((120, 165, 215), 15)
        if kind == 1:
            return self.grey(165, 225, 5)  # overcast
        return self.jitter((185, 200, 220), 12)

    def any(self) -> Colour:
        return tuple(int(v) for v in self.rng.integers(15, 240, 3))  # type: ignore[return-value]

    def vehicle(self) -> Colour:
        r = self.rng.random()
        if r < 0.45:
            return self.grey(25, 225, 4)
        return self.any()

    def clothes(self) -> Colour:
        return self.grey(20, 200) if self.rng.random() < 0.4 else self.any()

    def skin(self) -> Colour:
        return self.jitter((int(self.rng.uniform(90, 225)), int(self.rng.uniform(70, 185)), 120), 10)
