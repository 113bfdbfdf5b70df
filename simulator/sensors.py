"""Sensor feeds from the kinematic truth: phone GPS and IMU, and OBD dongles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator._motion_kernels import (
    KIND_PHONE_HANDLING,
    MODE_CAR_DRIVER,
    MODE_TRAIN,
    MODE_WALK,
    PHASE_DRIVE,
    STEPS_PER_S,
)
from simulator._sensor_kernels import _geodetic_many, _gps_fixes, _imu_samples
from simulator.motion import Motion

_US = 1_000_000


@dataclass(frozen=True)
class Streams:
    """Samples of many trips (or feeds) as flat columns; item ``i`` owns ``offsets[i]:offsets[i+1]``."""

    offsets: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def item(self, i: int) -> dict[str, np.ndarray]:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return {name: values[lo:hi] for name, values in self.columns.items()}


def _offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def second_times_s(motion: Motion, t_start_us: np.ndarray) -> np.ndarray:
    """Epoch seconds of every 1 Hz truth row."""
    counts = np.diff(motion.sec_offsets)
    index = np.arange(motion.sec_offsets[-1]) - np.repeat(motion.sec_offsets[:-1], counts)
    return (np.repeat(t_start_us, counts) + index * _US) / _US


def geodetic(x_m: np.ndarray, y_m: np.ndarray, lat0_deg: np.ndarray,
             lon0_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local metric coordinates around per-row region centres to WGS84 degrees."""
    lat = np.empty(x_m.shape[0])
    lon = np.empty(x_m.shape[0])
    _geodetic_many(np.ascontiguousarray(x_m, dtype=np.float64), np.ascontiguousarray(y_m, dtype=np.float64),
                   np.ascontiguousarray(lat0_deg, dtype=np.float64),
                   np.ascontiguousarray(lon0_deg, dtype=np.float64), lat, lon)
    return lat, lon


def gps_streams(motion: Motion, t_start_us: np.ndarray, mode: np.ndarray, lat0_deg: np.ndarray,
                lon0_deg: np.ndarray, altitude_m: np.ndarray, seed: np.ndarray,
                rng: np.random.Generator, jump_prob: float) -> Streams:
    """1 Hz phone fixes with correlated noise, cold starts, jumps and tunnel dropouts."""
    n_trips = t_start_us.shape[0]
    noise_scale = np.where(mode == MODE_TRAIN, 2.0, 1.0) * rng.uniform(0.8, 1.3, n_trips)
    limit_known = (rng.random(n_trips) < 0.9) & (mode != MODE_TRAIN)
    open_sky = (motion.tunnel == 0).astype(np.int64)
    counts = np.add.reduceat(open_sky, motion.sec_offsets[:-1]) if n_trips else open_sky[:0]
    offsets = _offsets_from_counts(counts)
    n = int(offsets[-1])
    names = ("t_s", "lat_deg", "lon_deg", "speed_mps", "heading_deg", "accuracy_m", "altitude_m",
             "speed_limit_mps")
    columns = {name: np.empty(n) for name in names}
    _gps_fixes(motion.sec_offsets, motion.x_m, motion.y_m, motion.speed_mps, motion.heading_rad,
               motion.limit_mps, motion.road_class, motion.tunnel, motion.phase, seed,
               np.ascontiguousarray(t_start_us, dtype=np.int64), lat0_deg, lon0_deg, altitude_m,
               noise_scale, limit_known, jump_prob, offsets, *(columns[name] for name in names))
    return Streams(offsets, columns)


def _random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q


@dataclass(frozen=True)
class HandlingEpisodes:
    """Phone-handling episodes per trip: times from the trip start and the orientations."""

    offsets: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    hold_q: np.ndarray
    final_q: np.ndarray


def handling_episodes(motion: Motion, mount_q: np.ndarray, rng: np.random.Generator) -> HandlingEpisodes:
    """Orientations of each handling episode: held at random, then back to the mount or elsewhere."""
    n_trips = mount_q.shape[0]
    is_handling = motion.event_kind == KIND_PHONE_HANDLING
    trip = motion.event_trip[is_handling]
    order = np.argsort(trip, kind="stable")
    trip = trip[order]
    duration_s = (np.diff(motion.sec_offsets) - 1).astype(np.float64)
    start_s = motion.event_start_step[is_handling][order] / STEPS_PER_S
    end_s = np.minimum(motion.event_end_step[is_handling][order] / STEPS_PER_S, duration_s[trip])
    hold_q = _random_quaternions(trip.shape[0], rng)
    final_q = _random_quaternions(trip.shape[0], rng)
    back_to_mount = rng.random(trip.shape[0]) < 0.5
    before = mount_q[trip].copy()
    for k in range(trip.shape[0]):
        if k > 0 and trip[k - 1] == trip[k]:
            before[k] = final_q[k - 1]
        if back_to_mount[k]:
            final_q[k] = before[k]
    counts = np.bincount(trip, minlength=n_trips)
    return HandlingEpisodes(_offsets_from_counts(counts), start_s, end_s, hold_q, final_q)


def imu_streams(motion: Motion, t_start_us: np.ndarray, mode: np.ndarray, imu_hz: int,
                mount_q: np.ndarray, episodes: HandlingEpisodes, seed: np.ndarray,
                rng: np.random.Generator) -> Streams:
    """Phone IMU at ``imu_hz`` in the phone's frame (accelerometer as specific force)."""
    n_trips = t_start_us.shape[0]
    n_fine = np.diff(motion.fine_offsets)
    counts = (n_fine - 1) * imu_hz // STEPS_PER_S + 1
    offsets = _offsets_from_counts(counts)
    n = int(offsets[-1])
    names = ("acc_x_mps2", "acc_y_mps2", "acc_z_mps2", "gyr_x_radps", "gyr_y_radps", "gyr_z_radps")
    cols = {name: np.empty(n) for name in names}
    acc_bias = rng.normal(0.0, 0.08, (n_trips, 3))
    gyr_bias = rng.normal(0.0, 0.003, (n_trips, 3))
    t_s = np.empty(n)
    _imu_samples(motion.fine_offsets, motion.fine_speed_mps, motion.fine_accel_mps2,
                 motion.fine_curv_1pm, float(STEPS_PER_S), imu_hz, offsets, t_start_us,
                 mode == MODE_WALK, seed, mount_q, acc_bias, gyr_bias, episodes.offsets,
                 episodes.start_s, episodes.end_s, episodes.hold_q, episodes.final_q, t_s,
                 *(cols[name] for name in names))
    return Streams(offsets, {"t_s": t_s, **cols})


# Engine speed per m/s of road speed in each gear, and the road speeds where gears change.
_RPM_PER_MPS = np.array([300.0, 170.0, 120.0, 95.0, 78.0, 65.0])
_GEAR_UP_MPS = np.array([5.0, 9.0, 14.0, 19.0, 25.0])
_IDLE_RPM = 800.0


def obd_streams(motion: Motion, trips: pd.DataFrame, drivers: pd.DataFrame,
                rng: np.random.Generator) -> tuple[Streams, pd.DataFrame]:
    """Dongle feeds (one per vehicle and local day) of the drivers' own car trips.

    Samples run at 1 Hz from ignition on (3 s before moving off) to 3 s after parking, then one
    ignition-off sample; the odometer accumulates the vehicle's true distance.
    """
    has_obd = drivers.set_index("driver_id")["has_obd"]
    own = trips.index[(trips["mode_code"] == MODE_CAR_DRIVER)
                      & trips["driver_id"].map(has_obd).to_numpy(dtype=bool)].to_numpy()
    odometer_m = {int(d): float(rng.uniform(5_000.0, 150_000.0)) * 1000.0
                  for d in drivers["driver_id"][drivers["has_obd"]]}
    calibration = {d: 1.0 + 0.01 * float(rng.standard_normal()) for d in odometer_m}
    feeds: dict[tuple[int, str], list[dict[str, np.ndarray]]] = {}
    trip_driver = trips["driver_id"].to_numpy()
    trip_date = trips["local_date"].to_numpy()
    trip_t0_us = trips["t_start_us"].to_numpy()
    for t in own:
        driver = int(trip_driver[t])
        lo = int(motion.sec_offsets[t])
        hi = int(motion.sec_offsets[t + 1])
        drive = np.flatnonzero(motion.phase[lo:hi] == PHASE_DRIVE)
        first = max(0, int(drive[0]) - 3)
        last = min(hi - lo - 1, int(drive[-1]) + 3)
        rows = slice(lo + first, lo + last + 1)
        v = motion.speed_mps[rows]
        a = motion.accel_mps2[rows]
        dist = motion.dist_m[rows]
        odo = odometer_m[driver] + dist
        odometer_m[driver] += float(motion.trip_dist_m[t])
        gear = np.searchsorted(_GEAR_UP_MPS, v)
        noise = rng.standard_normal(v.shape[0])
        rpm = np.maximum(_IDLE_RPM, v * _RPM_PER_MPS[gear]) + 400.0 * np.maximum(a, 0.0) + 15.0 * noise
        moving = v > 0.05
        t0 = int(trip_t0_us[t])
        seconds = np.arange(first, last + 2, dtype=np.int64)
        sample = {
            "t_us": t0 + seconds * _US,
            "speed_kmh": np.append(np.rint(v * 3.6 * calibration[driver]), 0).astype(np.int64),
            "rpm": np.append(np.round(rpm, 0), 0.0),
            "odometer_km": np.floor(np.append(odo, odo[-1]) / 100.0) / 10.0,
            "ignition": np.append(np.ones(v.shape[0], dtype=np.bool_), False),
            "throttle_pct": np.append(np.where(moving, np.clip(15.0 + 20.0 * a + 0.6 * v, 0.0, 100.0),
                                               0.0).round(1), 0.0),
        }
        feeds.setdefault((driver, str(trip_date[t])), []).append(sample)
    keys = sorted(feeds)
    counts = np.array([sum(s["t_us"].shape[0] for s in feeds[k]) for k in keys], dtype=np.int64)
    dtypes = {"t_us": np.int64, "speed_kmh": np.int64, "rpm": np.float64,
              "odometer_km": np.float64, "ignition": np.bool_, "throttle_pct": np.float64}
    columns: dict[str, np.ndarray] = {}
    for name, dtype in dtypes.items():
        parts = [s[name] for k in keys for s in feeds[k]]
        columns[name] = np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype=dtype)
    t_us = columns.pop("t_us")
    streams = Streams(_offsets_from_counts(counts), {"t_s": t_us / _US, **columns})
    feed_table = pd.DataFrame({
        "device_id": [f"obd-{d:06d}" for d, _ in keys],
        "feed_id": [f"f-{d:06d}-{day}" for d, day in keys],
        "driver_id": np.array([d for d, _ in keys], dtype=np.int64),
        "local_date": [day for _, day in keys],
    })
    return streams, feed_table
