"""train/teachers/geometry.py: one geometry for image, label and cached teacher maps.

The alignment check uses a teacher whose output is a fixed function of the pixels (a 1x1 conv of the
normalised image, stride 1): its map of the augmented crop must equal the warp of its map of the whole
image, for any scale, crop (with padding) and flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.data import normalize_tensor
from train.teachers.geometry import Geometry, apply_geometry, crop_cells, draw_geometry, scaled_size, warp_map

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """uint8 3 x h x w with structure at several scales (a blurred random field plus edges)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, h // 4, w // 4, generator=g)
    img = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)[0]
    img[:, h // 3:h // 2, w // 5:w // 2] += 0.5  # a sharp-edged block
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def pixel_teacher(x: torch.Tensor) -> torch.Tensor:
    """A fixed function of each pixel: 1x1 conv 3 -> 5 with bias (stride 1)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 3, 1, 1, generator=g)
    b = torch.randn(5, generator=g)
    return F.conv2d(x, w, b)


@pytest.mark.parametrize("seed", range(12))
def test_warped_map_equals_the_teacher_on_the_augmented_crop(seed: int) -> None:
    image = smooth_image(48, 96, seed)
    label = torch.zeros(48, 96, dtype=torch.uint8)
    whole = pixel_teacher(normalize_tensor(image, MEAN, STD)[None])[0]
    torch.manual_seed(seed)
    g = draw_geometry((48, 96), (0.5, 2.0), (40, 64), True)
    img, lbl = apply_geometry(image, label, g)
    online = pixel_teacher(normalize_tensor(img, MEAN, STD)[None])[0]
    cached = warp_map(whole, g, crop_cells(g, 1))
    inside = lbl != 255  # padding: the online teacher sees black there, the cache the image's edge
    assert inside.float().mean() > 0.2
    err = (online - cached).abs()[:, inside]
    # uint8 rounding of the resized image (0.5 / 255 / std per channel) is the only difference
    assert err.max() < 0.08, (seed, g, float(err.max()))
    assert err.mean() < 0.01
    # the check has teeth: without the flip, or shifted by a pixel, it fails
    if g.flip:
        wrong = warp_map(whole, Geometry(g.source, g.scaled, g.top, g.left, g.crop, False), crop_cells(g, 1))
        assert (online - wrong).abs()[:, inside].mean() > 0.05
    shifted = warp_map(whole, Geometry(g.source, g.scaled, g.top + 2, g.left, g.crop, g.flip), crop_cells(g, 1))
    assert (online - shifted).abs()[:, inside].mean() > 0.02


def test_identity_geometry_is_exact_at_any_stride() -> None:
    m = torch.randn(4, 6, 12)  # a stride-8 map of a 48 x 96 image
    g = Geometry.identity((48, 96))
    assert crop_cells(g, 8) == (6, 12)
    torch.testing.assert_close(warp_map(m, g, (6, 12)), m, atol=1e-6, rtol=0)


def test_coarse_map_follows_the_crop_and_flip() -> None:
    """A stride-4 map of x-coordinates: the warped crop reads the coordinates of its own cells."""
    h, w, r = 32, 64, 4
    xs = (torch.arange(w // r, dtype=torch.float32) + 0.5) * r  # image x of each cell centre
    m = xs.expand(1, h // r, w // r).clone()
    g = Geometry((h, w), (h, w), 8, 16, (16, 32), True)  # no scale, crop at (8, 16), flipped
    out = warp_map(m, g, crop_cells(g, r))
    expect = (16 + 32 - (torch.arange(8, dtype=torch.float32) + 0.5) * r)  # mirrored cell centres
    torch.testing.assert_close(out[0, 0], expect, atol=1e-4, rtol=0)


def test_draw_geometry_pads_small_images_like_random_crop() -> None:
    torch.manual_seed(0)
    seen_negative = False
    for _ in range(50):
        g = draw_geometry((20, 30), (0.5, 1.0), (24, 32), True)
        hs, ws = g.scaled
        assert 10 <= hs <= 20 and 15 <= ws <= 30
        # the window never leaves the padded image: at most (crop - size) on either side
        assert -(24 - hs) <= g.top <= max(0, hs - 24) + max(0, 24 - hs)
        seen_negative |= g.top < 0 or g.left < 0
    assert seen_negative


def test_apply_geometry_label_padding_is_ignore() -> None:
    image = torch.full((3, 10, 10), 200, dtype=torch.uint8)
    label = torch.ones(10, 10, dtype=torch.uint8)
    g = Geometry((10, 10), (10, 10), -3, -2, (16, 16), False)
    img, lbl = apply_geometry(image, label, g)
    assert img.shape == (3, 16, 16) and lbl.shape == (16, 16)
    assert (lbl[:3] == 255).all() and (lbl[:, :2] == 255).all() and (lbl[3:13, 2:12] == 1).all()
    assert (img[:, :3] == 0).all() and (img[:, 3:13, 2:12] == 200).all()
    assert np.array_equal((lbl == 255).numpy(), (img[0] == 0).numpy())


@pytest.mark.parametrize("seed", range(6))
def test_warp_of_a_map_computed_at_val_size_uses_that_size(seed: int) -> None:
    """With data.val_size set, the cache's map covers the image resized to val_size (scale 1), not the
    native image: the warp must shrink it by Hs / H_val. Measured against the online teacher on the crop;
    the old warp (shrink by Hs / H_native) fails the same bound."""
    native, val = (64, 128), (32, 64)
    # smooth at the val size too (features of 4+ pixels there), so that resizing twice (native -> val ->
    # scaled) and once (native -> scaled) differ only by rounding and the filters' tails
    image = F.interpolate(smooth_image(16, 32, seed=seed)[None].float(), size=native, mode="bilinear",
                          align_corners=False)[0].round().to(torch.uint8)
    label = torch.zeros(native, dtype=torch.uint8)
    at_val = apply_geometry(image, label, Geometry(native, val, 0, 0, val, False))[0]
    whole = pixel_teacher(normalize_tensor(at_val, MEAN, STD)[None])[0]
    torch.manual_seed(seed)
    g = draw_geometry(native, (0.5, 1.0), (24, 40), True, base=val)
    assert g.extent == val
    img, lbl = apply_geometry(image, label, g)
    online = pixel_teacher(normalize_tensor(img, MEAN, STD)[None])[0]
    inside = lbl != 255
    err = (online - warp_map(whole, g, crop_cells(g, 1))).abs()[:, inside].mean()
    # the buggy extent: the native size
    old = Geometry(g.source, g.scaled, g.top, g.left, g.crop, g.flip, base=native)
    err_old = (online - warp_map(whole, old, crop_cells(g, 1))).abs()[:, inside].mean()
    assert err < 0.03, float(err)
    assert err_old > 4 * err, (float(err_old), float(err))


def conv_teacher(x: torch.Tensor) -> torch.Tensor:
    """A fixed 3x3 convolution (stride 1, zero padding): not mirror-symmetric, so a target computed on the
    unmirrored image and flipped differs from the one computed on the mirrored image."""
    g = torch.Generator().manual_seed(4)
    return F.conv2d(x, torch.randn(5, 3, 3, 3, generator=g), torch.randn(5, generator=g), padding=1)


@pytest.mark.parametrize(("scale", "flip", "top", "left"), [(1.5, True, 7, 30), (0.75, False, -5, 3),
                                                             (1.25, True, 0, -9), (2.0, False, 40, 100)])
def test_a_view_at_the_sample_scale_and_flip_only_crops(scale: float, flip: bool, top: int, left: int) -> None:
    """The multiscale cache's case: the map of the image at scale s_c (mirrored when the sample is flipped);
    at s = s_c the warp is the crop itself, equal to the teacher's output on the augmented crop exactly
    (inside the image, one pixel in from the crop's edge, where the 3x3 teacher saw the same pixels)."""
    source, base, crop = (64, 128), (48, 96), (40, 64)
    image = smooth_image(*source, seed=int(scale * 4))
    label = torch.zeros(source, dtype=torch.uint8)
    g = Geometry(source, scaled_size(base, scale), top, left, crop, flip, base)
    view = apply_geometry(image, label, Geometry(source, g.scaled, 0, 0, g.scaled, flip, base))[0]
    stored = conv_teacher(normalize_tensor(view, MEAN, STD)[None])[0]  # the (mirrored) view, as cached
    img, lbl = apply_geometry(image, label, g)
    online = conv_teacher(normalize_tensor(img, MEAN, STD)[None])[0]
    inside = F.max_pool2d((lbl == 255).float()[None, None], 3, 1, 1)[0, 0] == 0
    inside[0], inside[-1], inside[:, 0], inside[:, -1] = False, False, False, False
    assert inside.float().mean() > 0.2
    got = warp_map(stored, g, crop_cells(g, 1), 1, scale, flip)
    torch.testing.assert_close(got[:, inside], online[:, inside], atol=1e-4, rtol=2e-5)  # float32 grid
    if flip:  # the unmirrored view, flipped by the warp, is not the teacher's output on the flipped crop
        plain_view = apply_geometry(image, label, Geometry(source, g.scaled, 0, 0, g.scaled, False, base))[0]
        unmirrored = conv_teacher(normalize_tensor(plain_view, MEAN, STD)[None])[0]
        wrong = warp_map(unmirrored, g, crop_cells(g, 1), 1, scale, False)
        assert (wrong - online)[:, inside].abs().mean() > 0.1


@pytest.mark.parametrize("mirrored", [False, True])
def test_a_coarse_map_of_a_side_the_stride_does_not_divide_covers_its_cells(mirrored: bool) -> None:
    """A stride-8 map of a 36 x 100 view has ceil(36/8) x ceil(100/8) = 5 x 13 cells centred at
    (k + 0.5) · 8: the last cell reaches past the image (a network pads there). Holding each cell's image
    x (mirrored: W - x'), the warp of a crop must read its own cells' x."""
    h, w, r = 36, 100, 8
    xs = (torch.arange(13, dtype=torch.float32) + 0.5) * r
    m = (w - xs if mirrored else xs).expand(1, 5, 13).clone()
    g = Geometry((h, w), (h, w), 8, 40, (16, 32), False)
    out = warp_map(m, g, crop_cells(g, r), r, 1.0, mirrored)
    torch.testing.assert_close(out[0, 0], 40 + (torch.arange(4, dtype=torch.float32) + 0.5) * r, atol=1e-4, rtol=0)
    # without the stride the 13 cells are spread over the 100 pixels: cell centres 7.7 apart, not 8
    assert (warp_map(m, g, crop_cells(g, r))[0, 0] - out[0, 0]).abs().max() > 1.0
