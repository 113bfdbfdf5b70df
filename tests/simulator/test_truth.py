"""The truth tables agree with the kinematics and the sensor feeds generated from it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from simulator import SimulationResult, generate
from simulator.population import REGIONS
from simulator.sensors import geodetic

KMH = 1.0 / 3.6


def _trip_truth(result: SimulationResult, trip_id: str) -> dict[str, np.ndarray]:
    index = int(np.flatnonzero(result.trips["trip_id"].to_numpy() == trip_id)[0])
    return result.motion.item(index)


def _during(truth: dict[str, np.ndarray], start_s: float, end_s: float, pad_s: float = 0.0) -> np.ndarray:
    t = truth["t_s"]
    return (t >= start_s - pad_s) & (t <= end_s + pad_s)


def _events(result: SimulationResult, kind: str) -> pd.DataFrame:
    events = result.events[result.events["kind"] == kind]
    assert len(events) >= 5, f"too few {kind} events to check"
    return events


def test_harsh_brakes_really_decelerate(no_imu: SimulationResult) -> None:
    for event in _events(no_imu, "braking").itertuples():
        truth = _trip_truth(no_imu, event.trip_id)
        rows = _during(truth, event.t_start_s, event.t_end_s, pad_s=1.0)
        speed = truth["speed_mps"][rows]
        assert -6.0 <= event.peak_value <= -3.5
        assert event.t_end_s - event.t_start_s >= 1.0
        assert speed[0] - speed[-1] >= 3.0
        assert truth["accel_mps2"][rows].min() <= -3.2


def test_harsh_accelerations_really_accelerate(no_imu: SimulationResult) -> None:
    for event in _events(no_imu, "acceleration").itertuples():
        truth = _trip_truth(no_imu, event.trip_id)
        rows = _during(truth, event.t_start_s, event.t_end_s, pad_s=1.0)
        speed = truth["speed_mps"][rows]
        assert 3.3 <= event.peak_value <= 5.0
        assert speed[-1] - speed[0] >= 3.0
        assert truth["accel_mps2"][rows].max() >= 3.0


def test_harsh_corners_turn_fast(no_imu: SimulationResult) -> None:
    for event in _events(no_imu, "cornering").itertuples():
        assert event.peak_value >= 3.6 and event.speed_mps >= 18.0 * KMH
        truth = _trip_truth(no_imu, event.trip_id)
        rows = _during(truth, event.t_start_s, event.t_end_s, pad_s=0.5)
        assert np.abs(truth["lat_accel_mps2"][rows]).max() >= 3.0


def test_speeding_runs_exceed_the_limit(no_imu: SimulationResult) -> None:
    for event in _events(no_imu, "speeding").itertuples():
        assert event.t_end_s - event.t_start_s >= 10.0
        truth = _trip_truth(no_imu, event.trip_id)
        rows = _during(truth, event.t_start_s, event.t_end_s)
        excess = truth["speed_mps"][rows] - truth["speed_limit_mps"][rows]
        assert (excess > 8.0 * KMH).mean() >= 0.6
        # The peak can fall between 1 Hz samples, never above them.
        assert event.peak_value - 1.5 <= excess.max() <= event.peak_value + 1e-9


def test_normal_driving_stays_out_of_the_harsh_bands(no_imu: SimulationResult) -> None:
    """Outside truth events the 1 Hz kinematics never reach the DESIGN.md harsh thresholds."""
    inside = np.zeros(no_imu.motion.offsets[-1], dtype=bool)
    trip_index = {t: i for i, t in enumerate(no_imu.trips["trip_id"])}
    harsh = no_imu.events[no_imu.events["kind"].isin(["braking", "acceleration", "cornering"])]
    t_all = no_imu.motion.columns["t_s"]
    for event in harsh.itertuples():
        i = trip_index[event.trip_id]
        lo, hi = no_imu.motion.offsets[i], no_imu.motion.offsets[i + 1]
        inside[lo:hi] |= (t_all[lo:hi] >= event.t_start_s - 1.0) & (t_all[lo:hi] <= event.t_end_s + 1.0)
    accel = no_imu.motion.columns["accel_mps2"][~inside]
    lateral = np.abs(no_imu.motion.columns["lat_accel_mps2"][~inside])
    assert accel.min() > -3.2 and accel.max() < 3.0
    assert lateral.max() < 3.6
    # Most of the time normal driving is also below the moderate bands (1.8 / 2.0 m/s^2).
    assert (accel < -1.8).mean() < 0.01 and (accel > 2.0).mean() < 0.01


def test_gps_fixes_lie_near_the_true_path(no_imu: SimulationResult) -> None:
    trips = no_imu.trips
    centres = {r.code: r for r in REGIONS}
    errors = []
    for i in range(min(len(trips), 40)):
        truth = no_imu.motion.item(i)
        gps = no_imu.gps.item(i)
        rows = np.searchsorted(truth["t_s"], gps["t_s"])
        assert np.allclose(truth["t_s"][rows], gps["t_s"])
        centre = centres[trips["region"].iloc[i]]
        n = rows.shape[0]
        lat, lon = geodetic(truth["x_m"][rows], truth["y_m"][rows], np.full(n, centre.centre_lat_deg),
                            np.full(n, centre.centre_lon_deg))
        north = (gps["lat_deg"] - lat) * 111_000.0
        east = (gps["lon_deg"] - lon) * 111_000.0 * np.cos(np.radians(lat))
        errors.append(np.hypot(north, east))
    error = np.concatenate(errors)
    assert np.median(error) < 6.0
    assert np.quantile(error, 0.99) < 60.0


def test_trip_distance_matches_the_truth_speed_integral(no_imu: SimulationResult) -> None:
    for i in range(0, len(no_imu.trips), 7):
        truth = no_imu.motion.item(i)
        assert truth["dist_m"][-1] == pytest.approx(no_imu.trips["distance_m"].iloc[i], abs=1e-6)
        assert np.all(np.diff(truth["dist_m"]) >= 0.0)


@pytest.mark.parametrize(("mode", "low_mps", "high_mps"), [
    ("walk", 1.0, 1.7), ("bus", 8.0, 14.0), ("train", 25.0, 34.0), ("car_driver", 8.0, 46.0),
])
def test_transport_modes_have_plausible_speeds(no_imu: SimulationResult, mode: str, low_mps: float,
                                               high_mps: float) -> None:
    trips = no_imu.trips[no_imu.trips["mode"] == mode]
    assert len(trips) >= 2
    top = trips["max_speed_mps"]
    assert top.median() >= low_mps and top.max() <= high_mps
    assert not trips["scored"].any() if mode != "car_driver" else trips["scored"].all()


def test_gps_gaps_in_tunnels(no_imu: SimulationResult) -> None:
    road_class = no_imu.motion.columns["road_class"]
    assert (road_class == 2).any()
    gaps = np.diff(no_imu.gps.columns["t_s"])
    assert ((gaps > 5.0) & (gaps < 300.0)).any()


def test_consecutive_road_trips_join_up(no_imu: SimulationResult) -> None:
    trips = no_imu.trips
    joined = 0
    for i in range(len(trips) - 1):
        same_driver = trips["driver_id"].iloc[i] == trips["driver_id"].iloc[i + 1]
        if same_driver and "train" not in (trips["mode"].iloc[i], trips["mode"].iloc[i + 1]):
            end, start = no_imu.motion.item(i), no_imu.motion.item(i + 1)
            assert end["x_m"][-1] == pytest.approx(start["x_m"][0], abs=1e-6)
            assert end["y_m"][-1] == pytest.approx(start["y_m"][0], abs=1e-6)
            assert start["t_s"][0] > end["t_s"][-1]
            joined += 1
    assert joined > 100


def test_true_positions_measure_the_true_distance_on_the_ellipsoid(no_imu: SimulationResult) -> None:
    """Local-frame lengths are WGS84 lengths: the 1 Hz true track is within 0.1 % of distance_m."""
    centres = {r.code: r for r in REGIONS}
    a, e2 = 6378137.0, 6.69437999014e-3
    long_trips = np.flatnonzero((no_imu.trips["distance_m"] > 2_000.0).to_numpy())[:30]
    for i in long_trips:
        truth = no_imu.motion.item(int(i))
        centre = centres[no_imu.trips["region"].iloc[i]]
        n = truth["x_m"].shape[0]
        lat, lon = geodetic(truth["x_m"], truth["y_m"], np.full(n, centre.centre_lat_deg),
                            np.full(n, centre.centre_lon_deg))
        phi = np.radians(0.5 * (lat[1:] + lat[:-1]))
        w = 1.0 - e2 * np.sin(phi) ** 2
        north = a * (1.0 - e2) / w**1.5 * np.radians(np.diff(lat))
        east = a / np.sqrt(w) * np.cos(phi) * np.radians(np.diff(lon))
        track_m = np.hypot(north, east).sum()
        assert track_m == pytest.approx(no_imu.trips["distance_m"].iloc[i], rel=1e-3)


def test_long_drives_and_fatigue_breaks() -> None:
    weekend = generate(30, 2, seed=13, imu=False, start_date=dt.date(2026, 11, 7))
    trips = weekend.trips
    drives = trips[trips["purpose"] == "long_drive"]
    assert len(drives) >= 3 and (drives["n_waypoints"] >= 1).all()
    assert (drives["distance_m"] > 20_000.0).all()
    own = (trips["drive_end_s"] - trips["drive_start_s"])[trips["scored"]]
    assert (trips.loc[trips["scored"], "continuous_driving_s"] >= own - 1e-6).all()
    assert (trips["continuous_driving_s"] > 2 * 3600.0).any()
    for _, pair in drives.groupby(["driver_id", "local_date"]):
        if len(pair) == 2:  # a drive broken half way
            first, second = pair.iloc[0], pair.iloc[1]
            assert second["drive_start_s"] - first["drive_end_s"] >= 15 * 60.0
            assert second["continuous_driving_s"] == pytest.approx(
                second["drive_end_s"] - second["drive_start_s"])
