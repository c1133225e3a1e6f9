"""The street a synthetic scene is built along, in metres across the street (x, camera at 0, right
positive) and along it (z, depth): drawn first by `scene._draw_ground`, then read by the facades,
shadows, roadside objects, traffic and pedestrians so that they stand where the ground says."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Side:
    """One side of the street: the sidewalk's inner (road-side) and outer edges, and the facade line
    (the sidewalk has zero width where a side has none; the facade may stand back behind a verge)."""

    sidewalk_in: float
    sidewalk_out: float
    facade: float


@dataclass(frozen=True)
class Street:
    zfar: float  # depth of the far end of the ground (metres)
    road_l: float  # x of the road's left and right edges
    road_r: float
    left: Side
    right: Side

    def side(self, side: int) -> Side:
        """`left` for side < 0, `right` for side > 0 (the convention of every drawing function)."""
        return self.right if side > 0 else self.left
