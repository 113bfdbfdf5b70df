import numpy as np
import pytest
from naive import threshold_runs
from tracks import T0, circle, track

from telematics.core.events import detect_threshold_events
from telematics.core.features import compute_trip_features
from telematics.core.params import KMH, GpsParams

NOW = T0 + 1e6


def _detect(t, v, threshold=-3.2, direction="below", min_duration_s=0.6, merge_gap_s=3.0,
            max_gap_s=5.0, offsets=None):
    return detect_threshold_events(t, v, offsets, threshold=threshold, direction=direction,
                                   min_duration_s=min_duration_s, merge_gap_s=merge_gap_s,
                                   max_gap_s=max_gap_s)


def test_a_4_s_stop_from_20_mps_is_one_5_mps2_brake():
    accel = np.array([0, 0, -5, -5, -5, -5, 0, np.nan])
    ev = _detect(np.arange(8.0), accel)
    assert ev.start_t_s.tolist() == [2.0] and ev.end_t_s.tolist() == [6.0]
    assert ev.peak_value.tolist() == [-5.0] and ev.trip.tolist() == [0]


def test_merge_window_gap_and_min_duration():
    t = np.arange(20.0)
    v = np.zeros(20)
    v[[2, 5, 11]] = -4.0  # 2 s between the first two runs, 5 s to the third
    ev = _detect(t, v)
    assert ev.start_idx.tolist() == [2, 11] and ev.end_idx.tolist() == [5, 11]
    t_gap = t.copy()
    t_gap[4:] += 10.0  # a gap between the first two runs forbids the merge
    assert _detect(t_gap, v).start_idx.tolist() == [2, 5, 11]
    t25 = np.arange(40) / 25.0
    v25 = np.zeros(40)
    v25[5:20] = 3.5
    assert len(_detect(t25, v25, 3.0, "above", max_gap_s=0.5).trip) == 1
    v25[19] = 0.0
    assert len(_detect(t25, v25, 3.0, "above", max_gap_s=0.5).trip) == 0


@pytest.mark.parametrize("seed", range(10))
def test_matches_reference_on_random_series(seed):
    rng = np.random.default_rng(seed)
    n = 300
    t = np.cumsum(rng.choice([0.5, 1.0, 1.0, 2.0, 7.0], n))
    v = rng.normal(0, 2.5, n)
    v[rng.random(n) < 0.05] = np.nan
    offsets = np.array([0, 100, 100, 300])
    ev = _detect(t, v, -2.0, "below", 1.0, 3.0, 5.0, offsets)
    ref = [(s + o, e + o, p + o) for k, o in enumerate(offsets[:-1])
           for s, e, p in threshold_runs(t[o:offsets[k + 1]], v[o:offsets[k + 1]], -2.0, -1,
                                         1.0, 3.0, 5.0)]
    got = list(zip(ev.start_idx.tolist(), ev.end_idx.tolist(), ev.peak_idx.tolist(),
                   strict=True))
    assert got == ref


def test_detector_validation():
    with pytest.raises(ValueError, match="direction"):
        _detect([0.0], [1.0], direction="up")
    with pytest.raises(ValueError, match="min_duration_s"):
        _detect([0.0], [1.0], min_duration_s=-1.0)
    with pytest.raises(ValueError, match="t_s"):
        _detect([1.0, 0.0], [1.0, 1.0])
    empty = _detect([], [])
    assert empty.trip.shape == (0,)


def _events(tr, **kw):
    out = compute_trip_features(tr["t_s"], tr["lat_deg"], tr["lon_deg"],
                                speed_mps=tr["speed_mps"], now_s=NOW, **kw)
    return out.events, out.features


def test_gps_harsh_brake_with_severity_speed_and_place():
    tr = track([20] * 30 + [15, 10, 5, 0] + [0] * 10)
    events, feat = _events(tr)
    assert events["kind"].tolist() == ["braking"]
    e = events.iloc[0]
    assert e["severity"] == "severe" and e["peak_value"] == pytest.approx(-5.0)
    assert e["start_t_s"] == T0 + 30 and e["duration_s"] == pytest.approx(4.0)
    assert e["speed_mps"] == pytest.approx(20.0)
    assert e["lat_deg"] == pytest.approx(tr["lat_deg"][30])
    assert feat["n_braking_severe"].item() == 1 and feat["n_braking"].item() == 1


def test_moderate_braking_and_harsh_acceleration_bands():
    speeds = [20] * 10 + [17.5, 15, 12.5] + [12.5] * 10 + list(12.5 + 3.3 * np.arange(1, 4))
    events, feat = _events(track(speeds + [speeds[-1]] * 5))
    assert events[["kind", "severity"]].values.tolist() == [
        ["braking", "moderate"], ["acceleration", "medium"]]
    assert feat["n_braking_moderate"].item() == 1 and feat["n_braking"].item() == 0
    assert feat["n_acceleration"].item() == 1


def test_speeding_against_the_limit_and_the_fallback():
    tr = track([15] * 5 + [18] * 15 + [15] * 5)
    tr["speed_limit_mps"] = np.full(26, 50 * KMH)
    events, feat = _events(tr, speed_limit_mps=tr["speed_limit_mps"])
    speeding = events[events["kind"] == "speeding"]
    assert len(speeding) == 1 and speeding["duration_s"].item() == pytest.approx(15.0)
    assert feat["speeding_share"].item() == pytest.approx(15.0 / 25.0)
    events, _ = _events(tr)  # no limit: 65 km/h is far below the 130 km/h fallback
    assert (events["kind"] == "speeding").sum() == 0
    fast = track([40.0] * 12)  # 144 km/h, no limit known: 14 km/h over the trigger
    events, _ = _events(fast)
    assert events["kind"].tolist() == ["speeding"]
    assert events["severity"].item() == "high"


def test_cornering_needs_lateral_heading_change_and_speed():
    events, _ = _events(circle(10.0, 25.0, 30))  # 4 m/s^2, 23 deg/s
    corner = events[events["kind"] == "cornering"]
    assert len(corner) == 1 and corner["peak_value"].item() == pytest.approx(4.0, rel=5e-3)
    assert corner["severity"].item() == "medium"
    events, _ = _events(circle(4.5, 5.0, 30))  # 4 m/s^2 but below 18 km/h
    assert (events["kind"] == "cornering").sum() == 0


def test_fatigue_after_two_hours_without_a_break():
    tr = track(np.full(2 * 3600 + 600, 20.0), dt_s=1.0)
    events, feat = _events(tr)
    fatigue = events[events["kind"] == "fatigue"]
    assert len(fatigue) == 1
    assert fatigue["start_t_s"].item() == pytest.approx(T0 + 7201)
    assert feat["driving_end_s"].item() == pytest.approx(7800.0)
    _, feat = _events(track(np.full(100, 20.0)), prior_driving_s=[7150.0])
    assert feat["n_fatigue"].item() == 1


def test_more_events_than_slots_are_all_reported():
    speeds = np.tile([40.0, 35.0, 40.0, 37.5], 30)
    p = GpsParams(harsh_min_duration_s=0.0, harsh_merge_s=0.0, speeding_min_duration_s=0.0,
                  speeding_merge_s=0.0)
    tr = track(speeds)
    out = compute_trip_features(tr["t_s"], tr["lat_deg"], tr["lon_deg"],
                                speed_mps=tr["speed_mps"], now_s=NOW, params=p)
    counts = out.events["kind"].value_counts().to_dict()
    assert len(out.events) > len(tr["t_s"]) + 4
    assert counts["braking"] == 60 and counts["acceleration"] == 59  # first step is flat
    assert out.features["n_braking"].item() + out.features["n_braking_moderate"].item() == 60
