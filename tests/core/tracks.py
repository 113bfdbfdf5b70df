"""Hand-made GPS tracks for the core's tests: positions from distances on WGS84."""

from __future__ import annotations

import math

import numpy as np

A = 6378137.0
E2 = (1 / 298.257223563) * (2 - 1 / 298.257223563)
T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC, a Monday


def metres_per_degree(lat_deg: float) -> tuple[float, float]:
    """(north, east) metres per degree of latitude and longitude at ``lat_deg``."""
    s2 = math.sin(math.radians(lat_deg)) ** 2
    w = 1 - E2 * s2
    north = math.pi / 180 * A * (1 - E2) / w**1.5
    east = math.pi / 180 * A * math.cos(math.radians(lat_deg)) / math.sqrt(w)
    return north, east


def track(
    speeds_mps, heading_deg=90.0, lat0=52.0, lon0=4.0, t0=T0, dt_s=1.0
) -> dict[str, np.ndarray]:
    """A track whose step i (from fix i to i+1) covers ``speeds_mps[i] * dt_s`` metres.

    ``heading_deg`` is a scalar or one heading per step. The receiver speed of fix i is
    the speed of the step arriving at it (the first fix gets the first step's speed).
    """
    speeds = np.asarray(speeds_mps, dtype=float)
    headings = np.broadcast_to(np.asarray(heading_deg, dtype=float), speeds.shape)
    n = speeds.shape[0] + 1
    lat = np.empty(n)
    lon = np.empty(n)
    lat[0], lon[0] = lat0, lon0
    for i, (v, h) in enumerate(zip(speeds, headings, strict=True)):
        north_m, east_m = metres_per_degree(lat[i])
        d = v * dt_s
        lat[i + 1] = lat[i] + d * math.cos(math.radians(h)) / north_m
        lon[i + 1] = lon[i] + d * math.sin(math.radians(h)) / east_m
    rx = np.concatenate([[speeds[0] if speeds.size else 0.0], speeds])
    return {"t_s": t0 + dt_s * np.arange(n), "lat_deg": lat, "lon_deg": lon, "speed_mps": rx}


def circle(speed_mps: float, radius_m: float, n: int, lat0=52.0, lon0=4.0, t0=T0, left=True):
    """Constant-speed circle at 1 Hz, counter-clockwise (left turns) by default."""
    north_m, east_m = metres_per_degree(lat0)
    ang = speed_mps / radius_m * np.arange(n) * (1 if left else -1)
    east = radius_m * np.cos(ang)
    north = radius_m * np.sin(ang)
    return {"t_s": t0 + np.arange(n, dtype=float), "lat_deg": lat0 + north / north_m,
            "lon_deg": lon0 + east / east_m, "speed_mps": np.full(n, speed_mps)}


def batch(*trips: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Concatenate trips into flat columns plus offsets."""
    keys = trips[0].keys()
    cols = {k: np.concatenate([tr[k] for tr in trips]) for k in keys}
    offsets = np.concatenate([[0], np.cumsum([len(tr["t_s"]) for tr in trips])]).astype(np.int64)
    return cols, offsets
