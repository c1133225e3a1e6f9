"""The geometric training augmentation as explicit parameters, applied alike to image, label and cached
teacher maps.

One draw (`draw_geometry`, from torch's RNG, in the order torchvision's RandomScale/RandomCrop/
RandomHorizontalFlip draw) gives a `Geometry`:

    1. scale: resize the image from its size (H0, W0) to (Hs, Ws) = round(s · base), s ~ U(scale_range);
    2. crop: the window rows [top, top + hc), columns [left, left + wc) of the resized image; a negative
       offset or a window past the edge is padding (image 0, label 255), as RandomCrop(pad_if_needed);
    3. flip: mirror the crop horizontally.

`warp_map` applies the same geometry to an N x C x h x w map computed on the whole image at some
stride (the teacher's logits or features), giving the map the teacher would compute on the crop at that
stride, ceil(hc / r) x ceil(wc / r). With align_corners=False conventions, cell k of a map of n cells
over a length L sits at (k + 0.5) · L / n, so output cell (k, l) reads the whole-image map at

    y = (top  + (k + 0.5) · hc / h_out) / Hs,       x = (left + u) / Ws,
    u = (l + 0.5) · wc / w_out,  or wc − u when flipped,

in units of the image extent (grid_sample coordinates 2y − 1, bilinear, edges clamped). When the scale
shrinks the map, it is first resized to its scaled size with antialiasing, as the image is, so that the
warp of a stride-1 map of a pixel-wise function of the image equals that function of the augmented image.

The stored map may also cover the image at another scale s_c (size `scaled_size(extent, s_c)`, the
teacher cache's multiscale mode) and mirrored: the point x of the image then sits at x (or W_c − x) in
pixels of that view, and the map shrinks by Hs / H_c. With `stride` r given, a map of n cells is taken
to cover n · r pixels of its view (cell k centred at (k + 0.5) · r, what a stride-r network with "same"
padding computes on a side that r does not divide: ceil(L / r) cells, the last one partly over padding),
and the crop's cells sit at (k + 0.5) · r of the crop likewise; without it, n cells cover exactly L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from runtime.metadata import IGNORE_INDEX


@dataclass(frozen=True)
class Geometry:
    """Source size (H0, W0), scaled size (Hs, Ws), crop window (top, left, hc, wc) in scaled pixels, flip,
    and `base`: the size scale 1 maps to (`data.val_size` when set, else the source size), which is also
    the size the teacher cache computed its whole-image maps at."""

    source: tuple[int, int]
    scaled: tuple[int, int]
    top: int
    left: int
    crop: tuple[int, int]
    flip: bool
    base: tuple[int, int] | None = None

    @property
    def extent(self) -> tuple[int, int]:
        """The image size a whole-image map of this geometry covers: `base`, else `source`."""
        return self.base or self.source

    @staticmethod
    def identity(size: tuple[int, int]) -> Geometry:
        return Geometry(size, size, 0, 0, size, False)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The size of an image of `size` resized by `scale`: round(s · H) x round(s · W), at least 1."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def draw_geometry(source: tuple[int, int], scale_range: tuple[float, float], crop: tuple[int, int],
                  flip: bool, base: tuple[int, int] | None = None) -> Geometry:
    """Draw scale, crop offset and flip from torch's global RNG (seed it per sample for reproducibility).

    `base`: the size that scale 1 maps to (the validation size), default `source`."""
    h, w = base or source
    lo, hi = scale_range
    s = lo + (hi - lo) * float(torch.rand(()))
    hs, ws = scaled_size((h, w), s)
    hc, wc = crop
    # RandomCrop(pad_if_needed): a side shorter than the crop is padded by the difference on both ends
    pad_h, pad_w = max(0, hc - hs), max(0, wc - ws)
    top = int(torch.randint(0, hs + 2 * pad_h - hc + 1, ())) if hs + 2 * pad_h > hc else 0
    left = int(torch.randint(0, ws + 2 * pad_w - wc + 1, ())) if ws + 2 * pad_w > wc else 0
    mirrored = bool(flip and float(torch.rand(1)) < 0.5)
    return Geometry((int(source[0]), int(source[1])), (hs, ws), top - pad_h, left - pad_w, (hc, wc), mirrored,
                    (int(h), int(w)))


def _crop(x: torch.Tensor, g: Geometry, fill: float) -> torch.Tensor:
    """The window of `g` from C x Hs x Ws `x`, padded with `fill` where it leaves the image."""
    hc, wc = g.crop
    out = x.new_full((x.shape[0], hc, wc), fill)
    y0, x0 = max(0, g.top), max(0, g.left)
    y1, x1 = min(x.shape[-2], g.top + hc), min(x.shape[-1], g.left + wc)
    if y1 > y0 and x1 > x0:
        out[:, y0 - g.top:y1 - g.top, x0 - g.left:x1 - g.left] = x[:, y0:y1, x0:x1]
    return out


def apply_geometry(image: torch.Tensor, label: torch.Tensor, g: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 3 x H0 x W0 image (bilinear, antialiased) and H0 x W0 label (nearest at pixel centres)."""
    img = TF.resize(image, list(g.scaled), antialias=True)
    # NEAREST_EXACT samples at pixel centres like bilinear; plain NEAREST is shifted by up to half a pixel
    lbl = TF.resize(label[None], list(g.scaled), interpolation=v2.InterpolationMode.NEAREST_EXACT)
    img, lbl = _crop(img, g, 0), _crop(lbl, g, IGNORE_INDEX)[0]
    if g.flip:
        img, lbl = img.flip(-1), lbl.flip(-1)
    return img, lbl


def crop_cells(g: Geometry, stride: int) -> tuple[int, int]:
    """The size of a stride-`stride` map of the crop: ceil(hc / r) x ceil(wc / r)."""
    return math.ceil(g.crop[0] / stride), math.ceil(g.crop[1] / stride)


def warp_map(m: torch.Tensor, g: Geometry, out_size: tuple[int, int], stride: int | None = None,
             scale: float | None = None, mirrored: bool = False) -> torch.Tensor:
    """C x h x w map of the whole image -> C x out_size map of the augmented crop of `g` (float32).

    The map covers the image at `scale` of `g.extent` (None: the extent itself, the size scale 1 maps to),
    mirrored horizontally when `mirrored`; with `stride`, its n cells cover n · stride pixels of that view
    (module docstring). It shrinks by Hs / H_view, the factor the image is resized by from that view."""
    m = m.float()
    h, w = m.shape[-2:]
    hs, ws = g.scaled
    vh, vw = scaled_size(g.extent, scale) if scale is not None else g.extent
    shrunk = (max(1, round(h * hs / vh)), max(1, round(w * ws / vw)))
    if shrunk[0] < h or shrunk[1] < w:  # antialias as the image's resize does; grid_sample would alias
        m = F.interpolate(m[None], size=(min(h, shrunk[0]), min(w, shrunk[1])), mode="bilinear",
                          align_corners=False, antialias=True)[0]
    ho, wo = out_size
    hc, wc = g.crop
    cover_h, cover_w = (h * stride, w * stride) if stride else (vh, vw)  # view pixels the map spans
    out_h, out_w = (ho * stride, wo * stride) if stride else (hc, wc)  # crop pixels the output spans
    ys = (g.top + (torch.arange(ho, dtype=torch.float64) + 0.5) * out_h / ho) * vh / hs  # in view pixels
    u = (torch.arange(wo, dtype=torch.float64) + 0.5) * out_w / wo
    xs = (g.left + (wc - u if g.flip else u)) * vw / ws
    if mirrored:
        xs = vw - xs
    gy, gx = torch.meshgrid(2 * ys / cover_h - 1, 2 * xs / cover_w - 1, indexing="ij")
    grid = torch.stack([gx, gy], -1).to(torch.float32)[None]
    return F.grid_sample(m[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
