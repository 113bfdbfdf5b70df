"""GPS feature core throughput: the numba path against a numpy-vectorised one, serial and
parallel, plus the IMU path and one 20-minute trip end to end.

All measurements run in this process on the same synthetic batch of 1 Hz trips. The last
line printed is a JSON object with `gps_points_per_s` (the full path: clean, segment,
then kinematics, events and features, one thread), `parallel_speedup` (the same on two
threads), `ratio_vs_numpy` (the numpy implementation below against the same stages in
the core, i.e. `compute_trip_features` on the given trips: neither segments),
`imu_samples_per_s` (null when the IMU module has no entry point) and `single_trip_ms`
(1,200 GPS fixes through `compute_trip_features` plus 30,000 IMU samples through the IMU
entry point, median after warm-up). Times are wall-clock; `gps_points_per_cpu_s` adds the
single-threaded full path per second of this process's CPU time, which is what the wall
figure would be on an idle machine (the two-core bench machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

# Idle OpenMP workers sleep instead of spinning: on a shared two-core machine a spinning
# worker steals the core the next serial measurement runs on.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from telematics.core.features import compute_trip_features, stream_trip_features
from telematics.core.params import DEFAULT_PARAMS, GpsParams

T0_S = 1_790_000_000.0
WGS84_A_M = 6378137.0
WGS84_E2 = (1 / 298.257223563) * (2 - 1 / 298.257223563)


def synthetic_trips(n_trips: int, n_points: int, seed: int = 7) -> dict[str, np.ndarray]:
    """1 Hz trips: speed mean-reverts to a cruising speed per trip, with red lights (30 s
    at rest every few minutes), occasional hard brakes, turns and fix noise."""
    rng = np.random.default_rng(seed)
    shape = (n_trips, n_points)
    cruise = rng.uniform(8.0, 33.0, n_trips)
    red = (np.arange(n_points)[None, :] + rng.integers(0, 240, (n_trips, 1))) % 240 < 30
    kick = rng.normal(0.0, 0.5, shape) - 4.5 * (rng.random(shape) < 0.004)
    speed = np.empty(shape)
    v = cruise.copy()
    for i in range(n_points):
        target = np.where(red[:, i], 0.0, cruise)
        v = np.clip(v + 0.12 * (target - v) + kick[:, i], 0.0, 40.0)
        speed[:, i] = v
    heading = np.radians(rng.uniform(0, 360, (n_trips, 1)) + np.cumsum(
        rng.normal(0.0, 4.0, shape) * (speed > 2.0), axis=1))
    lat0 = rng.uniform(45.0, 55.0, (n_trips, 1))
    s2 = np.sin(np.radians(lat0)) ** 2
    north_per_deg = math.pi / 180 * WGS84_A_M * (1 - WGS84_E2) / (1 - WGS84_E2 * s2) ** 1.5
    east_per_deg = math.pi / 180 * WGS84_A_M * np.cos(np.radians(lat0)) / np.sqrt(1 - WGS84_E2 * s2)
    lat = lat0 + np.cumsum(speed * np.cos(heading), axis=1) / north_per_deg
    lon = rng.uniform(3.0, 9.0, (n_trips, 1)) + np.cumsum(speed * np.sin(heading), axis=1) / east_per_deg
    lat += rng.normal(0.0, 1.5e-6, shape)
    t = T0_S + 3600.0 * np.arange(n_trips)[:, None] + np.arange(n_points)[None, :]
    limit = np.where(rng.random((n_trips, 1)) < 0.5, 50 / 3.6, np.nan) * np.ones(shape)
    return {
        "t_s": t.ravel(), "lat_deg": lat.ravel(), "lon_deg": lon.ravel(),
        "speed_mps": (speed + rng.normal(0, 0.1, shape)).clip(0).ravel(),
        "accuracy_m": rng.uniform(3.0, 12.0, shape).ravel(), "speed_limit_mps": limit.ravel(),
        "offsets": np.arange(n_trips + 1, dtype=np.int64) * n_points,
    }


def full_gps_path(b: dict[str, np.ndarray], parallel: bool) -> Any:
    """Clean, segment, then kinematics, events and features of the segmented trips, in
    the core's one pass over the streams (the same result as the three steps chained,
    see tests/core/test_stream.py)."""
    return stream_trip_features(
        b["t_s"], b["lat_deg"], b["lon_deg"], b["offsets"], speed_mps=b["speed_mps"],
        accuracy_m=b["accuracy_m"], speed_limit_mps=b["speed_limit_mps"],
        time_zone="Europe/Amsterdam", now_s=T0_S + 1e7, parallel=parallel,
    )


def numpy_features(b: dict[str, np.ndarray], p: GpsParams = DEFAULT_PARAMS) -> dict[str, Any]:
    """The same GPS features vectorised with numpy over the whole batch (no segmentation
    search: trips are taken as given; events by run-length arithmetic)."""
    t, lat, lon = b["t_s"], b["lat_deg"], b["lon_deg"]
    offsets = b["offsets"]
    n = t.shape[0]
    trip = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
    first = np.zeros(n, dtype=bool)
    first[offsets[:-1]] = True
    ok = (b["accuracy_m"] <= p.max_accuracy_m) & ~((lat == 0) & (lon == 0)) & np.isfinite(lat)
    phi = np.radians(lat)
    w = 1 - WGS84_E2 * np.sin(phi) ** 2
    big_n = WGS84_A_M / np.sqrt(w)
    m_r = big_n * (1 - WGS84_E2) / w
    nc = big_n * np.cos(phi)
    dt = np.diff(t, prepend=t[0])
    north = np.diff(phi, prepend=phi[0]) * 0.5 * (m_r + np.roll(m_r, 1))
    east = np.radians(np.diff(lon, prepend=lon[0])) * 0.5 * (nc + np.roll(nc, 1))
    dist = np.hypot(east, north)
    step_ok = ~first & ok & np.roll(ok, 1) & (dt > 0)
    ok &= ~(step_ok & (dist > p.max_implied_speed_mps * dt))
    gap = first | ~step_ok | (dt > p.gap_s)
    dist = np.where(first, 0.0, dist)
    speed = np.where(np.isfinite(b["speed_mps"]), b["speed_mps"],
                     np.divide(dist, dt, out=np.zeros(n), where=dt > 0))
    accel = np.full(n, np.nan)
    nxt_ok = ~np.roll(gap, -1)
    nxt_ok[-1] = False
    accel[nxt_ok] = (np.roll(speed, -1) - speed)[nxt_ok] / np.roll(dt, -1)[nxt_ok]
    heading = np.arctan2(east, north)
    turn = (np.diff(heading, prepend=heading[0]) + np.pi) % (2 * np.pi) - np.pi
    lateral = np.where(gap, np.nan, speed * turn / np.where(dt > 0, dt, 1.0))

    def runs(mask: np.ndarray, min_s: float, merge_s: float) -> np.ndarray:
        edges = np.diff(mask.astype(np.int8), prepend=0, append=0)
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        keep = (t[ends - 1] + 1.0 - t[starts] >= min_s) & (trip[starts] == trip[ends - 1])
        starts, ends = starts[keep], ends[keep]
        new = np.ones(starts.shape[0], dtype=bool)
        new[1:] = (t[starts[1:]] - t[ends[:-1] - 1] - 1.0 >= merge_s) | (
            trip[starts[1:]] != trip[starts[:-1]])
        return np.asarray(np.bincount(trip[starts[new]], minlength=offsets.shape[0] - 1))

    n_brake = runs(accel <= -p.brake_harsh_mps2, p.harsh_min_duration_s, p.harsh_merge_s)
    n_brake_mod = runs(accel <= -p.brake_moderate_mps2, p.harsh_min_duration_s, p.harsh_merge_s)
    n_accel = runs(accel >= p.accel_harsh_mps2, p.harsh_min_duration_s, p.harsh_merge_s)
    n_corner = runs(np.abs(lateral) >= p.corner_lateral_mps2, p.harsh_min_duration_s,
                    p.harsh_merge_s)
    limit = np.where(b["speed_limit_mps"] > 0, b["speed_limit_mps"] + p.speeding_tolerance_mps,
                     p.speeding_fallback_limit_mps)
    n_speeding = runs(speed >= limit, p.speeding_min_duration_s, p.speeding_merge_s)
    step_dt = np.where(gap, 0.0, dt)
    moving = speed >= p.moving_speed_mps
    hour = ((t + 3600.0) % 86400.0) / 3600.0
    night = (hour >= p.night_start_h) | (hour < p.night_end_h)
    kernel = np.ones(int(p.context_window_s) + 1) / (p.context_window_s + 1)
    context = np.convolve(speed, kernel, mode="same")
    sbin = np.digitize(speed, p.heatmap_speed_edges_mps) - 1
    abin = np.digitize(accel, p.heatmap_accel_edges_mps2) - 1
    n_a = len(p.heatmap_accel_edges_mps2) - 1
    n_v = len(p.heatmap_speed_edges_mps) - 1
    in_map = (sbin >= 0) & (sbin < n_v) & (abin >= 0) & (abin < n_a) & ~gap
    n_cells = n_v * n_a
    heat = np.bincount(trip[in_map] * n_cells + sbin[in_map] * n_a + abin[in_map],
                       weights=step_dt[in_map], minlength=(offsets.shape[0] - 1) * n_cells)
    red = offsets[:-1]
    return {
        "distance_m": np.add.reduceat(dist, red), "moving_s": np.add.reduceat(step_dt * moving, red),
        "idle_s": np.add.reduceat(step_dt * ~moving, red),
        "night_m": np.add.reduceat(dist * night, red),
        "urban_m": np.add.reduceat(dist * (context < p.urban_max_mps), red),
        "motorway_m": np.add.reduceat(dist * (context >= p.motorway_min_mps), red),
        "speed_max_mps": np.maximum.reduceat(speed, red), "n_brake": n_brake,
        "n_brake_moderate": n_brake_mod, "n_accel": n_accel, "n_corner": n_corner,
        "n_speeding": n_speeding, "heat": heat, "kept": np.add.reduceat(ok, red),
    }


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def synthetic_imu(n_trips: int, seconds: int, hz: int = 25, seed: int = 3) -> dict[str, Any]:
    """A phone lying rotated in the car: vehicle accelerations seen through a fixed rotation."""
    rng = np.random.default_rng(seed)
    n = seconds * hz
    a_long = np.repeat(rng.normal(0, 0.8, (n_trips, seconds)), hz, axis=1)
    a_lat = np.repeat(rng.normal(0, 0.5, (n_trips, seconds)), hz, axis=1)
    g = 9.80665
    rot = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, 0.6], [-0.6, 0.0, 0.8]])
    vehicle = np.stack([a_long, a_lat, np.full_like(a_long, g)], axis=-1)
    phone = vehicle @ rot.T + rng.normal(0, 0.05, (n_trips, n, 3))
    speed = np.clip(12 + np.cumsum(a_long[:, ::hz], axis=1), 0, 38)
    return {
        "imu_t_s": (T0_S + np.arange(n_trips)[:, None] * 3600.0 + np.arange(n)[None] / hz).ravel(),
        "acc": [phone[..., k].ravel() for k in range(3)],
        "imu_offsets": np.arange(n_trips + 1, dtype=np.int64) * n,
        "gps_t_s": (T0_S + np.arange(n_trips)[:, None] * 3600.0 + np.arange(seconds)[None]).ravel(),
        "gps_speed_mps": speed.ravel(),
        "gps_offsets": np.arange(n_trips + 1, dtype=np.int64) * seconds,
    }


def imu_runner(imu: dict[str, Any]) -> Callable[[], Any] | None:
    """The IMU engineer's batch entry point over ``imu``, if telematics.core.imu has one."""
    try:
        from telematics.core.imu import process_imu
    except ImportError:
        return None

    def run() -> Any:
        return process_imu(imu["imu_t_s"], *imu["acc"], imu["imu_offsets"], imu["gps_t_s"],
                           imu["gps_speed_mps"], imu["gps_offsets"])

    try:
        run()
    except (TypeError, ValueError):
        return None
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under 60 s")
    args = parser.parse_args()
    n_trips = 1000 if args.quick else 4000
    repeats = 3 if args.quick else 5
    batch = synthetic_trips(n_trips, 1200)
    n_points = batch["t_s"].shape[0]

    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    full_gps_path(batch, parallel=False)
    full_gps_path(batch, parallel=True)
    # Serial and parallel runs alternate, so that a change of load on the shared machine
    # hits both sides of the speedup alike.
    serial_s = serial_cpu_s = parallel_s = math.inf
    for _ in range(repeats):
        numba.set_num_threads(1)
        cpu_start = time.process_time()
        serial_s = min(serial_s, best_of(lambda: full_gps_path(batch, parallel=False), 1))
        serial_cpu_s = min(serial_cpu_s, time.process_time() - cpu_start)
        numba.set_num_threads(threads)
        parallel_s = min(parallel_s, best_of(lambda: full_gps_path(batch, parallel=True), 1))
    numba.set_num_threads(1)
    features_only_s = best_of(lambda: compute_trip_features(
        batch["t_s"], batch["lat_deg"], batch["lon_deg"], batch["offsets"],
        speed_mps=batch["speed_mps"], accuracy_m=batch["accuracy_m"],
        speed_limit_mps=batch["speed_limit_mps"], time_zone="Europe/Amsterdam",
        now_s=T0_S + 1e7), repeats)
    numpy_s = best_of(lambda: numpy_features(batch), 2)

    one = synthetic_trips(1, 1200, seed=11)
    imu_one = synthetic_imu(1, 1200)
    imu_one_run = imu_runner(imu_one)

    def single_trip() -> None:
        compute_trip_features(one["t_s"], one["lat_deg"], one["lon_deg"],
                              speed_mps=one["speed_mps"], accuracy_m=one["accuracy_m"],
                              speed_limit_mps=one["speed_limit_mps"],
                              time_zone="Europe/Amsterdam", now_s=T0_S + 1e7)
        if imu_one_run is not None:
            imu_one_run()

    single_trip()
    single_s = sorted(best_of(single_trip, 1) for _ in range(31))[15]

    imu_points_per_s = None
    imu = synthetic_imu(20 if args.quick else 160, 1200)
    imu_run = imu_runner(imu)
    if imu_run is not None:
        imu_points_per_s = imu["imu_t_s"].shape[0] / best_of(imu_run, repeats)

    print(f"batch: {n_trips} trips x 1200 points = {n_points:,} GPS points")
    print(f"full GPS path, 1 thread:       {serial_s * 1e3:8.1f} ms  {n_points / serial_s / 1e6:6.2f} M pts/s"
          f"  ({serial_cpu_s * 1e3:.1f} ms of CPU: {n_points / serial_cpu_s / 1e6:.2f} M pts per CPU-s)")
    print(f"features only, 1 thread:       {features_only_s * 1e3:8.1f} ms  {n_points / features_only_s / 1e6:6.2f} M pts/s")
    print(f"full GPS path, {threads} threads:      {parallel_s * 1e3:8.1f} ms  speedup {serial_s / parallel_s:.2f}x")
    print(f"numpy vectorised features:     {numpy_s * 1e3:8.1f} ms  {n_points / numpy_s / 1e6:6.2f} M pts/s"
          f"  (core {numpy_s / features_only_s:.2f}x faster on the same stages)")
    if imu_points_per_s is not None:
        print(f"IMU path, 1 thread:            {imu_points_per_s / 1e6:6.2f} M samples/s")
    print(f"one 20-min trip end to end:    {single_s * 1e3:8.3f} ms (median of 31)")
    print(json.dumps({
        "gps_points_per_s": round(n_points / serial_s),
        "gps_points_per_cpu_s": round(n_points / serial_cpu_s),
        "parallel_speedup": round(serial_s / parallel_s, 3),
        "ratio_vs_numpy": round(numpy_s / features_only_s, 3),
        "imu_samples_per_s": None if imu_points_per_s is None else round(imu_points_per_s),
        "single_trip_ms": round(single_s * 1e3, 3),
    }))


if __name__ == "__main__":
    main()
