"""Phone IMU: gravity and vehicle motion seen through the random mount, handling episodes."""

from __future__ import annotations

import numpy as np

from simulator import SimulationResult
from simulator._sensor_kernels import GRAVITY_MPS2


def _matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _acc(imu: dict[str, np.ndarray]) -> np.ndarray:
    return np.column_stack([imu["acc_x_mps2"], imu["acc_y_mps2"], imu["acc_z_mps2"]])


def _first_handling_s(result: SimulationResult, trip_id: str) -> float:
    ev = result.events[(result.events["trip_id"] == trip_id) & (result.events["kind"] == "phone_handling")]
    return float(ev["t_start_s"].min()) if len(ev) else np.inf


def test_gravity_at_rest_points_along_the_mount(with_imu: SimulationResult) -> None:
    assert with_imu.imu is not None
    checked = 0
    for i, trip in enumerate(with_imu.trips.itertuples()):
        imu = with_imu.imu.item(i)
        rest = imu["t_s"] < trip.t_start_s + 5.0
        if _first_handling_s(with_imu, trip.trip_id) < trip.t_start_s + 6.0 or trip.mode == "walk":
            continue
        mean = _acc(imu)[rest].mean(axis=0)
        assert abs(np.linalg.norm(mean) - GRAVITY_MPS2) < 0.5
        mount = _matrix(np.array([trip.mount_qw, trip.mount_qx, trip.mount_qy, trip.mount_qz]))
        np.testing.assert_allclose(mean, mount.T @ np.array([0.0, 0.0, GRAVITY_MPS2]), atol=0.5)
        checked += 1
    assert checked >= 10


def test_rotating_back_to_the_vehicle_frame_recovers_the_acceleration(with_imu: SimulationResult) -> None:
    assert with_imu.imu is not None
    checked = 0
    for i, trip in enumerate(with_imu.trips.itertuples()):
        if trip.mode != "car_driver":
            continue
        imu = with_imu.imu.item(i)
        truth = with_imu.motion.item(i)
        until = _first_handling_s(with_imu, trip.trip_id)
        rows = np.searchsorted(imu["t_s"], truth["t_s"] - 1e-6)
        keep = (truth["t_s"] < until - 1.0) & (rows < imu["t_s"].shape[0])
        if keep.sum() < 60:
            continue
        mount = _matrix(np.array([trip.mount_qw, trip.mount_qx, trip.mount_qy, trip.mount_qz]))
        vehicle = _acc(imu)[rows[keep]] @ mount.T
        forward = truth["accel_mps2"][keep]
        assert np.corrcoef(vehicle[:, 0], forward)[0, 1] > 0.9
        np.testing.assert_allclose(vehicle[:, 2].mean(), GRAVITY_MPS2, atol=0.3)
        checked += 1
    assert checked >= 3


def test_handling_moves_the_phone(with_imu: SimulationResult) -> None:
    assert with_imu.imu is not None
    index = {t: i for i, t in enumerate(with_imu.trips["trip_id"])}
    angles = []
    for event in with_imu.events[with_imu.events["kind"] == "phone_handling"].itertuples():
        if event.t_end_s - event.t_start_s < 4.0:
            continue
        i = index[event.trip_id]
        imu = with_imu.imu.item(i)
        acc = _acc(imu)
        before = acc[(imu["t_s"] > event.t_start_s - 3.0) & (imu["t_s"] < event.t_start_s)].mean(axis=0)
        held = acc[(imu["t_s"] > event.t_start_s + 1.0) & (imu["t_s"] < event.t_end_s - 1.0)].mean(axis=0)
        cos = before @ held / np.linalg.norm(before) / np.linalg.norm(held)
        angles.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    assert len(angles) >= 5
    assert np.median(angles) > 20.0
