"""Simulator throughput: GPS trace generation (IMU off), IMU samples, policy-level rows.

Prints one line per measurement and, last, a JSON object with ``gps_points_per_s``,
``imu_samples_per_s`` and ``policy_rows_per_s`` (plus ``generate_gps_points_per_s``, the
whole ``generate(imu=False)`` pipeline including population, schedules and truth tables).
``gps_points_per_s`` times trace generation proper: routes, vehicle motion and GPS fixes of
planned trips. Kernels are compiled (or loaded from numba's cache) by a warm-up run first;
all kernels are serial, so every figure is single-threaded. ``--quick`` runs in under 60 s.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from simulator import Streams, generate, simulate_policies
from simulator.sensors import handling_episodes, imu_streams
from simulator.simulation import plan_simulation

T = TypeVar("T")


def _best_of(repeats: int, run: Callable[[], T]) -> tuple[float, T]:
    best = np.inf
    value = run()
    for _ in range(repeats):
        started = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - started)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    args = parser.parse_args()
    drivers, days, imu_drivers, policies, repeats = (
        (60, 7, 15, 1_000_000, 3) if args.quick else (300, 14, 60, 3_000_000, 5))

    generate(2, 1, seed=0, imu_hz=25)  # compile, or load the kernels from numba's cache
    simulate_policies(1_000, seed=0)

    plan = plan_simulation(drivers, days, seed=1)
    def run_traces() -> Streams:
        motion = plan.motion(fine=False)
        return plan.gps(motion, plan.start_times_us(motion), 1.0 / 1500.0)

    seconds, gps = _best_of(repeats, run_traces)
    n_gps = int(gps.offsets[-1])
    gps_per_s = n_gps / seconds
    print(f"trace generation (routes + motion + GPS, IMU off): {n_gps} fixes of {len(plan.plan)} "
          f"trips in {seconds:.3f} s = {gps_per_s / 1e6:.2f} M/s")

    seconds, result = _best_of(1, lambda: generate(drivers, days, seed=1, imu=False))
    generate_per_s = int(result.gps.offsets[-1]) / seconds
    print(f"generate(imu=False), whole pipeline: {generate_per_s / 1e6:.2f} M GPS fixes/s")

    imu_plan = plan_simulation(imu_drivers, days, seed=2)
    motion = imu_plan.motion(fine=True)
    n_trips = len(imu_plan.plan)
    rng = np.random.default_rng(3)
    mount_q = rng.standard_normal((n_trips, 4))
    mount_q /= np.linalg.norm(mount_q, axis=1, keepdims=True)
    t_start_us = imu_plan.start_times_us(motion)
    mode = imu_plan.plan["mode"].to_numpy()

    def run_imu() -> int:
        episodes = handling_episodes(motion, mount_q, rng)
        imu = imu_streams(motion, t_start_us, mode, 25, mount_q, episodes, imu_plan.seeds[2], rng)
        return int(imu.offsets[-1])

    seconds, n_imu = _best_of(repeats, run_imu)
    imu_per_s = n_imu / seconds
    print(f"IMU at 25 Hz: {n_imu} samples in {seconds:.3f} s = {imu_per_s / 1e6:.2f} M/s")

    seconds, frame = _best_of(repeats, lambda: simulate_policies(policies, seed=4))
    rows_per_s = len(frame) / seconds
    print(f"policy level: {len(frame)} rows in {seconds:.3f} s = {rows_per_s / 1e6:.2f} M rows/s")

    print(json.dumps({
        "gps_points_per_s": round(gps_per_s),
        "imu_samples_per_s": round(imu_per_s),
        "policy_rows_per_s": round(rows_per_s),
        "generate_gps_points_per_s": round(generate_per_s),
    }))


if __name__ == "__main__":
    main()
