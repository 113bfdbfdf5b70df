"""Real-time scoring's one-trip path (no tables) against the batch pipeline's tables: the
same features, value for value and of the same kind, and the same events, on simulated
trips with and without the IMU and on awkward hand-made ones."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest
from tracks import T0, track

import simulator
from telematics.pipeline import TripResult, run_pipeline, run_trip_pipeline
from telematics.privacy import TripZones, ZoneOffset
from telematics.scoring import trip_outcome

GPS_COLUMNS = ("t_s", "lat_deg", "lon_deg", "speed_mps", "accuracy_m", "speed_limit_mps")
IMU_COLUMNS = ("t_s", "acc_x_mps2", "acc_y_mps2", "acc_z_mps2", "gyr_x_radps", "gyr_y_radps",
               "gyr_z_radps")


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind; NaN equals NaN."""
    if isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return _kind(a) == _kind(b) and a == b


def _kind(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "bool"
    return "int" if isinstance(value, int | np.integer) else type(value).__name__


def assert_same_trip(gps: dict[str, np.ndarray], imu: dict[str, np.ndarray] | None = None,
                     time_zone: str = "Europe/Amsterdam",
                     phone_handling: bool = True) -> TripResult:
    now_s = float(gps["t_s"].max(initial=T0)) + 3600.0
    imu_offsets = None if imu is None else np.array([0, imu["t_s"].shape[0]])
    table = run_pipeline(gps, np.array([0, gps["t_s"].shape[0]]), imu=imu,
                         imu_offsets=imu_offsets, time_zone=time_zone, now_s=now_s,
                         phone_handling=phone_handling)
    one = run_trip_pipeline(gps, imu=imu, time_zone=time_zone, now_s=now_s,
                            phone_handling=phone_handling)
    row = table.features.iloc[0]
    assert list(one.features) == list(row.index)
    different = [k for k in row.index if not _same(one.features[k], row[k])]
    assert not different, [(k, one.features[k], row[k]) for k in different[:5]]
    assert list(one.events) == list(table.events.columns)
    for name, values in one.events.items():
        expected = table.events[name].to_numpy()
        if values.dtype.kind == "f":
            np.testing.assert_array_equal(values, expected)
        else:
            assert values.tolist() == [str(v) if name in ("kind", "severity") else v
                                       for v in expected.tolist()], name
    lat, lon = gps["lat_deg"], gps["lon_deg"]
    zones = TripZones.of_trip(lat, lon, ZoneOffset(300.0, -400.0), (700.0, 800.0))
    assert trip_outcome(one.features, one.events, zones) == trip_outcome(row, table.events, zones)
    return one


def _gps(columns: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(columns[k][a:b]) for k in GPS_COLUMNS}


@pytest.fixture(scope="module")
def fleet() -> simulator.SimulationResult:
    # errstate: with NUMBA_DISABLE_JIT=1 the simulator's generator runs on numpy scalars,
    # which warn on its intended 64-bit wrap-around.
    with np.errstate(over="ignore"):
        return simulator.generate(6, 2, 5, imu=True, imu_hz=10,
                                  start_date=dt.date(2026, 10, 24))


def test_simulated_trips_with_the_imu(fleet: simulator.SimulationResult) -> None:
    gps, imu = fleet.gps, fleet.imu
    assert imu is not None
    n_trips = gps.offsets.shape[0] - 1
    events = oriented = 0
    for k in range(0, n_trips, max(n_trips // 12, 1)):
        trip_imu = {c: np.ascontiguousarray(imu.columns[c][imu.offsets[k]:imu.offsets[k + 1]])
                    for c in IMU_COLUMNS}
        trip_gps = _gps(gps.columns, gps.offsets[k], gps.offsets[k + 1])
        one = assert_same_trip(trip_gps, trip_imu if trip_imu["t_s"].size else None)
        events += one.events["trip"].size
        oriented += one.features["imu_oriented_share"] > 0
        assert_same_trip(trip_gps, phone_handling=False)
    assert events > 0 and oriented > 0


def test_simulated_trips_unsorted_with_duplicates(fleet: simulator.SimulationResult) -> None:
    gps = fleet.gps
    rng = np.random.default_rng(3)
    for k in range(3):
        trip = _gps(gps.columns, gps.offsets[k], gps.offsets[k + 1])
        order = rng.permutation(np.concatenate([np.arange(trip["t_s"].size),
                                                rng.integers(0, trip["t_s"].size, 20)]))
        assert_same_trip({c: v[order] for c, v in trip.items()})


def _hand_made(speeds: Any, t0: float = T0) -> dict[str, np.ndarray]:
    trip = track(speeds, t0=t0)
    n = trip["t_s"].size
    return {**trip, "accuracy_m": np.full(n, 5.0), "speed_limit_mps": np.full(n, 13.9)}


def test_awkward_trips() -> None:
    one = _hand_made([])
    gaps = _hand_made(np.full(60, 12.0))
    gaps["lat_deg"][10:20] = np.nan
    gaps["speed_mps"][30:35] = np.nan
    # Across local midnight in Amsterdam, with a stop and a hard brake.
    midnight = dt.datetime(2026, 10, 24, 21, 58, tzinfo=dt.UTC).timestamp()
    night = _hand_made(np.r_[np.linspace(0, 25, 30), np.full(200, 25.0),
                             np.linspace(25, 0, 6), np.zeros(30), np.full(60, 8.0)],
                       t0=midnight)
    for trip in (one, gaps, night):
        assert_same_trip(trip)
