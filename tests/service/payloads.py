"""Small phone-like trip payloads in the wire format, built by hand for service tests."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

EARTH_M_PER_DEG_LAT = 111_320.0


def drive(duration_s: int = 1200, *, start_us: int | None = None, seed: int = 0,
          lat0: float = 52.37, lon0: float = 4.89, imu_hz: int = 0) -> dict[str, Any]:
    """A trip that pulls away, cruises at 15 m/s with a hard stop every five minutes."""
    rng = np.random.default_rng(seed)
    start_us = start_us if start_us is not None else (time.time_ns() // 1000
                                                      - (duration_s + 3600) * 1_000_000)
    t = np.arange(duration_s, dtype=np.float64)
    phase = t % 300
    speed = np.where(phase < 10, phase * 1.5, 15.0)
    speed = np.where(phase > 290, np.maximum(0.0, 15.0 - (phase - 290) * 5.0), speed)
    heading = np.radians(90.0 + 20.0 * np.sin(t / 200.0))
    north = np.cumsum(speed * np.cos(heading))
    east = np.cumsum(speed * np.sin(heading))
    lat = lat0 + north / EARTH_M_PER_DEG_LAT + rng.normal(0, 1e-6, duration_s)
    lon = lon0 + east / (EARTH_M_PER_DEG_LAT * np.cos(np.radians(lat0)))
    payload: dict[str, Any] = {"gps": {
        "seq": list(range(duration_s)),
        "t_us": [int(start_us + s * 1_000_000) for s in range(duration_s)],
        "lat_deg": lat.tolist(), "lon_deg": lon.tolist(), "speed_mps": speed.tolist(),
        "accuracy_m": rng.uniform(3, 8, duration_s).round(1).tolist(),
    }}
    if imu_hz:
        n = duration_s * imu_hz
        ti = np.arange(n) / imu_hz
        acc = np.gradient(np.interp(ti, t, speed), ti)
        payload["imu"] = {
            "seq": list(range(n)),
            "t_us": [int(start_us + x * 1_000_000) for x in ti],
            "acc_x_mps2": (acc + rng.normal(0, 0.05, n)).tolist(),
            "acc_y_mps2": rng.normal(0, 0.05, n).tolist(),
            "acc_z_mps2": (9.81 + rng.normal(0, 0.05, n)).tolist(),
        }
    return payload


def batches(device_id: str, trip_id: str, trip: dict[str, Any], n_batches: int,
            final: bool = True) -> list[dict[str, Any]]:
    """Split a trip into consecutive batches, the last one closing the trip."""
    out = []
    streams = {k: v for k, v in trip.items() if k in ("gps", "imu")}
    for b in range(n_batches):
        body: dict[str, Any] = {"device_id": device_id, "trip_id": trip_id, "batch_no": b,
                                "final": final and b == n_batches - 1}
        for name, cols in streams.items():
            n = len(cols["seq"])
            lo, hi = n * b // n_batches, n * (b + 1) // n_batches
            body[name] = {k: v[lo:hi] for k, v in cols.items()}
        out.append(body)
    return out
