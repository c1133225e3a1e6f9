"""Built-in synthetic street scenes: the default dataset, so that everything runs with no download.

Each sample is a street seen from a car: a pinhole camera at height ~1.5 m looks down a straight street,
so the road, sidewalks and facades converge to a vanishing point and everything is scaled by depth. It is
rendered with OpenCV polygons into an RGB image and its label map at the same time (painter's order, far
to near, so occlusion is exact), then lit, textured, blurred and given sensor noise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from runtime.datasets.base import IGNORE_INDEX, BadSample, Sample, SegmentationDataset, read_image, read_label
from runtime.datasets.cityscapes import LABELS
from runtime.datasets.folder import write_classes_yaml, write_sample
from runtime.errors import UserError
from runtime.io import atomic_write_json
from runtime.metadata import DataInfo

GENERATOR_VERSION = 2  # bump when the rendering changes, so caches of older samples are not reused

CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
           "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bicycle"]
_CS_COLOUR = {name: col for name, _, _, col in LABELS}
PALETTE = [_CS_COLOUR[n] for n in CLASSES]
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK,
 BICYCLE) = range(len(CLASSES))
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Per-class texture amplitudes (grey levels) for fine grain and coarse blotches.
_FINE_AMP = np.full(256, 4.0, np.float32)
_COARSE_AMP = np.full(256, 4.0, np.float32)
for _c, _fine, _coarse in [(ROAD, 7, 8), (SIDEWALK, 6, 6), (BUILDING, 4, 7), (WALL, 6, 9), (FENCE, 3, 3),
                           (POLE, 2, 2), (VEG, 12, 22), (TERRAIN, 11, 14), (SKY, 1.5, 6), (PERSON, 4, 5),
                           (CAR, 2, 3), (TRUCK, 3, 4)]:
    _FINE_AMP[_c], _COARSE_AMP[_c] = _fine, _coarse

Colour = tuple[int, int, int]


class SyntheticStreets(SegmentationDataset):
    """Procedural street scenes with 16 Cityscapes classes and Cityscapes colours.

    Classes (train ids): 0 road, 1 sidewalk, 2 building, 3 wall, 4 fence, 5 pole, 6 traffic light,
    7 traffic sign, 8 vegetation, 9 terrain, 10 sky, 11 person, 12 rider, 13 car, 14 truck, 15 bicycle;
    255 = ignore (the ego vehicle's bonnet at the bottom of some frames).

    The scenes need context and shape, not only colour: road, sidewalk and terrain share greys; building,
    wall, fence, pole and truck share greys and beiges; far buildings fade towards the sky colour; people,
    cars and riders wear random colours; a rider differs from a person only by sitting on a bicycle.
    There are thin and small objects (poles, signs, traffic lights, distant people and bicycles),
    occlusion, per-class texture, windows, lane markings, shadows, global lighting and colour casts,
    blur and sensor noise.

    Knobs:
      num_train, num_val: samples in the train and val splits (split "test" has num_val samples too).
      size: (H, W) rendered size.
      seed: sample i of split s comes from its own generator seeded by (seed, s, i): any index can be
        made alone, in any order, in any worker, and is always the same.
      difficulty: scales clutter and object counts, thin/small objects, colour overlap, noise and blur
        (0.5 easy, 1.0 default, 1.5 hard).
      cache: keep rendered samples as PNGs in `cache_dir` (default
        `data/cache/synthetic-<hash of seed, size, difficulty, version>/` under the working directory,
        or under $LFD_EDGE_CACHE), in the folder-dataset layout, and reuse them.
    """

    classes = CLASSES
    palette = PALETTE
    layout = "(none: generated; optional cache in the folder layout images/<split>/, labels/<split>/)"

    def __init__(self, root: str | Path | None = None, split: str = "train", skip_bad: bool = False,
                 num_train: int = 400, num_val: int = 60, size: tuple[int, int] = (256, 512), seed: int = 0,
                 difficulty: float = 1.0, cache: bool = True, cache_dir: str | Path | None = None) -> None:
        super().__init__(root, split, skip_bad)
        if split not in SPLIT_CODES:
            raise UserError(f"unknown synthetic split '{split}'; choose one of {', '.join(SPLIT_CODES)}")
        h, w = (int(v) for v in size)
        if h < 16 or w < 16:
            raise UserError(f"synthetic size {size} is too small; use at least 16 x 16")
        if not 0.0 <= difficulty <= 3.0:
            raise UserError(f"synthetic difficulty {difficulty} is outside 0..3")
        self.size = (h, w)
        self.seed = int(seed)
        self.difficulty = float(difficulty)
        self.length = int(num_train if split == "train" else num_val)
        self.cache_dir: Path | None = None
        if cache:
            # `root`, when given, is taken as the cache folder (so `synthetic:/path` exports there).
            base = cache_dir or root or default_cache_dir(self.size, self.seed, self.difficulty)
            self.cache_dir = Path(base)
            self._check_cache_params(self.cache_dir / "params.json")

    def __len__(self) -> int:
        return self.length

    def params(self) -> dict[str, object]:
        return {"generator_version": GENERATOR_VERSION, "size": list(self.size), "seed": self.seed,
                "difficulty": self.difficulty}

    def name(self, i: int) -> str:
        return f"{self.split}_{i:05d}"

    def load(self, i: int) -> Sample:
        name = self.name(i)
        if self.cache_dir is None:
            image, label = render_scene(self.size, self.seed, self.split, i, self.difficulty)
            return image, label, name
        img_path = self.cache_dir / "images" / self.split / f"{name}.png"
        lbl_path = self.cache_dir / "labels" / self.split / f"{name}.png"
        if img_path.is_file() and lbl_path.is_file():
            try:
                image, label = read_image(img_path), read_label(lbl_path)
                if image.shape[:2] == self.size and label.shape == self.size:
                    return image, label, name
            except BadSample:
                pass  # a damaged cache entry is rendered again below
        image, label = render_scene(self.size, self.seed, self.split, i, self.difficulty)
        self._write_cache(name, image, label)
        return image, label, name

    def _check_cache_params(self, path: Path) -> None:
        """A cache folder holds samples of one parameter set; refuse to mix in samples of another."""
        if not path.is_file():
            return
        try:
            cached = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return  # unreadable: it is rewritten with the first sample
        if cached != self.params():
            raise UserError(f"the synthetic cache {path.parent} was made with {cached}, not {self.params()}; "
                            "choose another cache_dir or delete that folder")

    def _write_cache(self, name: str, image: np.ndarray, label: np.ndarray) -> None:
        if self.cache_dir is None:
            return
        if not (self.cache_dir / "classes.yaml").is_file():
            write_classes_yaml(self.cache_dir, self.classes, self.palette)
            atomic_write_json(self.cache_dir / "params.json", self.params())
        write_sample(self.cache_dir, self.split, name, image, label)

    def data_info(self, input_size: tuple[int, int] | None = None) -> DataInfo:  # type: ignore[override]
        return super().data_info(input_size or self.size)


def default_cache_dir(size: tuple[int, int], seed: int, difficulty: float) -> Path:
    """`$LFD_EDGE_CACHE` or `./data/cache`, then `synthetic-<12 hex of the parameters' hash>`."""
    key = json.dumps({"v": GENERATOR_VERSION, "size": list(size), "seed": seed, "difficulty": difficulty},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(os.environ.get("LFD_EDGE_CACHE", "data/cache")) / f"synthetic-{digest}"


def write_folder_dataset(out_dir: str | Path, num_train: int = 400, num_val: int = 60,
                         size: tuple[int, int] = (256, 512), seed: int = 0, difficulty: float = 1.0) -> Path:
    """Render the train and val splits into `out_dir` in the folder layout (`folder:<out_dir>` reads it)."""
    out = Path(out_dir)
    for split, n in (("train", num_train), ("val", num_val)):
        ds = SyntheticStreets(None, split, num_train=num_train, num_val=num_val, size=size, seed=seed,
                              difficulty=difficulty, cache=False)
        for i in range(n):
            image, label, name = ds[i]
            write_sample(out, split, name, image, label)
    write_classes_yaml(out, CLASSES, PALETTE)
    atomic_write_json(out / "params.json", ds.params())
    return out


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

_BANKS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
_PAD = 64


def _noise_banks(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seeded) fine and coarse unit-variance noise fields, a little larger than the image; samples
    take random crops of them, which is far cheaper than drawing fresh noise for every pixel."""
    key = (h, w)
    if key not in _BANKS:
        rng = np.random.default_rng(20240607)
        fine = cv2.GaussianBlur(rng.standard_normal((h + _PAD, w + _PAD, 3)).astype(np.float32), (0, 0), 0.6)
        coarse = cv2.GaussianBlur(rng.standard_normal((h + _PAD, w + _PAD)).astype(np.float32), (0, 0), 3.0)
        _BANKS[key] = (np.asarray(fine / fine.std(), np.float32), np.asarray(coarse / coarse.std(), np.float32))
    return _BANKS[key]


def _crop(bank: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = (int(v) for v in rng.integers(0, _PAD, 2))
    return bank[y:y + h, x:x + w]


class _Canvas:
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


class _Palette:
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


def render_scene(size: tuple[int, int], seed: int, split: str, index: int,
                 difficulty: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Render sample `index` of `split`: (uint8 H x W x 3 RGB image, uint8 H x W label)."""
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index), GENERATOR_VERSION])
    h, w = size
    d = difficulty
    cv = _Canvas(h, w, f=w * rng.uniform(0.55, 0.85), cam_h=rng.uniform(1.3, 1.7),
                 xv=w * (0.5 + rng.uniform(-0.15, 0.15)), yh=h * rng.uniform(0.36, 0.5))
    pal = _Palette(rng, spread=0.6 + 0.5 * d)
    sky = pal.sky()

    _draw_sky(cv, pal, rng, sky)
    street = _draw_ground(cv, pal, rng, d)
    _draw_skyline(cv, pal, rng, sky, street)
    for side in (-1, 1):
        _draw_facades(cv, pal, rng, d, side, street, sky)
    _apply_shadow(cv, rng, d, street)
    objects: list[tuple[float, Callable[[], None]]] = []
    for side in (-1, 1):
        objects += _roadside(cv, pal, rng, d, side, street)
    objects += _traffic(cv, pal, rng, d, street)
    objects += _pedestrians(cv, pal, rng, d, street)
    for _, draw in sorted(objects, key=lambda o: -o[0]):  # painter's order: far first
        draw()
    if rng.random() < 0.3:
        _draw_hood(cv, pal, rng)
    return _finish(cv, rng, d, sky), cv.lab


# -- background ----------------------------------------------------------------------------------

def _draw_sky(cv: _Canvas, pal: _Palette, rng: np.random.Generator, sky: Colour) -> None:
    top = pal.shade(sky, rng.uniform(0.7, 0.95))
    yh = int(cv.yh) + 2
    ramp = np.linspace(0, 1, yh, dtype=np.float32)[:, None, None]
    cv.img[:yh] = (np.asarray(top, np.float32) * (1 - ramp) + np.asarray(sky, np.float32) * ramp).astype(np.uint8)
    cv.lab[:yh] = SKY
    for _ in range(int(rng.integers(0, 6))):  # clouds (sky)
        c = (int(rng.uniform(0, cv.w)), int(rng.uniform(0, cv.yh * 0.8)))
        ax = (int(rng.uniform(0.05, 0.2) * cv.w), int(rng.uniform(0.02, 0.08) * cv.h))
        cv.ellipse(c, ax, pal.jitter((225, 228, 232), 12), SKY)


def _draw_ground(cv: _Canvas, pal: _Palette, rng: np.random.Generator, d: float) -> dict[str, float]:
    """Road, sidewalks, verges and markings. Returns the street's lateral layout (metres)."""
    zfar = 400.0
    x0 = rng.uniform(-2.0, 2.0)
    rw = rng.uniform(3.0, 7.0)
    s: dict[str, float] = {"zfar": zfar, "road_l": x0 - rw, "road_r": x0 + rw}
    terr = pal.terrain()
    cv.img[int(cv.yh):] = terr
    cv.lab[int(cv.yh):] = TERRAIN
    road = pal.road()
    sidewalk = pal.sidewalk() if rng.random() < 0.8 else pal.shade(road, rng.uniform(1.0, 1.3))
    for side in (-1, 1):
        edge = s["road_r"] if side > 0 else s["road_l"]
        verge_in = rng.uniform(0.6, 2.0) if rng.random() < 0.25 else 0.0
        sw = rng.uniform(1.5, 4.5) if rng.random() < 0.9 else 0.0
        verge_out = rng.uniform(0.5, 4.0) if rng.random() < 0.35 else 0.0
        a = edge + side * verge_in
        b = a + side * sw
        facade = b + side * verge_out
        key = "r" if side > 0 else "l"
        s[f"sw_in_{key}"], s[f"sw_out_{key}"], s[f"facade_{key}"] = a, b, facade
        if sw > 0:
            cv.wpoly([(a, 0, 0.5), (b, 0, 0.5), (b, 0, zfar), (a, 0, zfar)], sidewalk, SIDEWALK)
            # paving joints across the sidewalk
            joint = pal.shade(sidewalk, 0.8)
            for z in np.arange(rng.uniform(1, 3), 20, rng.uniform(1.0, 2.5)):
                p = cv.proj([(a, 0, z), (b, 0, z)])
                if p[0, 1] - cv.yh < 6:
                    break
                cv.line(tuple(p[0]), tuple(p[1]), joint, SIDEWALK, 1)
            # the kerb: a lighter band on the road side
            kerb = pal.shade(sidewalk, 1.15)
            cv.wpoly([(a, 0, 0.5), (a + side * 0.18, 0, 0.5), (a + side * 0.18, 0, zfar), (a, 0, zfar)], kerb,
                     SIDEWALK)
    cv.wpoly([(s["road_l"], 0, 0.5), (s["road_r"], 0, 0.5), (s["road_r"], 0, zfar), (s["road_l"], 0, zfar)],
             road, ROAD)
    # patches and markings (still road)
    for _ in range(int(rng.poisson(2 * d))):
        z0 = rng.uniform(3, 40)
        xa = rng.uniform(s["road_l"], s["road_r"] - 1)
        cv.wpoly([(xa, 0, z0), (xa + rng.uniform(0.5, 3), 0, z0), (xa + rng.uniform(0.5, 3), 0, z0 + rng.uniform(1, 8)),
                  (xa, 0, z0 + rng.uniform(1, 8))], pal.shade(road, rng.uniform(0.7, 1.25)), ROAD)
    paint = pal.jitter((215, 215, 205), 10) if rng.random() < 0.8 else pal.jitter((210, 180, 60), 10)
    xc = (s["road_l"] + s["road_r"]) / 2 + rng.uniform(-0.5, 0.5)
    dash, gap = rng.uniform(2, 4), rng.uniform(3, 8)
    z = rng.uniform(0.5, 3)
    while z < 70:
        cv.wpoly([(xc - 0.07, 0, z), (xc + 0.07, 0, z), (xc + 0.07, 0, z + dash), (xc - 0.07, 0, z + dash)], paint, ROAD)
        z += dash + gap
    for xe in (s["road_l"] + 0.3, s["road_r"] - 0.3):
        if rng.random() < 0.6:
            cv.wpoly([(xe - 0.06, 0, 0.5), (xe + 0.06, 0, 0.5), (xe + 0.06, 0, zfar), (xe - 0.06, 0, zfar)], paint, ROAD)
    if rng.random() < 0.3:  # zebra crossing
        zc = rng.uniform(6, 25)
        x = s["road_l"] + 0.3
        while x < s["road_r"] - 0.5:
            cv.wpoly([(x, 0, zc), (x + 0.5, 0, zc), (x + 0.5, 0, zc + 3), (x, 0, zc + 3)], paint, ROAD)
            x += 1.0
    return s


def _draw_skyline(cv: _Canvas, pal: _Palette, rng: np.random.Generator, sky: Colour, s: dict[str, float]) -> None:
    """Distant buildings and tree lines at the end of the street, hazed towards the sky colour."""
    z = rng.uniform(120, 250)
    x = s["facade_l"] - 30
    while x < s["facade_r"] + 30:
        wdt = rng.uniform(5, 25)
        r = rng.random()
        haze = rng.uniform(0.3, 0.7)
        if r < 0.6:
            c = _mix(pal.building(), sky, haze)
            cv.wpoly([(x, 0, z), (x + wdt, 0, z), (x + wdt, rng.uniform(8, 40), z), (x, rng.uniform(8, 40), z)],
                     c, BUILDING)
        elif r < 0.85:
            c = _mix(pal.vegetation(), sky, haze)
            p = cv.proj([(x + wdt / 2, rng.uniform(4, 10), z)])[0]
            cv.ellipse((int(p[0]), int(p[1])), (max(1, int(cv.scale(z) * wdt / 2)), max(1, int(cv.scale(z) * 5))),
                       c, VEG)
        x += wdt


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return tuple(int(x * (1 - t) + y * t) for x, y in zip(a, b))  # type: ignore[return-value]


def _draw_facades(cv: _Canvas, pal: _Palette, rng: np.random.Generator, d: float, side: int,
                  s: dict[str, float], sky: Colour) -> None:
    """Buildings along one side, far to near, with windows; gaps show trees or open ground."""
    key = "r" if side > 0 else "l"
    xf = s[f"facade_{key}"]
    segs = []
    z = rng.uniform(-6, 2)
    while z < 140:
        length = rng.uniform(8, 35)
        segs.append((z, z + length))
        z += length + (rng.uniform(3, 15) if rng.random() < 0.2 else 0)
    street_kind = rng.random()  # < 0.15: an open side (trees and fields, no buildings)
    for za, zb in reversed(segs):
        haze = min(0.6, max(0.0, (za - 40) / 200))
        if street_kind < 0.15 or rng.random() < 0.1:
            _tree_row(cv, pal, rng, xf + side * rng.uniform(1, 6), za, zb, sky, haze)
            continue
        height = rng.uniform(5, 28)
        depth = rng.uniform(8, 20)
        col = _mix(pal.building(), sky, haze)
        # the front face (towards the camera) of the block, then its street facade
        cv.wpoly([(xf, 0, za), (xf + side * depth, 0, za), (xf + side * depth, height, za), (xf, height, za)],
                 pal.shade(col, rng.uniform(0.75, 0.95)), BUILDING)
        cv.wpoly([(xf, 0, za), (xf, 0, zb), (xf, height, zb), (xf, height, za)], col, BUILDING)
        _windows(cv, pal, rng, xf, za, zb, height, col)
        if rng.random() < 0.3:  # shop front / ground floor band
            cv.wpoly([(xf, 0, za), (xf, 0, zb), (xf, 3.2, zb), (xf, 3.2, za)], pal.building(), BUILDING)


def _windows(cv: _Canvas, pal: _Palette, rng: np.random.Generator, xf: float, za: float, zb: float,
             height: float, col: Colour) -> None:
    floor_h = rng.uniform(2.8, 3.6)
    pitch = rng.uniform(2.2, 4.0)
    win_w, win_h = pitch * rng.uniform(0.35, 0.65), floor_h * rng.uniform(0.35, 0.6)
    glass = pal.shade(col, rng.uniform(0.3, 0.6)) if rng.random() < 0.7 else pal.sky()
    frame_on = rng.random() < 0.4
    za0 = max(za, 1.0)
    if cv.scale(za0 + 1) * win_h < 2.0:
        return
    ys = np.arange(floor_h * 0.5 + 0.5, height - win_h - 0.3, floor_h)
    zs = np.arange(za0 + pitch * 0.3, zb - win_w, pitch)
    if len(ys) == 0 or len(zs) == 0:
        return
    zs = zs[cv.f / np.maximum(zs, 0.3) * win_h >= 3.0][:24]  # drop windows too small to see
    if len(zs) == 0:
        return
    # corners on the facade plane X = xf: x depends on z only, y on (height, z)
    n_r, n_c = len(ys), len(zs)
    xa = np.broadcast_to(cv.xv + cv.f * xf / zs, (n_r, n_c))
    xb = np.broadcast_to(cv.xv + cv.f * xf / (zs + win_w), (n_r, n_c))
    yb = (cv.cam_h - ys)[:, None]
    yt = (cv.cam_h - ys - win_h)[:, None]
    y0a, y0b = cv.yh + cv.f * yb / zs, cv.yh + cv.f * yb / (zs + win_w)
    y1a, y1b = cv.yh + cv.f * yt / zs, cv.yh + cv.f * yt / (zs + win_w)
    pts = np.stack([xa, y0a, xb, y0b, xb, y1b, xa, y1a], -1).reshape(-1, 4, 2)
    pts = np.clip(pts, -cv.lim, cv.lim).astype(np.int32)
    cv2.fillPoly(cv.img, pts, glass)
    lit = pts[rng.random(len(pts)) < 0.12]
    if len(lit):
        cv2.fillPoly(cv.img, lit, pal.jitter((200, 190, 140), 20))
    if frame_on:
        cv2.polylines(cv.img, pts, True, pal.shade(col, 1.2), 1)


def _tree_row(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, za: float, zb: float,
              sky: Colour, haze: float) -> None:
    for z in np.arange(zb, za, -rng.uniform(6, 12)):
        _tree(cv, pal, rng, x + rng.uniform(-1, 1), max(z, 2.0), _mix(pal.vegetation(), sky, haze))


def _apply_shadow(cv: _Canvas, rng: np.random.Generator, d: float, s: dict[str, float]) -> None:
    """Cast shadows of the buildings across the ground (drawn into `cv.shadow`, applied now)."""
    if rng.random() < 0.5:
        side = 1 if rng.random() < 0.5 else -1
        key = "r" if side > 0 else "l"
        reach = rng.uniform(0.2, 1.0) * (s["road_r"] - s["road_l"])
        xf = s[f"facade_{key}"]
        z0 = rng.uniform(-5, 30)
        z1 = z0 + rng.uniform(10, 150)
        pts = cv.proj([(xf, 0, z0), (xf - side * reach, 0, z0), (xf - side * reach, 0, z1), (xf, 0, z1)])
        cv2.fillPoly(cv.shadow, [pts], int(rng.uniform(60, 140)))
    if cv.shadow.any():
        k = 1.0 - cv.shadow.astype(np.float32) / 255.0
        cv.img[:] = (cv.img * k[..., None]).astype(np.uint8)
        cv.shadow[:] = 0


# -- roadside furniture --------------------------------------------------------------------------

def _roadside(cv: _Canvas, pal: _Palette, rng: np.random.Generator, d: float, side: int,
              s: dict[str, float]) -> list[tuple[float, Callable[[], None]]]:
    key = "r" if side > 0 else "l"
    out: list[tuple[float, Callable[[], None]]] = []
    kerb = s[f"sw_in_{key}"] + side * 0.4
    outer = s[f"sw_out_{key}"]
    # walls, fences and hedges along the outer edge of the sidewalk
    z = rng.uniform(0, 10)
    while z < 90:
        length = rng.uniform(5, 30)
        r = rng.random()
        x = outer + side * 0.1
        if r < 0.22 * d:
            ht, col = rng.uniform(0.5, 2.6), pal.wall()
            out.append((z + length, _bind(_wall, cv, pal, x, z, z + length, ht, col)))
        elif r < 0.44 * d:
            ht, col = rng.uniform(0.8, 2.2), pal.fence()
            out.append((z + length, _bind(_fence, cv, rng, x, z, z + length, ht, col)))
        elif r < 0.55 * d:
            ht, col = rng.uniform(0.6, 1.6), pal.vegetation()
            out.append((z + length, _bind(_hedge, cv, pal, x, z, z + length, ht, col)))
        z += length + rng.uniform(0, 15)
    # poles with lamps, signs and traffic lights; trees
    z = rng.uniform(2, 12)
    while z < 110:
        r = rng.random()
        if r < 0.55:
            out.append((z, _bind(_pole, cv, pal, rng, kerb, z, side)))
        elif r < 0.85:
            col = pal.vegetation()
            out.append((z, _bind(_tree, cv, pal, rng, kerb + side * rng.uniform(0, 1), z, col)))
        else:
            out.append((z, _bind(_sign_post, cv, pal, rng, kerb, z)))
        z += rng.uniform(6, 22) / max(d, 0.3)
    return out


def _bind(fn: Callable[..., None], *args: object) -> Callable[[], None]:
    return lambda: fn(*args)


def _wall(cv: _Canvas, pal: _Palette, x: float, za: float, zb: float, ht: float, col: Colour) -> None:
    cv.wpoly([(x, 0, za), (x, 0, zb), (x, ht, zb), (x, ht, za)], col, WALL)
    cv.wpoly([(x, ht, za), (x, ht, zb), (x, ht + 0.12, zb), (x, ht + 0.12, za)], pal.shade(col, 1.15), WALL)


def _fence(cv: _Canvas, rng: np.random.Generator, x: float, za: float, zb: float, ht: float, col: Colour) -> None:
    """Posts and rails (thin structures with background showing through), or a solid panel fence."""
    if rng.random() < 0.3:
        cv.wpoly([(x, 0, za), (x, 0, zb), (x, ht, zb), (x, ht, za)], col, FENCE)
        for z in np.arange(za, zb, 0.4):
            p = cv.proj([(x, 0, z), (x, ht, z)])
            cv2.line(cv.img, tuple(p[0]), tuple(p[1]), tuple(int(v * 0.75) for v in col), 1)
        return
    step = rng.uniform(0.2, 2.5)
    zs = np.arange(max(za, 1.0), zb, step)
    dense = zs[cv.f * step / zs ** 2 < 2.5]  # posts closer than 2.5 px: draw the far part as one panel
    if len(dense):
        cv.wpoly([(x, 0, dense[0]), (x, 0, zb), (x, ht, zb), (x, ht, dense[0])], col, FENCE)
        zs = zs[: len(zs) - len(dense)]
    for z in zs:
        p = cv.proj([(x, 0, z), (x, ht, z)])
        t = max(1, int(cv.scale(z) * (0.05 if step < 0.5 else 0.1)))
        cv.line(tuple(p[0]), tuple(p[1]), col, FENCE, t)
    for y in (ht, ht * 0.5) if rng.random() < 0.7 else (ht,):
        p = cv.proj([(x, y, za), (x, y, zb)])
        cv.line(tuple(p[0]), tuple(p[1]), col, FENCE, max(1, int(cv.scale(max(za, 1)) * 0.06)))


def _hedge(cv: _Canvas, pal: _Palette, x: float, za: float, zb: float, ht: float, col: Colour) -> None:
    cv.wpoly([(x, 0, za), (x, 0, zb), (x, ht, zb), (x, ht, za)], col, VEG)
    _speckle(cv, pal, cv.proj([(x, 0, za), (x, 0, zb), (x, ht, zb), (x, ht, za)]), col, VEG, 25)


def _speckle(cv: _Canvas, pal: _Palette, pts: np.ndarray, col: Colour, cls: int, n: int) -> None:
    """Leaf-like blobs of lighter/darker shades inside a polygon's bounding box, where the label is `cls`."""
    x0, y0 = (int(v) for v in pts.min(0))
    x1, y1 = (int(v) for v in pts.max(0))
    if x1 - x0 < 6 or y1 - y0 < 6:
        return
    rng = pal.rng
    n = min(n, (x1 - x0) * (y1 - y0) // 40)
    xs = rng.integers(x0, x1, n)
    ys = rng.integers(y0, y1, n)
    rmax = max(1, min(x1 - x0, y1 - y0) // 6)
    rs = rng.integers(1, rmax + 1, n)
    shades = [pal.shade(col, k) for k in (0.6, 0.8, 1.15, 1.35)]
    pick = rng.integers(0, 4, n)
    inside = (xs >= 0) & (xs < cv.w) & (ys >= 0) & (ys < cv.h)
    for x, y, r, k in zip(xs[inside], ys[inside], rs[inside], pick[inside]):
        if cv.lab[y, x] == cls:
            cv2.circle(cv.img, (int(x), int(y)), int(r), shades[k], -1)


def _tree(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float, col: Colour) -> None:
    trunk_h = rng.uniform(1.8, 3.5)
    crown = rng.uniform(1.2, 3.2)
    p = cv.proj([(x, 0, z), (x, trunk_h + crown * 0.5, z)])
    sc = cv.scale(z)
    cx, cy = int(p[1][0]), int(p[1][1])
    r = max(1, int(sc * crown))
    cv.line((int(p[0][0]), int(p[0][1])), (cx, cy), pal.jitter((85, 70, 55), 15), VEG, max(1, int(sc * 0.3)))
    if r < 4:
        cv.circle((cx, cy), r, col, VEG)
        return
    offsets = rng.uniform(-0.7, 0.7, (int(rng.integers(3, 6)), 3))
    for ox, oy, k in offsets:
        cv.circle((int(cx + ox * r), int(cy + oy * 0.8 * r)), max(1, int(r * (0.7 + 0.2 * k))),
                  pal.shade(col, 1.0 + 0.25 * k), VEG)
    if r >= 8:
        _speckle(cv, pal, np.array([[cx - r, cy - r], [cx + r, cy + r]]), col, VEG, 10)


def _pole(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float, side: int) -> None:
    ht = rng.uniform(3.5, 9.0)
    col = pal.pole()
    sc = cv.scale(z)
    p = cv.proj([(x, 0, z), (x, ht, z)])
    cv.line(tuple(p[0]), tuple(p[1]), col, POLE, max(1, int(round(sc * rng.uniform(0.1, 0.25)))))
    if ht > 6 and rng.random() < 0.6:  # street lamp arm over the road
        q = cv.proj([(x, ht, z), (x - side * rng.uniform(1, 2.5), ht + 0.2, z)])
        cv.line(tuple(q[0]), tuple(q[1]), col, POLE, max(1, int(sc * 0.1)))
        cv.ellipse((int(q[1][0]), int(q[1][1])), (max(1, int(sc * 0.3)), max(1, int(sc * 0.1))), col, POLE)
    r = rng.random()
    if r < 0.45:
        _sign(cv, pal, rng, x, rng.uniform(2.0, min(ht, 3.5)), z)
    elif r < 0.75:
        _traffic_light(cv, pal, rng, x, rng.uniform(2.5, min(ht, 4.5) + 0.01), z)


def _sign_post(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float) -> None:
    ht = rng.uniform(2.0, 3.0)
    p = cv.proj([(x, 0, z), (x, ht, z)])
    cv.line(tuple(p[0]), tuple(p[1]), pal.pole(), POLE, max(1, int(cv.scale(z) * 0.07)))
    _sign(cv, pal, rng, x, ht, z)
    if rng.random() < 0.4:
        _sign(cv, pal, rng, x, ht - 0.8, z)


def _sign(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, y: float, z: float) -> None:
    sc = cv.scale(z)
    c = cv.proj([(x, y, z)])[0]
    r = max(1, int(sc * rng.uniform(0.25, 0.45)))
    face = [(200, 30, 30), (30, 70, 170), (230, 200, 40), (235, 235, 235), (40, 130, 70)][int(rng.integers(0, 5))]
    face = pal.jitter(face, 12)
    border = pal.jitter((235, 235, 235), 8) if rng.random() < 0.6 else pal.jitter((180, 30, 30), 10)
    kind = rng.integers(0, 4)
    cx, cy = int(c[0]), int(c[1])
    if kind == 0:
        cv.circle((cx, cy), r, border, SIGN)
        cv.circle((cx, cy), max(1, int(r * 0.75)), face, SIGN)
    elif kind == 1:
        tri = np.array([[cx, cy - r], [cx + r, cy + int(r * 0.8)], [cx - r, cy + int(r * 0.8)]], np.int32)
        cv.poly(tri, border, SIGN)
        cv2.fillPoly(cv.img, [((tri - [cx, cy]) * 0.6 + [cx, cy]).astype(np.int32)], face)
    else:
        ww = r if kind == 2 else int(r * rng.uniform(1.5, 2.5))
        cv.rect(cx - ww, cy - r, cx + ww, cy + r, border, SIGN)
        cv2.rectangle(cv.img, (cx - int(ww * 0.8), cy - int(r * 0.8)), (cx + int(ww * 0.8), cy + int(r * 0.8)), face, -1)


def _traffic_light(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, y: float, z: float) -> None:
    sc = cv.scale(z)
    c = cv.proj([(x, y, z)])[0]
    hw, hh = max(1, int(sc * 0.17)), max(1, int(sc * 0.45))
    body = pal.grey(15, 60) if rng.random() < 0.8 else pal.jitter((180, 160, 40), 15)
    cv.rect(c[0] - hw, c[1] - hh, c[0] + hw, c[1] + hh, body, LIGHT)
    on = int(rng.integers(0, 3))
    for k, lamp in enumerate([(230, 40, 30), (240, 180, 30), (60, 220, 90)]):
        cy = int(c[1] - hh + (2 * k + 1) * hh / 3)
        col = lamp if k == on else pal.shade(lamp, 0.3)
        cv2.circle(cv.img, (int(c[0]), cy), max(1, int(hw * 0.7)), col, -1)


# -- traffic and people --------------------------------------------------------------------------

def _traffic(cv: _Canvas, pal: _Palette, rng: np.random.Generator, d: float,
             s: dict[str, float]) -> list[tuple[float, Callable[[], None]]]:
    out: list[tuple[float, Callable[[], None]]] = []
    rl, rr = s["road_l"], s["road_r"]
    n = int(rng.poisson(3.0 * d)) + 1
    for _ in range(n):
        z = float(rng.uniform(4, 90) if rng.random() < 0.6 else rng.uniform(4, 25))
        r = rng.random()
        if r < 0.25:  # parked along a kerb
            x = rl + 1.1 if rng.random() < 0.5 else rr - 1.1
        else:
            x = rng.uniform(rl + 1.2, rr - 1.2)
        if rng.random() < 0.2 * d:
            out.append((z, _bind(_truck, cv, pal, rng, x, z)))
        else:
            out.append((z, _bind(_car, cv, pal, rng, x, z)))
    for _ in range(int(rng.poisson(1.3 * d))):  # cyclists
        z = float(rng.uniform(5, 50))
        x = rng.uniform(rl + 0.5, rl + 1.5) if rng.random() < 0.5 else rng.uniform(rr - 1.5, rr - 0.5)
        out.append((z, _bind(_cyclist, cv, pal, rng, x, z)))
    return out


def _car(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float) -> None:
    w, ht, ln = rng.uniform(1.6, 1.95), rng.uniform(1.35, 1.65), rng.uniform(3.8, 4.9)
    _vehicle(cv, pal, rng, x, z, w, ht, ln, CAR, pal.vehicle(), cabin=True)


def _truck(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float) -> None:
    w, ht, ln = rng.uniform(2.2, 2.55), rng.uniform(2.6, 3.8), rng.uniform(6, 11)
    col = pal.vehicle() if rng.random() < 0.5 else pal.building()
    _vehicle(cv, pal, rng, x, z, w, ht, ln, TRUCK, col, cabin=False)


def _vehicle(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float, w: float, ht: float,
             ln: float, cls: int, col: Colour, cabin: bool) -> None:
    """A box seen from behind (or the front): the visible side face, the rear face, glass, wheels, lights."""
    xl, xr = x - w / 2, x + w / 2
    clear = 0.3
    side_x = xl if xl > 0 else (xr if xr < 0 else None)
    body_h = ht * (0.6 if cabin else 1.0)
    tyre = pal.grey(15, 45, 3)
    wheel_r = 0.33 if cabin else 0.5
    if side_x is not None:  # the side towards the camera axis
        cv.wpoly([(side_x, clear, z), (side_x, clear, z + ln), (side_x, body_h, z + ln), (side_x, body_h, z)],
                 pal.shade(col, 0.8), cls)
        if cabin:
            cv.wpoly([(side_x, body_h, z + 0.9), (side_x, body_h, z + ln - 0.8), (side_x, ht, z + ln - 1.3),
                      (side_x, ht, z + 1.4)], pal.shade(col, 0.75), cls)
            cv2.fillPoly(cv.img, [cv.proj([(side_x, body_h + 0.05, z + 1.1), (side_x, body_h + 0.05, z + ln - 1.0),
                                           (side_x, ht - 0.07, z + ln - 1.4), (side_x, ht - 0.07, z + 1.5)])],
                         pal.grey(20, 80))
        for zw in (z + 0.8, z + ln - 0.9):
            c = cv.proj([(side_x, wheel_r, zw)])[0]
            sc = cv.scale(zw)
            cv.ellipse((int(c[0]), int(c[1])), (max(1, int(sc * wheel_r * 0.35)), max(1, int(sc * wheel_r))), tyre, cls)
    # rear face
    for xw in (xl + 0.15, xr - 0.35):
        cv.wpoly([(xw, 0, z + 0.5), (xw + 0.2, 0, z + 0.5), (xw + 0.2, clear + 0.1, z + 0.5), (xw, clear + 0.1, z + 0.5)],
                 tyre, cls)
    cv.wpoly([(xl, clear, z), (xr, clear, z), (xr, body_h, z), (xl, body_h, z)], col, cls)
    if cabin:
        inset = w * 0.1
        cv.wpoly([(xl + inset * 0.5, body_h, z + 0.5), (xr - inset * 0.5, body_h, z + 0.5),
                  (xr - inset, ht, z + 1.2), (xl + inset, ht, z + 1.2)], pal.shade(col, 0.9), cls)
        cv2.fillPoly(cv.img, [cv.proj([(xl + inset, body_h + 0.05, z + 0.55), (xr - inset, body_h + 0.05, z + 0.55),
                                       (xr - inset * 1.4, ht - 0.07, z + 1.15), (xl + inset * 1.4, ht - 0.07, z + 1.15)])],
                     pal.grey(20, 90))
    lamp = pal.jitter((200, 30, 30), 15) if rng.random() < 0.7 else pal.jitter((235, 235, 220), 10)
    for xa in (xl + 0.05, xr - 0.3):
        cv2.fillPoly(cv.img, [cv.proj([(xa, body_h - 0.3, z), (xa + 0.25, body_h - 0.3, z),
                                       (xa + 0.25, body_h - 0.12, z), (xa, body_h - 0.12, z)])], lamp)


def _pedestrians(cv: _Canvas, pal: _Palette, rng: np.random.Generator, d: float,
                 s: dict[str, float]) -> list[tuple[float, Callable[[], None]]]:
    out: list[tuple[float, Callable[[], None]]] = []
    for _ in range(int(rng.poisson(4.0 * d))):
        z = float(rng.uniform(3, 70))
        if rng.random() < 0.15:  # crossing the road
            x = rng.uniform(s["road_l"], s["road_r"])
        else:
            key = "l" if rng.random() < 0.5 else "r"
            a, b = sorted((s[f"sw_in_{key}"], s[f"sw_out_{key}"]))
            x = rng.uniform(a, b) if b - a > 0.5 else a
        if rng.random() < 0.78:
            out.append((z, _bind(_person, cv, pal, rng, x, z, PERSON)))
        else:
            out.append((z, _bind(_parked_bicycle, cv, pal, rng, x, z)))
    return out


def _person(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float, cls: int) -> None:
    """A standing or walking person: legs, torso, arms and head, with random clothes."""
    ht = rng.uniform(1.5, 1.95)
    sc = cv.scale(z)
    foot = cv.proj([(x, 0, z)])[0]
    fx, fy = float(foot[0]), float(foot[1])
    hp = ht * sc
    if hp < 3:
        cv.rect(fx - max(0.5, hp * 0.12), fy - hp, fx + max(0.5, hp * 0.12), fy, pal.clothes(), cls)
        return
    sw = hp * rng.uniform(0.11, 0.15)  # half shoulder width
    hip_y, sh_y = fy - hp * 0.48, fy - hp * 0.82
    stride = hp * rng.uniform(0.0, 0.12)
    trousers, top = pal.clothes(), pal.clothes()
    lw = max(1, int(hp * 0.07))
    cv.line((int(fx - sw * 0.4), int(hip_y)), (int(fx - sw * 0.4 - stride), int(fy)), trousers, cls, lw)
    cv.line((int(fx + sw * 0.4), int(hip_y)), (int(fx + sw * 0.4 + stride), int(fy)), trousers, cls, lw)
    torso = np.array([[fx - sw, sh_y], [fx + sw, sh_y], [fx + sw * 0.8, hip_y + hp * 0.04],
                      [fx - sw * 0.8, hip_y + hp * 0.04]], np.int32)
    cv.poly(torso, top, cls)
    aw = max(1, int(hp * 0.05))
    swing = hp * rng.uniform(-0.08, 0.08)
    cv.line((int(fx - sw), int(sh_y)), (int(fx - sw * 1.1 + swing), int(hip_y + hp * 0.02)), top, cls, aw)
    cv.line((int(fx + sw), int(sh_y)), (int(fx + sw * 1.1 - swing), int(hip_y + hp * 0.02)), top, cls, aw)
    cv.circle((int(fx), int(sh_y - hp * 0.08)), max(1, int(hp * 0.07)), pal.skin(), cls)
    if rng.random() < 0.2:  # a bag or a backpack
        cv.rect(fx + sw * 0.6, hip_y - hp * 0.15, fx + sw * 1.4, hip_y + hp * 0.05, pal.clothes(), cls)


def _bicycle(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float,
             col: Colour | None = None) -> tuple[float, float, float]:
    """A bicycle seen from a random angle (foreshortened side view). Returns the saddle (x, y) and scale."""
    sc = cv.scale(z)
    c = cv.proj([(x, 0, z)])[0]
    fore = rng.uniform(0.25, 1.0) * (1 if rng.random() < 0.5 else -1)
    r = 0.34 * sc
    base = 0.55 * sc * fore
    col = col or pal.vehicle()
    t = max(1, int(sc * 0.04))
    wheels = [(int(c[0] - base), int(c[1] - r)), (int(c[0] + base), int(c[1] - r))]
    for wc in wheels:
        cv2.ellipse(cv.img, wc, (max(1, int(r * abs(fore))), max(1, int(r))), 0, 0, 360, pal.grey(10, 50, 3), t)
        cv2.ellipse(cv.lab, wc, (max(1, int(r * abs(fore))), max(1, int(r))), 0, 0, 360, BICYCLE, t)
    saddle = (c[0] - base * 0.3, c[1] - 0.95 * sc)
    bar = (c[0] + base * 0.8, c[1] - 1.0 * sc)
    crank = (c[0], c[1] - r)
    for a, b in [(wheels[0], crank), (crank, saddle), (saddle, bar), (bar, wheels[1]), (saddle, wheels[0]),
                 (crank, bar)]:
        cv.line((int(a[0]), int(a[1])), (int(b[0]), int(b[1])), col, BICYCLE, t)
    return float(saddle[0]), float(saddle[1]), sc


def _parked_bicycle(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float) -> None:
    _bicycle(cv, pal, rng, x, z)


def _cyclist(cv: _Canvas, pal: _Palette, rng: np.random.Generator, x: float, z: float) -> None:
    """A rider: a person seated on a bicycle (the person's pixels are 'rider', the bicycle's 'bicycle')."""
    sx, sy, sc = _bicycle(cv, pal, rng, x, z)
    top, trousers = pal.clothes(), pal.clothes()
    hp = 1.7 * sc
    lw = max(1, int(hp * 0.07))
    foot = cv.proj([(x, 0.2, z)])[0]
    cv.line((int(sx), int(sy)), (int(foot[0]), int(foot[1])), trousers, RIDER, lw)
    lean = hp * rng.uniform(0.0, 0.15)
    sh = (sx + lean, sy - hp * 0.35)
    sw = max(1.0, hp * 0.12)
    torso = np.array([[sh[0] - sw, sh[1]], [sh[0] + sw, sh[1]], [sx + sw * 0.8, sy], [sx - sw * 0.8, sy]], np.int32)
    cv.poly(torso, top, RIDER)
    cv.line((int(sh[0]), int(sh[1])), (int(sx + hp * 0.25), int(sy - hp * 0.05)), top, RIDER, max(1, int(hp * 0.05)))
    cv.circle((int(sh[0]), int(sh[1] - hp * 0.08)), max(1, int(hp * 0.07)), pal.skin() if rng.random() < 0.5
              else pal.any(), RIDER)


def _draw_hood(cv: _Canvas, pal: _Palette, rng: np.random.Generator) -> None:
    """The ego vehicle's bonnet at the bottom of the frame: ignore (255), as in Cityscapes."""
    hh = int(cv.h * rng.uniform(0.05, 0.12))
    c = (int(cv.w * rng.uniform(0.4, 0.6)), cv.h + int(hh * 0.3))
    cv.ellipse(c, (int(cv.w * rng.uniform(0.6, 0.9)), hh), pal.grey(20, 120), IGNORE_INDEX)


# -- lighting, texture, optics, sensor -----------------------------------------------------------

def _finish(cv: _Canvas, rng: np.random.Generator, d: float, sky: Colour) -> np.ndarray:
    """Texture, lighting, blur and noise, with OpenCV calls on whole images (numpy is slower here)."""
    h, w = cv.h, cv.w
    fine_bank, coarse_bank = _noise_banks(h, w)
    # per-class texture (luminance): coarse blotches + fine grain, amplitudes looked up from the label
    coarse = cv2.multiply(cv2.LUT(cv.lab, _COARSE_AMP.reshape(1, 256)), _crop(coarse_bank, rng, h, w))
    grain = np.ascontiguousarray(_crop(fine_bank, rng, h, w)[..., 0])
    tex = cv2.add(coarse, cv2.multiply(cv2.LUT(cv.lab, _FINE_AMP.reshape(1, 256)), grain))
    img = cv2.add(cv.img.astype(np.float32), cv2.cvtColor(tex, cv2.COLOR_GRAY2RGB))
    # lighting: exposure and colour cast per channel, times a smooth illumination field
    field = cv2.resize(rng.normal(0, 1, (4, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    field = field * np.float32(0.12 * d) + np.float32(1.0)
    gains = rng.uniform(0.65, 1.3) * (1 + rng.normal(0, 0.05 * d, 3))
    img = cv2.multiply(img, cv2.merge([field * np.float32(g) for g in gains]))
    # optics: motion or defocus blur
    if rng.random() < 0.2 * d:
        k = int(rng.integers(3, 8))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2] = 1.0 / k
        img = cv2.filter2D(img, -1, kern)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.2, 0.4 + 0.8 * d))
    # sensor noise
    sigma = rng.uniform(1.0, 2.0 + 4.0 * d)
    img = cv2.scaleAdd(np.ascontiguousarray(_crop(fine_bank, rng, h, w)), sigma, img)
    return np.clip(img, 0, 255).astype(np.uint8)
