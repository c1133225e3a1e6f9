"""Rendering of the synthetic street scenes (the dataset reader is `dataset.SyntheticStreets`).

A pinhole camera at height ~1.5 m looks down a straight street, so the road, sidewalks and facades
converge to a vanishing point and everything is scaled by depth. Image and label are drawn together with
OpenCV polygons (painter's order, far to near, so occlusion is exact), then lit, textured, blurred and
given sensor noise. `render_scene(size, seed, split, index, difficulty)` is the entry point.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from runtime.datasets.synthetic.draw import (
    BUILDING,
    COARSE_AMP,
    FINE_AMP,
    GENERATOR_VERSION,
    ROAD,
    SIDEWALK,
    SKY,
    SPLIT_CODES,
    TERRAIN,
    VEG,
    Canvas,
    Colour,
    Palette,
    crop_bank,
    noise_banks,
)
from runtime.datasets.synthetic.layout import Side, Street
from runtime.datasets.synthetic.objects import pedestrians, roadside, traffic, tree
from runtime.metadata import IGNORE_INDEX


def render_scene(size: tuple[int, int], seed: int, split: str, index: int,
                 difficulty: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Render sample `index` of `split`: (uint8 H x W x 3 RGB image, uint8 H x W label)."""
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index), GENERATOR_VERSION])
    h, w = size
    d = difficulty
    cv = Canvas(h, w, f=w * rng.uniform(0.55, 0.85), cam_h=rng.uniform(1.3, 1.7),
                 xv=w * (0.5 + rng.uniform(-0.15, 0.15)), yh=h * rng.uniform(0.36, 0.5))
    pal = Palette(rng, spread=0.6 + 0.5 * d)
    sky = pal.sky()

    _draw_sky(cv, pal, rng, sky)
    street = _draw_ground(cv, pal, rng, d)
    _draw_skyline(cv, pal, rng, sky, street)
    for side in (-1, 1):
        _draw_facades(cv, pal, rng, d, side, street, sky)
    _apply_shadow(cv, rng, d, street)
    objects: list[tuple[float, Callable[[], None]]] = []
    for side in (-1, 1):
        objects += roadside(cv, pal, rng, d, side, street)
    objects += traffic(cv, pal, rng, d, street)
    objects += pedestrians(cv, pal, rng, d, street)
    for _, draw in sorted(objects, key=lambda o: -o[0]):  # painter's order: far first
        draw()
    if rng.random() < 0.3:
        _draw_hood(cv, pal, rng)
    return _finish(cv, rng, d, sky), cv.lab


# -- background ----------------------------------------------------------------------------------

def _draw_sky(cv: Canvas, pal: Palette, rng: np.random.Generator, sky: Colour) -> None:
    top = pal.shade(sky, rng.uniform(0.7, 0.95))
    yh = int(cv.yh) + 2
    ramp = np.linspace(0, 1, yh, dtype=np.float32)[:, None, None]
    cv.img[:yh] = (np.asarray(top, np.float32) * (1 - ramp) + np.asarray(sky, np.float32) * ramp).astype(np.uint8)
    cv.lab[:yh] = SKY
    for _ in range(int(rng.integers(0, 6))):  # clouds (sky)
        c = (int(rng.uniform(0, cv.w)), int(rng.uniform(0, cv.yh * 0.8)))
        ax = (int(rng.uniform(0.05, 0.2) * cv.w), int(rng.uniform(0.02, 0.08) * cv.h))
        cv.ellipse(c, ax, pal.jitter((225, 228, 232), 12), SKY)


def _draw_ground(cv: Canvas, pal: Palette, rng: np.random.Generator, d: float) -> Street:
    """Road, sidewalks, verges and markings. Returns the street's lateral layout (metres)."""
    zfar = 400.0
    x0 = rng.uniform(-2.0, 2.0)
    rw = rng.uniform(3.0, 7.0)
    road_l, road_r = x0 - rw, x0 + rw
    sides: dict[int, Side] = {}
    terr = pal.terrain()
    cv.img[int(cv.yh):] = terr
    cv.lab[int(cv.yh):] = TERRAIN
    road = pal.road()
    sidewalk = pal.sidewalk() if rng.random() < 0.8 else pal.shade(road, rng.uniform(1.0, 1.3))
    for side in (-1, 1):
        edge = road_r if side > 0 else road_l
        verge_in = rng.uniform(0.6, 2.0) if rng.random() < 0.25 else 0.0
        sw = rng.uniform(1.5, 4.5) if rng.random() < 0.9 else 0.0
        verge_out = rng.uniform(0.5, 4.0) if rng.random() < 0.35 else 0.0
        a = edge + side * verge_in
        b = a + side * sw
        facade = b + side * verge_out
        sides[side] = Side(sidewalk_in=a, sidewalk_out=b, facade=facade)
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
    cv.wpoly([(road_l, 0, 0.5), (road_r, 0, 0.5), (road_r, 0, zfar), (road_l, 0, zfar)],
             road, ROAD)
    # patches and markings (still road)
    for _ in range(int(rng.poisson(2 * d))):
        z0 = rng.uniform(3, 40)
        xa = rng.uniform(road_l, road_r - 1)
        cv.wpoly([(xa, 0, z0), (xa + rng.uniform(0.5, 3), 0, z0), (xa + rng.uniform(0.5, 3), 0, z0 + rng.uniform(1, 8)),
                  (xa, 0, z0 + rng.uniform(1, 8))], pal.shade(road, rng.uniform(0.7, 1.25)), ROAD)
    paint = pal.jitter((215, 215, 205), 10) if rng.random() < 0.8 else pal.jitter((210, 180, 60), 10)
    xc = (road_l + road_r) / 2 + rng.uniform(-0.5, 0.5)
    dash, gap = rng.uniform(2, 4), rng.uniform(3, 8)
    z = rng.uniform(0.5, 3)
    while z < 70:
        cv.wpoly([(xc - 0.07, 0, z), (xc + 0.07, 0, z), (xc + 0.07, 0, z + dash), (xc - 0.07, 0, z + dash)], paint, ROAD)
        z += dash + gap
    for xe in (road_l + 0.3, road_r - 0.3):
        if rng.random() < 0.6:
            cv.wpoly([(xe - 0.06, 0, 0.5), (xe + 0.06, 0, 0.5), (xe + 0.06, 0, zfar), (xe - 0.06, 0, zfar)], paint, ROAD)
    if rng.random() < 0.3:  # zebra crossing
        zc = rng.uniform(6, 25)
        x = road_l + 0.3
        while x < road_r - 0.5:
            cv.wpoly([(x, 0, zc), (x + 0.5, 0, zc), (x + 0.5, 0, zc + 3), (x, 0, zc + 3)], paint, ROAD)
            x += 1.0
    return Street(zfar=zfar, road_l=road_l, road_r=road_r, left=sides[-1], right=sides[1])


def _draw_skyline(cv: Canvas, pal: Palette, rng: np.random.Generator, sky: Colour, s: Street) -> None:
    """Distant buildings and tree lines at the end of the street, hazed towards the sky colour."""
    z = rng.uniform(120, 250)
    x = s.left.facade - 30
    while x < s.right.facade + 30:
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


def _draw_facades(cv: Canvas, pal: Palette, rng: np.random.Generator, d: float, side: int,
                  s: Street, sky: Colour) -> None:
    """Buildings along one side, far to near, with windows; gaps show trees or open ground."""
    xf = s.side(side).facade
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


def _windows(cv: Canvas, pal: Palette, rng: np.random.Generator, xf: float, za: float, zb: float,
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


def _tree_row(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, za: float, zb: float,
              sky: Colour, haze: float) -> None:
    for z in np.arange(zb, za, -rng.uniform(6, 12)):
        tree(cv, pal, rng, x + rng.uniform(-1, 1), max(z, 2.0), _mix(pal.vegetation(), sky, haze))


def _apply_shadow(cv: Canvas, rng: np.random.Generator, d: float, s: Street) -> None:
    """Cast shadows of the buildings across the ground (drawn into `cv.shadow`, applied now)."""
    if rng.random() < 0.5:
        side = 1 if rng.random() < 0.5 else -1
        reach = rng.uniform(0.2, 1.0) * (s.road_r - s.road_l)
        xf = s.side(side).facade
        z0 = rng.uniform(-5, 30)
        z1 = z0 + rng.uniform(10, 150)
        pts = cv.proj([(xf, 0, z0), (xf - side * reach, 0, z0), (xf - side * reach, 0, z1), (xf, 0, z1)])
        cv2.fillPoly(cv.shadow, [pts], int(rng.uniform(60, 140)))
    if cv.shadow.any():
        k = 1.0 - cv.shadow.astype(np.float32) / 255.0
        cv.img[:] = (cv.img * k[..., None]).astype(np.uint8)
        cv.shadow[:] = 0


def _draw_hood(cv: Canvas, pal: Palette, rng: np.random.Generator) -> None:
    """The ego vehicle's bonnet at the bottom of the frame: ignore (255), as in Cityscapes."""
    hh = int(cv.h * rng.uniform(0.05, 0.12))
    c = (int(cv.w * rng.uniform(0.4, 0.6)), cv.h + int(hh * 0.3))
    cv.ellipse(c, (int(cv.w * rng.uniform(0.6, 0.9)), hh), pal.grey(20, 120), IGNORE_INDEX)


# -- lighting, texture, optics, sensor -----------------------------------------------------------

def _finish(cv: Canvas, rng: np.random.Generator, d: float, sky: Colour) -> np.ndarray:
    """Texture, lighting, blur and noise, with OpenCV calls on whole images (numpy is slower here)."""
    h, w = cv.h, cv.w
    fine_bank, coarse_bank = noise_banks(h, w)
    # per-class texture (luminance): coarse blotches + fine grain, amplitudes looked up from the label
    coarse = cv2.multiply(cv2.LUT(cv.lab, COARSE_AMP.reshape(1, 256)), crop_bank(coarse_bank, rng, h, w))
    grain = np.ascontiguousarray(crop_bank(fine_bank, rng, h, w)[..., 0])
    tex = cv2.add(coarse, cv2.multiply(cv2.LUT(cv.lab, FINE_AMP.reshape(1, 256)), grain))
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
    img = cv2.scaleAdd(np.ascontiguousarray(crop_bank(fine_bank, rng, h, w)), sigma, img)
    return np.clip(img, 0, 255).astype(np.uint8)
