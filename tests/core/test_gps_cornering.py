"""GPS cornering events of the fused trip kernel against the slow reference in naive.py."""

import itertools
import math

import numpy as np
import pytest
from naive import clean, corner_lateral, gps_corner_events
from tracks import T0, batch, metres_per_degree, track

from telematics.core.features import compute_trip_features
from telematics.core.params import KMH, GpsParams

P = GpsParams()
NOW = T0 + 1e7


def _kernel_corners(cols, offsets=None, params=P):
    out = compute_trip_features(cols["t_s"], cols["lat_deg"], cols["lon_deg"], offsets,
                                speed_mps=cols["speed_mps"], accuracy_m=cols["accuracy_m"],
                                now_s=NOW, params=params)
    ev = out.events[out.events["kind"] == "cornering"]
    return sorted(zip(ev["trip"].tolist(), ev["start_t_s"].tolist(), ev["end_t_s"].tolist(),
                      ev["peak_value"].tolist(), ev["severity"].tolist(),
                      ev["speed_mps"].tolist(), ev["lat_deg"].tolist(), ev["lon_deg"].tolist(),
                      strict=True))


def _reference_corners(cols, offsets=None, params=P):
    offsets = [0, len(cols["t_s"])] if offsets is None else offsets
    rows = []
    for trip, (s, e) in enumerate(itertools.pairwise(offsets)):
        raw = {name: col[s:e] for name, col in cols.items()}
        kept = clean(raw["t_s"], raw["lat_deg"], raw["lon_deg"], raw["accuracy_m"], NOW, params)
        t, lat, lon, rx, acc = (raw[name][kept] for name in (
            "t_s", "lat_deg", "lon_deg", "speed_mps", "accuracy_m"))
        speed = corner_lateral(t, lat, lon, rx, params)["speed_mps"]
        for start, end_t, peak, value, severity in gps_corner_events(t, lat, lon, rx, acc,
                                                                     params):
            rows.append((trip, t[start], end_t, value, severity, speed[start], lat[peak],
                         lon[peak]))
    return sorted(rows)


def _assert_same_events(got, ref):
    assert [(r[0], r[1], r[2], r[4], r[6], r[7]) for r in got] == [
        (r[0], r[1], r[2], r[4], r[6], r[7]) for r in ref]
    for g, r in zip(got, ref, strict=True):
        # The kernel's polynomial atan2 is within 2e-9 rad of libm's on each turn.
        assert g[3] == pytest.approx(r[3], rel=1e-8, abs=1e-9)  # signed peak lateral
        assert g[5] == pytest.approx(r[5], rel=1e-9, abs=1e-9)  # speed at the start


def _with_accuracy(tr, accuracy_m=5.0):
    return {**tr, "accuracy_m": np.full(len(tr["t_s"]), accuracy_m)}


def _left_turn(speed_mps, turns_deg, accuracy_m=5.0):
    """Ten straight steps east, left turns of ``turns_deg`` at fixes 10, 11, ..., then
    ten straight steps; 1 Hz at constant speed."""
    headings = 90.0 - np.concatenate([np.zeros(10), np.cumsum(turns_deg), [sum(turns_deg)] * 9])
    return _with_accuracy(track(np.full(headings.size, speed_mps), headings), accuracy_m)


# 30 km/h at 5 m/s^2 turns at 0.6 rad/s = 34.4 deg/s: a 90 deg corner is done in 2.6 s.
RATE_DPS = math.degrees(5.0 / (30 * KMH))
CORNER_TURNS = [RATE_DPS, RATE_DPS, 90.0 - 2 * RATE_DPS]


def test_a_90_deg_corner_at_30_kmh_with_5_mps2():
    tr = _left_turn(30 * KMH, CORNER_TURNS)
    got = _kernel_corners(tr)
    _assert_same_events(got, _reference_corners(tr))
    assert len(got) == 1
    _, start_t, end_t, peak, severity, speed, lat, _ = got[0]
    # The two-turn laterals of fixes 10 (5.0 m/s^2) and 11 (4.05) are over 3.6.
    assert (start_t, end_t) == (T0 + 10, T0 + 12)
    assert peak == pytest.approx(5.0, rel=1e-6) and severity == "high"
    assert speed == pytest.approx(30 * KMH) and lat == tr["lat_deg"][10]


@pytest.mark.parametrize(("vague_fix", "n_corners"), [(11, 0), (8, 0), (13, 0), (7, 1), (14, 1)])
def test_a_fix_reporting_25_m_blocks_the_corners_whose_turns_use_it(vague_fix, n_corners):
    # The manoeuvre's laterals (>= 1.8 m/s^2) are at fixes 9 to 11: turns at 9 to 12,
    # which use fixes 8 to 13.
    tr = _left_turn(30 * KMH, CORNER_TURNS)
    tr["accuracy_m"][vague_fix] = 25.0
    got = _kernel_corners(tr)
    _assert_same_events(got, _reference_corners(tr))
    assert len(got) == n_corners


def test_a_lane_change_at_80_kmh_is_lateral_but_no_corner():
    # Out by 20 deg and back: 3.9 m/s^2 both ways, but the heading ends where it began.
    tr = _left_turn(80 * KMH, [10.0, 10.0, -10.0, -10.0])
    ref = corner_lateral(tr["t_s"], tr["lat_deg"], tr["lon_deg"], tr["speed_mps"], P)
    assert np.nanmax(np.abs(ref["lateral_mps2"])) > P.corner_lateral_mps2
    got = _kernel_corners(tr)
    _assert_same_events(got, _reference_corners(tr))
    assert got == []


@pytest.mark.parametrize("jump_accuracy_m", [np.nan, 5.0, 25.0])
def test_a_60_m_position_jump_is_no_corner(jump_accuracy_m):
    tr = _with_accuracy(track(np.full(30, 15.0)))
    north_m, _ = metres_per_degree(52.0)
    tr["lat_deg"][15] += 60.0 / north_m
    tr["accuracy_m"][15] = jump_accuracy_m
    ref = corner_lateral(tr["t_s"], tr["lat_deg"], tr["lon_deg"], tr["speed_mps"], P)
    assert np.nanmax(np.abs(ref["lateral_mps2"])) > 9.0
    got = _kernel_corners(tr)
    _assert_same_events(got, _reference_corners(tr))
    assert got == []


@pytest.mark.parametrize(("speed_kmh", "n_corners"), [(17.0, 0), (19.0, 1)])
def test_a_slow_turn_under_18_kmh_is_no_corner(speed_kmh, n_corners):
    # 90 deg in two 45 deg turns: 3.7 m/s^2 at 17 km/h, 4.1 at 19 km/h.
    tr = _left_turn(speed_kmh * KMH, [45.0, 45.0])
    got = _kernel_corners(tr)
    _assert_same_events(got, _reference_corners(tr))
    assert len(got) == n_corners


def _random_trip(rng):
    """A 1 Hz drive (with the odd 0.5, 2 and 7 s step) of straights and arcs of random
    radius, direction and speed, with GPS position noise, reported accuracy and receiver
    speeds that are sometimes missing or implausible."""
    n = int(rng.integers(15, 70))
    dt = rng.choice([1.0] * 12 + [0.5, 2.0, 7.0], n - 1)
    speed = np.empty(n - 1)
    rate = np.empty(n - 1)
    i = 0
    while i < n - 1:
        length = int(rng.integers(2, 12))
        v = rng.uniform(2.0, 25.0)
        turn = rng.random() < 0.6
        radius_m = rng.uniform(8.0, 150.0)
        speed[i:i + length] = v + rng.normal(0.0, 0.5, speed[i:i + length].size)
        rate[i:i + length] = rng.choice([-1.0, 1.0]) * v / radius_m if turn else 0.0
        i += length
    speed = np.clip(speed, 0.0, None)
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rate * dt)
    east = np.concatenate([[0.0], np.cumsum(speed * dt * np.sin(heading))])
    north = np.concatenate([[0.0], np.cumsum(speed * dt * np.cos(heading))])
    noise_m = rng.choice([0.0, 0.3, 1.0, 3.0])
    east += rng.normal(0.0, noise_m, n)
    north += rng.normal(0.0, noise_m, n)
    lat0 = rng.uniform(-60.0, 60.0)
    lon0 = rng.choice([rng.uniform(-180.0, 180.0), 179.9995])
    north_per_deg, east_per_deg = metres_per_degree(lat0)
    rx = np.concatenate([[speed[0]], speed]) + rng.normal(0.0, 0.2, n)
    rx[rng.random(n) < 0.1] = np.nan
    rx[rng.random(n) < 0.03] = -1.0
    accuracy = rng.choice([3.0, 5.0, 8.0, 10.0, 12.0, np.nan], n,
                          p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05])
    return {"t_s": T0 + np.concatenate([[0.0], np.cumsum(dt)]),
            "lat_deg": lat0 + north / north_per_deg,
            "lon_deg": (lon0 + east / east_per_deg + 180.0) % 360.0 - 180.0,
            "speed_mps": rx, "accuracy_m": accuracy}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("params", [P, GpsParams(corner_max_accuracy_m=1e9, harsh_merge_s=0.0,
                                                 harsh_min_duration_s=2.0)])
def test_random_curvy_trips_match_reference(seed, params):
    rng = np.random.default_rng(seed)
    cols, offsets = batch(*(_random_trip(rng) for _ in range(100)))
    got = _kernel_corners(cols, offsets, params)
    _assert_same_events(got, _reference_corners(cols, offsets, params))
    assert len(got) > 20
