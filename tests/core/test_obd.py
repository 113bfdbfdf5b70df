"""OBD feeds: trips by ignition and by motion, odometer and speed distance, GPS
reconciliation, awkward input."""

from __future__ import annotations

import numpy as np
import pytest

from telematics.core.obd import ObdParams, find_obd_trips, reconcile_with_gps


def feed(speed_kmh: np.ndarray, start_odo_km: float = 48213.43):
    """1 Hz feed with an odometer of 0.1 km resolution (truncated, as clusters show it)."""
    t = np.arange(speed_kmh.size, dtype=np.float64)
    true_km = start_odo_km + np.concatenate(
        ([0.0], np.cumsum(0.5 * (speed_kmh[1:] + speed_kmh[:-1]) / 3600.0))
    )
    odo = np.floor(true_km * 10.0 + 1e-9) / 10.0
    return t, odo, (true_km[-1] - true_km[0]) * 1000.0


def profile(*parts: tuple[float, float]) -> np.ndarray:
    """Concatenated (seconds, km/h) constant pieces."""
    return np.concatenate([np.full(int(s), v) for s, v in parts])


def test_hand_computable_speed_distance():
    """36 km/h is 10 m/s: 100 s of it is 1,000 m (plus the ramps of the trapezoid)."""
    speed = profile((5, 0), (101, 36), (5, 0))
    t, odo, true_m = feed(speed)
    trips = find_obd_trips(t, speed, odometer_km=odo)
    assert trips.start_index.tolist() == [4]
    assert trips.end_index.tolist() == [107]
    assert trips.speed_dist_m[0] == pytest.approx(1010.0)
    assert true_m == pytest.approx(1010.0)
    # Ticks anchor the odometer: exact to about one second of driving, while the plain
    # difference of the truncated readings is quantised to 0.1 km.
    assert trips.odometer_dist_m[0] == pytest.approx(true_m, abs=10.0)
    assert trips.odometer_raw_m[0] in (pytest.approx(900.0), pytest.approx(1000.0))
    assert trips.dist_m[0] == trips.odometer_dist_m[0]
    assert not trips.by_ignition[0]


def test_motion_trips_split_only_at_long_stops():
    speed = profile((10, 0), (300, 50), (120, 0), (300, 40), (200, 0), (60, 30), (10, 0))
    t, odo, _ = feed(speed)
    trips = find_obd_trips(t, speed, odometer_km=odo)
    # The 120 s stop (a red light) stays inside the first trip; 200 s splits.
    assert trips.start_index.tolist() == [9, 929]
    assert trips.end_index.tolist() == [731, 991]
    np.testing.assert_allclose(trips.end_t_s - trips.start_t_s, [721.0, 61.0])
    # A data gap of 200 s also splits a motion feed.
    gap = np.arange(200) + 0.0
    t2 = np.concatenate((gap, gap + 400.0))
    v2 = np.full(400, 30.0)
    assert len(find_obd_trips(t2, v2).start_index) == 2


def test_ignition_trips_include_idling_and_hold_unknown_state():
    speed = profile((60, 0), (100, 30), (60, 0), (100, 0), (50, 20))
    ign = np.concatenate((np.ones(220), np.zeros(100), np.ones(50)))
    ign[100:110] = np.nan  # dropout while on
    t, odo, _ = feed(speed)
    trips = find_obd_trips(t, speed, ignition=ign, odometer_km=odo)
    assert trips.start_index.tolist() == [0, 320]
    assert trips.end_index.tolist() == [220, 370]
    assert trips.by_ignition.all()
    assert trips.speed_dist_m[0] == pytest.approx(100 * 30 / 3.6, rel=0.02)
    # A long data gap splits an ignition-on run too.
    t_gap = t.copy()
    t_gap[200:] += 4000.0
    assert len(find_obd_trips(t_gap, speed, ignition=ign).start_index) == 3


def test_odometer_glitch_and_reset_are_skipped():
    speed = profile((2, 0), (600, 60), (2, 0))
    t, odo, true_m = feed(speed)
    odo = odo.copy()
    odo[100] += 50.0  # a glitch: +50 km in one second, then back
    odo[400:] -= odo[400] - 0.0  # the dongle reset its counter to 0
    trips = find_obd_trips(t, speed, odometer_km=odo)
    assert trips.odometer_dist_m[0] == pytest.approx(true_m, abs=30.0)
    assert trips.odometer_raw_m[0] == pytest.approx(true_m, abs=200.0)


def test_without_odometer_speed_is_the_distance_and_nan_speed_is_skipped():
    speed = profile((1, 0), (100, 72), (1, 0)).astype(float)
    t = np.arange(speed.size, dtype=np.float64)
    speed[50] = np.nan
    trips = find_obd_trips(t, speed)
    assert np.isnan(trips.odometer_dist_m[0]) and np.isnan(trips.odometer_raw_m[0])
    assert trips.dist_m[0] == trips.speed_dist_m[0] == pytest.approx(2000.0 - 40.0)


def test_reconciliation_reports_relative_discrepancy():
    speed = profile((3, 0), (300, 54), (3, 0))
    t, odo, true_m = feed(speed)
    trips = find_obd_trips(t + 1000.0, speed, odometer_km=odo)
    gps_t = np.arange(990.0, 1320.0)
    step = np.where((gps_t > 1003.0) & (gps_t <= 1303.0), 15.0 * 1.02, 0.0)  # GPS 2 % longer
    rec = reconcile_with_gps(trips, gps_t, step)
    assert rec.gps_dist_m[0] == pytest.approx(300 * 15.0 * 1.02)
    assert rec.speed_rel_error[0] == pytest.approx(true_m / (300 * 15.3) - 1.0, abs=0.005)
    assert rec.odometer_rel_error[0] == pytest.approx(-0.02, abs=0.005)
    none = reconcile_with_gps(trips, np.zeros(0), np.zeros(0))
    assert np.isnan(none.gps_dist_m[0]) and np.isnan(none.dist_rel_error[0])


def test_many_feeds_equal_one_by_one():
    a = profile((5, 0), (200, 40), (5, 0))
    b = profile((5, 0), (50, 10), (300, 0), (80, 20), (5, 0))
    ta, oa, _ = feed(a)
    tb, ob, _ = feed(b, 1000.0)
    both = find_obd_trips(
        np.concatenate((ta, tb)),
        np.concatenate((a, b)),
        [0, a.size, a.size, a.size + b.size],
        odometer_km=np.concatenate((oa, ob)),
    )
    assert both.feed.tolist() == [0, 2, 2]
    single = find_obd_trips(tb, b, odometer_km=ob)
    np.testing.assert_array_equal(both.start_index[1:] - a.size, single.start_index)
    np.testing.assert_allclose(both.speed_dist_m[1:], single.speed_dist_m)


def test_awkward_inputs():
    empty = find_obd_trips(np.zeros(0), np.zeros(0))
    assert empty.start_index.size == 0 and empty.dist_m.size == 0
    one = find_obd_trips([5.0], [30.0])
    assert one.start_index.tolist() == [0] and one.speed_dist_m[0] == 0.0
    standing = find_obd_trips(np.arange(10.0), np.zeros(10))
    assert standing.start_index.size == 0
    dup = find_obd_trips([0.0, 1.0, 1.0, 2.0], [36.0, 36.0, 36.0, 36.0])
    assert dup.speed_dist_m[0] == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"t_s": [0.0, 2.0, 1.0], "speed_kmh": [0.0, 1.0, 2.0]}, "t_s"),
        ({"t_s": [0.0, np.nan], "speed_kmh": [0.0, 1.0]}, "t_s"),
        ({"t_s": [0.0, 1.0], "speed_kmh": [0.0]}, "speed_kmh"),
        ({"t_s": [0.0, 1.0], "speed_kmh": [0.0, -1.0]}, "speed_kmh"),
        ({"t_s": [0.0, 1.0], "speed_kmh": [0.0, 1.0], "ignition": [2.0, 1.0]}, "ignition"),
        ({"t_s": [0.0, 1.0], "speed_kmh": [0.0, 1.0], "odometer_km": [np.inf, 1.0]}, "odometer_km"),
        ({"t_s": [0.0, 1.0], "speed_kmh": [0.0, 1.0], "offsets": [0, 1]}, "offsets"),
    ],
)
def test_invalid_input_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        find_obd_trips(**kwargs)


def test_params_validated():
    with pytest.raises(ValueError, match="stop_min_s"):
        ObdParams(stop_min_s=0.0)
