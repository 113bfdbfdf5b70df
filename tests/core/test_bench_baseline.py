"""The benchmark's numpy baseline computes the core's features: the speed ratio in
bench/features.py compares like with like only while every column numpy computes agrees
with ``compute_trip_features`` on the same trips."""

from __future__ import annotations

import numpy as np
import pytest
from test_gps_cornering import _random_trip
from tracks import batch

from bench.features import T0_S, numpy_features, synthetic_trips
from telematics.core.features import compute_trip_features

NOW = T0_S + 1e7
ZONE = "Europe/Amsterdam"


def _core(b: dict[str, np.ndarray]):
    return compute_trip_features(
        b["t_s"], b["lat_deg"], b["lon_deg"], b["offsets"], speed_mps=b["speed_mps"],
        accuracy_m=b["accuracy_m"], speed_limit_mps=b.get("speed_limit_mps"), time_zone=ZONE,
        now_s=NOW, prior_driving_s=b.get("prior_driving_s"),
    )


def _assert_agree(b: dict[str, np.ndarray], core=None) -> None:
    core = (_core(b) if core is None else core).features
    ours = numpy_features(b, time_zone=ZONE, now_s=NOW)
    gps_columns = [c for c in core.columns if c != "trip" and "phone_handling" not in c]
    assert sorted(ours) == sorted(gps_columns)
    for name, values in ours.items():
        expected = core[name].to_numpy()
        if expected.dtype.kind in "biu":
            np.testing.assert_array_equal(np.asarray(values, dtype=expected.dtype), expected,
                                          err_msg=name)
        else:
            np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-9, err_msg=name)


def _messy(n_trips: int = 24, n_points: int = 2400, seed: int = 5) -> dict[str, np.ndarray]:
    """Bench trips with what cleaning, gaps and fatigue act on: 17-minute stops, fixes too
    inaccurate to keep, missing Doppler speed and accuracy, missing fixes and 20 s gaps,
    re-sent duplicates, one pair out of order and driving carried in from earlier trips."""
    b = synthetic_trips(n_trips, n_points, seed=seed)
    rng = np.random.default_rng(seed)
    cols = {k: v.copy() for k, v in b.items() if k != "offsets"}
    lat, lon, speed, acc = (cols[k] for k in ("lat_deg", "lon_deg", "speed_mps", "accuracy_m"))
    offsets = b["offsets"]
    n = offsets[-1]
    for k in range(0, n_trips, 2):
        s, e, end = offsets[k] + 600, offsets[k] + 1620, offsets[k + 1]
        lat[e:end] += lat[s] - lat[e]
        lon[e:end] += lon[s] - lon[e]
        lat[s:e] = lat[s] + rng.normal(0.0, 1e-6, e - s)
        lon[s:e] = lon[s] + rng.normal(0.0, 1e-6, e - s)
        speed[s:e] = np.abs(rng.normal(0.0, 0.1, e - s))
    acc[rng.random(n) < 0.01] = 80.0
    speed[rng.random(n) < 0.02] = np.nan
    acc[rng.random(n) < 0.05] = np.nan
    keep = rng.random(n) > 0.003
    for k in range(1, n_trips, 3):
        keep[offsets[k] + 300:offsets[k] + 319] = False
    rows = np.sort(np.concatenate([np.flatnonzero(keep), np.flatnonzero(rng.random(n) < 0.002)]))
    trip = np.searchsorted(offsets, rows, side="right") - 1
    out = {k: v[rows] for k, v in cols.items()}
    swap = np.searchsorted(trip, 3) + 100
    for v in out.values():
        v[[swap, swap + 1]] = v[[swap + 1, swap]]
    out["offsets"] = np.searchsorted(trip, np.arange(n_trips + 1)).astype(np.int64)
    out["prior_driving_s"] = np.where(np.arange(n_trips) % 4 < 2, 6500.0, 0.0)
    return out


def test_numpy_baseline_matches_core_on_bench_trips():
    _assert_agree(synthetic_trips(50, 1200))


@pytest.mark.parametrize("seed", [5, 8])
def test_numpy_baseline_matches_core_on_messy_trips(seed):
    b = _messy(seed=seed)
    core = _core(b)
    kinds = set(core.events["kind"].astype(str))
    # The batch holds fatigue events and breaks that reset the driving time (corners:
    # the curvy trips below), dropped fixes and gaps.
    assert {"braking", "acceleration", "speeding", "fatigue"} <= kinds
    assert (core.features["driving_end_s"] < core.features["moving_s"]).any()
    assert (core.features["n_gaps"] > 0).any() and (core.features["kept_share"] < 1).any()
    _assert_agree(b, core)


@pytest.mark.parametrize("seed", range(2))
def test_numpy_baseline_matches_core_on_curvy_trips(seed):
    """Short drives of arcs and straights (tests/core/test_gps_cornering.py): 0.5 to 7 s
    steps, position noise, missing and implausible receiver speeds, the antimeridian,
    and trips sharing the same times."""
    rng = np.random.default_rng(seed)
    cols, offsets = batch(*(_random_trip(rng) for _ in range(100)))
    b = {**cols, "offsets": offsets}
    core = _core(b)
    assert (core.events["kind"] == "cornering").sum() > 50
    _assert_agree(b, core)
