"""Transport mode: synthetic 1 Hz speed profiles of each mode, features by hand,
awkward input."""

from __future__ import annotations

import numpy as np
import pytest

from telematics.core.mode import (
    MODE_BUS,
    MODE_CAR,
    MODE_NAMES,
    MODE_TRAIN,
    MODE_WALK_CYCLE,
    ModeParams,
    classify_trips,
)


def legs(rng, n, cruise_mps, accel_mps2, cruise_s, dwell_s, jitter_mps=0.3):
    """n legs of: accelerate, cruise, brake, stand still; 1 Hz speeds."""
    out = [np.zeros(10)]
    for k in range(n):
        v = cruise_mps[k] if np.ndim(cruise_mps) else cruise_mps
        ramp = np.arange(0.0, v, accel_mps2)
        cruise = v + rng.normal(
            0.0, jitter_mps, int(cruise_s[k] if np.ndim(cruise_s) else cruise_s)
        )
        out += [ramp, np.clip(cruise, 0.0, None), ramp[::-1], np.zeros(int(dwell_s[k]))]
    return np.concatenate(out)


def trips(rng):
    car_city = legs(
        rng,
        8,
        rng.uniform(11, 15, 8),
        2.2,
        rng.uniform(20, 90, 8),
        rng.choice([8, 15, 45, 70, 100], 8),
    )
    car_motorway = legs(rng, 2, [33.0, 36.0], 1.5, [900, 600], [30, 10], jitter_mps=1.0)
    bus = legs(rng, 14, 12.0, 1.0, rng.uniform(20, 30, 14), rng.uniform(18, 26, 14))
    train = legs(rng, 3, 38.0, 0.4, [200, 250, 180], [60, 55, 65])
    walk = np.clip(1.4 + rng.normal(0.0, 0.2, 1500), 0.0, None)
    cycle = legs(rng, 5, 5.5, 0.8, rng.uniform(60, 200, 5), rng.uniform(5, 40, 5), 0.6)
    return {
        "car_city": car_city,
        "car_motorway": car_motorway,
        "bus": bus,
        "train": train,
        "walk": walk,
        "cycle": cycle,
    }


def run(speeds):
    t = np.concatenate([np.arange(s.size, dtype=np.float64) for s in speeds])
    off = np.concatenate(([0], np.cumsum([s.size for s in speeds])))
    return classify_trips(t, np.concatenate(speeds), off)


def test_modes_of_synthetic_trips():
    rng = np.random.default_rng(1)
    named = trips(rng)
    res = run(list(named.values()))
    expected = [MODE_CAR, MODE_CAR, MODE_BUS, MODE_TRAIN, MODE_WALK_CYCLE, MODE_WALK_CYCLE]
    assert res.mode.tolist() == expected, res.scores
    assert res.scored.tolist() == [m == MODE_CAR for m in expected]
    assert (res.confidence > 0.3).all()
    assert res.mode_name.tolist() == [MODE_NAMES[m] for m in expected]


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_modes_are_stable_across_random_profiles(seed):
    res = run(list(trips(np.random.default_rng(seed)).values()))
    assert res.mode.tolist() == [
        MODE_CAR,
        MODE_CAR,
        MODE_BUS,
        MODE_TRAIN,
        MODE_WALK_CYCLE,
        MODE_WALK_CYCLE,
    ]


def test_features_by_hand():
    """10 m/s for 100 s after a 10 s stand, a 20 s stop, 50 s more at 1 Hz."""
    speed = np.concatenate((np.zeros(10), np.full(100, 10.0), np.zeros(20), np.full(50, 10.0)))
    f = run([speed]).features.iloc[0]
    # Trapezoid: three 0<->10 m/s steps of 5 m, 99 + 49 steps of 10 m.
    assert f["distance_m"] == pytest.approx(3 * 5.0 + 148 * 10.0)
    assert f["n_stops"] == 1
    assert f["dwell_mean_s"] == pytest.approx(20.0)
    assert np.isnan(f["dwell_cv"])
    assert f["speed_p95_mps"] == pytest.approx(10.25)
    # Each jump of 10 m/s shows as 10/3 m/s^2 in the three 3 s spans across it: 9 of 177
    # spans (5.1 %), so the 95th percentile is the upper edge of that 0.05 m/s^2 bin.
    assert f["accel_p95_mps2"] == pytest.approx(3.35)
    assert f["stops_per_km"] == pytest.approx(1 / 1.495)


def test_awkward_inputs():
    res = classify_trips(np.zeros(0), np.zeros(0), [0])
    assert res.mode.size == 0
    one = classify_trips([0.0], [3.0])
    assert one.features["distance_m"].iloc[0] == 0.0
    empty_trip = classify_trips([0.0, 1.0], [1.0, 1.0], [0, 0, 2])
    assert np.isnan(empty_trip.features["speed_p95_mps"].iloc[0])
    gaps = classify_trips([0.0, 1.0, 1.0, 100.0], [10.0, np.nan, 10.0, 10.0])
    assert gaps.features["distance_m"].iloc[0] == 0.0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (([0.0, np.nan], [1.0, 1.0]), "t_s"),
        (([1.0, 0.0], [1.0, 1.0]), "t_s"),
        (([0.0, 1.0], [1.0]), "speed_mps"),
        (([0.0, 1.0], [1.0, -1.0]), "speed_mps"),
        (([0.0, 1.0], [1.0, 1.0], [0, 1]), "offsets"),
    ],
)
def test_invalid_input_names_the_field(args, field):
    with pytest.raises(ValueError, match=field):
        classify_trips(*args)


def test_params_validated():
    with pytest.raises(ValueError, match="walk_p95_below"):
        ModeParams(walk_p95_below=(10.0, 7.0))
    with pytest.raises(ValueError, match="gap_s"):
        ModeParams(gap_s=0.0)
