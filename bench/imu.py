"""IMU path throughput: orientation and events of synthetic 25 Hz trips, one thread.

Prints a JSON object as its last line with ``imu_samples_per_s`` (accelerometer only) and
``imu_gyro_samples_per_s`` (accelerometer and gyroscope).
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np

from telematics.core.imu import process_imu

HZ = 25.0


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def synthetic_batch(n_trips: int, minutes: float, seed: int = 7) -> dict[str, np.ndarray]:
    """Trips of smooth driving with a harsh brake every 3 minutes, a random phone pose,
    noise and yaw rate. About 5 % of the time some acceleration reaches a moderate event
    threshold, as in the real NDS drives (|long| >= 1.8 or |lat| >= 2.5 m/s^2 in 5.7 % of
    their seconds)."""
    rng = np.random.default_rng(seed)
    n_imu = int(minutes * 60 * HZ)
    n_gps = int(minutes * 60)
    t = np.arange(n_imu) / HZ
    t_gps = np.arange(n_gps, dtype=np.float64)
    names = ("t", "ax", "ay", "az", "gx", "gy", "gz", "gt", "gv")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for k in range(n_trips):
        # Speed swinging between about 6 and 26 m/s with random periods of 45-120 s.
        period = rng.uniform(45.0, 120.0)
        speed = 16.0 + 10.0 * np.sin(2.0 * np.pi * t_gps / period + rng.uniform(0, 6.3))
        for start in range(60, n_gps - 10, 180):
            speed[start:] -= np.clip(np.arange(n_gps - start) * 3.5, 0.0, 7.0)
        speed = np.clip(speed, 0.0, None)
        a_long = np.interp(t, t_gps[:-1] + 0.5, np.diff(speed))
        blocks = np.repeat(rng.normal(0.0, 1.0, size=n_gps // 30 + 1), 30)[:n_gps]
        a_lat = np.interp(t, t_gps, blocks)
        force = np.stack([a_long, a_lat, np.full(n_imu, 9.80665)])
        rot = _rotation(rng)
        acc = rot @ force + rng.normal(0.0, 0.3, size=force.shape)
        yaw_rate = a_lat / np.maximum(np.interp(t, t_gps, speed), 3.0)
        body_rate = np.stack([np.zeros(n_imu), np.zeros(n_imu), yaw_rate])
        gyro = rot @ body_rate + rng.normal(0.0, 0.02, size=force.shape)
        base = k * 10_000.0
        cols["t"].append(t + base)
        cols["gt"].append(t_gps + base)
        cols["gv"].append(speed)
        for name, arr in zip(("ax", "ay", "az"), acc, strict=True):
            cols[name].append(arr)
        for name, arr in zip(("gx", "gy", "gz"), gyro, strict=True):
            cols[name].append(arr)
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["off"] = np.arange(n_trips + 1, dtype=np.int64) * n_imu
    out["goff"] = np.arange(n_trips + 1, dtype=np.int64) * n_gps
    return out


def _best_rate(batch: dict[str, np.ndarray], gyro: bool, repeats: int) -> float:
    kw = {}
    if gyro:
        kw = {"gyr_x_radps": batch["gx"], "gyr_y_radps": batch["gy"], "gyr_z_radps": batch["gz"]}
    args = (
        batch["t"],
        batch["ax"],
        batch["ay"],
        batch["az"],
        batch["off"],
        batch["gt"],
        batch["gv"],
        batch["goff"],
    )
    process_imu(*args, **kw)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        process_imu(*args, **kw)
        best = min(best, time.perf_counter() - start)
    return batch["t"].shape[0] / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trips", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20 trips, 3 repeats")
    args = parser.parse_args()
    numba.set_num_threads(1)
    if args.quick:
        args.trips, args.repeats = 20, 3
    batch = synthetic_batch(args.trips, args.minutes)
    rate = _best_rate(batch, gyro=False, repeats=args.repeats)
    rate_gyro = _best_rate(batch, gyro=True, repeats=args.repeats)
    print(f"{batch['t'].shape[0]:,} IMU samples at {HZ:g} Hz in {args.trips} trips")
    print(
        json.dumps({"imu_samples_per_s": round(rate), "imu_gyro_samples_per_s": round(rate_gyro)})
    )


if __name__ == "__main__":
    main()
