"""Privacy zones: what of a trip's path may be shown outside the raw store.

Around both ends of every trip a circle is removed. Its radius is drawn per trip, and its
centre is the trip's end point moved by the policy's own secret offset, so the circle
always contains the end point with a margin but is not centred on it. An observer who
averages the first visible positions of many trips from home recovers the centre of the
circles, which is the secret offset away from home, not home itself.
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass

import numpy as np

EARTH_RADIUS_M = 6_371_008.8
OFFSET_MIN_M = 400.0
OFFSET_MAX_M = 600.0
MARGIN_MIN_M = 200.0
MARGIN_MAX_M = 500.0


@dataclass(frozen=True)
class ZoneOffset:
    """A policy's secret displacement of its privacy-zone centres (metres east, north)."""

    east_m: float
    north_m: float

    @property
    def length_m(self) -> float:
        return math.hypot(self.east_m, self.north_m)

    @classmethod
    def draw(cls, rng: random.Random | None = None) -> ZoneOffset:
        """A fresh secret offset (from the system's secure generator unless ``rng`` is
        given, which only tests do, for reproducibility)."""
        rng = rng or secrets.SystemRandom()
        length = rng.uniform(OFFSET_MIN_M, OFFSET_MAX_M)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        return cls(length * math.cos(angle), length * math.sin(angle))


def draw_zone_radii_m(offset: ZoneOffset,
                      rng: random.Random | None = None) -> tuple[float, float]:
    """Radii of the start and end zones of one trip: always wider than the offset."""
    rng = rng or secrets.SystemRandom()
    return (offset.length_m + rng.uniform(MARGIN_MIN_M, MARGIN_MAX_M),
            offset.length_m + rng.uniform(MARGIN_MIN_M, MARGIN_MAX_M))


@dataclass(frozen=True)
class TripZones:
    """The two privacy zones of one trip: circles around its ends, moved by the offset."""

    start_deg: tuple[float, float]  # (lat, lon) of the trip's first valid fix
    end_deg: tuple[float, float]
    offset: ZoneOffset
    radii_m: tuple[float, float]

    @classmethod
    def of_trip(cls, lat_deg: np.ndarray, lon_deg: np.ndarray, offset: ZoneOffset,
                radii_m: tuple[float, float]) -> TripZones | None:
        """Zones anchored at the first and last finite fixes; None without any fix."""
        idx = np.flatnonzero(np.isfinite(lat_deg) & np.isfinite(lon_deg))
        if idx.size == 0:
            return None
        first, last = idx[0], idx[-1]
        return cls((float(lat_deg[first]), float(lon_deg[first])),
                   (float(lat_deg[last]), float(lon_deg[last])), offset, radii_m)

    def visible(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """True for positions outside both zones; NaN positions are never visible."""
        lat0, lon0 = self.start_deg
        cos0 = math.cos(math.radians(lat0))
        east = np.radians(lon_deg - lon0) * EARTH_RADIUS_M * cos0
        north = np.radians(lat_deg - lat0) * EARTH_RADIUS_M
        inside = ~(np.isfinite(east) & np.isfinite(north))
        for (lat_c, lon_c), radius in ((self.start_deg, self.radii_m[0]),
                                       (self.end_deg, self.radii_m[1])):
            cx = math.radians(lon_c - lon0) * EARTH_RADIUS_M * cos0 + self.offset.east_m
            cy = math.radians(lat_c - lat0) * EARTH_RADIUS_M + self.offset.north_m
            with np.errstate(invalid="ignore"):
                inside |= np.hypot(east - cx, north - cy) <= radius
        return ~inside
