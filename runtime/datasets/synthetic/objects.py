"""Objects of the synthetic scenes: roadside furniture (walls, fences, hedges, trees, poles, signs, lights),
traffic and people. `roadside`, `traffic` and `pedestrians` return (depth, draw) pairs so that the scene
can paint everything far to near; `tree` is also drawn by the scene's tree rows."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from runtime.datasets.synthetic.draw import (
    BICYCLE,
    CAR,
    FENCE,
    LIGHT,
    PERSON,
    POLE,
    RIDER,
    SIGN,
    TRUCK,
    VEG,
    WALL,
    Canvas,
    Colour,
    Palette,
)
from runtime.datasets.synthetic.layout import Street

# -- roadside furniture --------------------------------------------------------------------------

def roadside(cv: Canvas, pal: Palette, rng: np.random.Generator, d: float, side: int,
              s: Street) -> list[tuple[float, Callable[[], None]]]:
    out: list[tuple[float, Callable[[], None]]] = []
    kerb = s.side(side).sidewalk_in + side * 0.4
    outer = s.side(side).sidewalk_out
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
            out.append((z, _bind(tree, cv, pal, rng, kerb + side * rng.uniform(0, 1), z, col)))
        else:
            out.append((z, _bind(_sign_post, cv, pal, rng, kerb, z)))
        z += rng.uniform(6, 22) / max(d, 0.3)
    return out


def _bind(fn: Callable[..., None], *args: object) -> Callable[[], None]:
    return lambda: fn(*args)


def _wall(cv: Canvas, pal: Palette, x: float, za: float, zb: float, ht: float, col: Colour) -> None:
    cv.wpoly([(x, 0, za), (x, 0, zb), (x, ht, zb), (x, ht, za)], col, WALL)
    cv.wpoly([(x, ht, za), (x, ht, zb), (x, ht + 0.12, zb), (x, ht + 0.12, za)], pal.shade(col, 1.15), WALL)


def _fence(cv: Canvas, rng: np.random.Generator, x: float, za: float, zb: float, ht: float, col: Colour) -> None:
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


def _hedge(cv: Canvas, pal: Palette, x: float, za: float, zb: float, ht: float, col: Colour) -> None:
    cv.wpoly([(x, 0, za), (x, 0, zb), (x, ht, zb), (x, ht, za)], col, VEG)
    _speckle(cv, pal, cv.proj([(x, 0, za), (x, 0, zb), (x, ht, zb), (x, ht, za)]), col, VEG, 25)


def _speckle(cv: Canvas, pal: Palette, pts: np.ndarray, col: Colour, cls: int, n: int) -> None:
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


def tree(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float, col: Colour) -> None:
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


def _pole(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float, side: int) -> None:
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


def _sign_post(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float) -> None:
    ht = rng.uniform(2.0, 3.0)
    p = cv.proj([(x, 0, z), (x, ht, z)])
    cv.line(tuple(p[0]), tuple(p[1]), pal.pole(), POLE, max(1, int(cv.scale(z) * 0.07)))
    _sign(cv, pal, rng, x, ht, z)
    if rng.random() < 0.4:
        _sign(cv, pal, rng, x, ht - 0.8, z)


def _sign(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, y: float, z: float) -> None:
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


def _traffic_light(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, y: float, z: float) -> None:
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

def traffic(cv: Canvas, pal: Palette, rng: np.random.Generator, d: float,
             s: Street) -> list[tuple[float, Callable[[], None]]]:
    out: list[tuple[float, Callable[[], None]]] = []
    rl, rr = s.road_l, s.road_r
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


def _car(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float) -> None:
    w, ht, ln = rng.uniform(1.6, 1.95), rng.uniform(1.35, 1.65), rng.uniform(3.8, 4.9)
    _vehicle(cv, pal, rng, x, z, w, ht, ln, CAR, pal.vehicle(), cabin=True)


def _truck(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float) -> None:
    w, ht, ln = rng.uniform(2.2, 2.55), rng.uniform(2.6, 3.8), rng.uniform(6, 11)
    col = pal.vehicle() if rng.random() < 0.5 else pal.building()
    _vehicle(cv, pal, rng, x, z, w, ht, ln, TRUCK, col, cabin=False)


def _vehicle(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float, w: float, ht: float,
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


def pedestrians(cv: Canvas, pal: Palette, rng: np.random.Generator, d: float,
                 s: Street) -> list[tuple[float, Callable[[], None]]]:
    out: list[tuple[float, Callable[[], None]]] = []
    for _ in range(int(rng.poisson(4.0 * d))):
        z = float(rng.uniform(3, 70))
        if rng.random() < 0.15:  # crossing the road
            x = rng.uniform(s.road_l, s.road_r)
        else:
            walk = s.side(-1 if rng.random() < 0.5 else 1)
            a, b = sorted((walk.sidewalk_in, walk.sidewalk_out))
            x = rng.uniform(a, b) if b - a > 0.5 else a
        if rng.random() < 0.78:
            out.append((z, _bind(_person, cv, pal, rng, x, z, PERSON)))
        else:
            out.append((z, _bind(_parked_bicycle, cv, pal, rng, x, z)))
    return out


def _person(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float, cls: int) -> None:
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


def _bicycle(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float,
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


def _parked_bicycle(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float) -> None:
    _bicycle(cv, pal, rng, x, z)


def _cyclist(cv: Canvas, pal: Palette, rng: np.random.Generator, x: float, z: float) -> None:
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
