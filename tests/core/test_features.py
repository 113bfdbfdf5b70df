import numpy as np
import pandas as pd
import pytest
from naive import kinematics as naive_kinematics
from naive import trip_features as naive_trip_features
from tracks import T0, batch, track

from telematics.core.features import compute_trip_features, heatmap_columns
from telematics.core.params import KMH, GpsParams

P = GpsParams()
NOW = 2.0e9


def _features(cols, offsets=None, **kw):
    kw.setdefault("now_s", NOW)
    return compute_trip_features(cols["t_s"], cols["lat_deg"], cols["lon_deg"], offsets,
                                 speed_mps=cols.get("speed_mps"), **kw)


def test_100_m_east_in_10_s():
    out = _features(track(np.full(10, 10.0)))
    row = out.features.iloc[0]
    assert row["distance_m"] == pytest.approx(100.0, rel=1e-9)
    assert row["duration_s"] == 10.0 and row["moving_s"] == 10.0 and row["idle_s"] == 0.0
    assert row["speed_mean_mps"] == pytest.approx(10.0) and row["speed_max_mps"] == 10.0
    assert row["quality_score"] == 1.0 and not row["scored"]
    assert row["urban_share"] == 1.0 and out.events.empty


def _local_t0(wall: str, zone: str) -> float:
    return pd.Timestamp(wall, tz=zone).timestamp()


@pytest.mark.parametrize(
    "start,zone,hours",
    [
        ("2026-09-21 22:40", "Europe/Amsterdam", 0.5),  # across 23:00, a Monday
        ("2026-09-21 23:50", "Europe/Amsterdam", 0.25),  # across midnight
        ("2026-10-25 02:30+02:00", "Europe/Amsterdam", 2.75),  # across the autumn DST change
        ("2026-03-08 01:40", "America/New_York", 0.5),  # across the spring DST change
        ("2026-09-22 08:50", "Asia/Kolkata", 0.25),  # rush hour ends at 09:00
        ("2026-09-26 08:30", "Europe/Amsterdam", 0.25),  # a Saturday: no rush hour
    ],
)
def test_time_bands_match_zoneinfo_reference(start, zone, hours):
    ts = pd.Timestamp(start)
    t0 = (ts.tz_localize(zone) if ts.tzinfo is None else ts).timestamp()
    rng = np.random.default_rng(3)
    n = int(hours * 3600)
    tr = track(np.clip(15 + np.cumsum(rng.normal(0, 0.3, n)), 0, 35),
               heading_deg=np.cumsum(rng.normal(0, 3, n)), t0=t0)
    tr["t_s"][n // 2:] += 40.0  # and a gap
    out = _features(tr, time_zone=zone).features.iloc[0]
    ref = naive_trip_features(tr["t_s"], tr["lat_deg"], tr["lon_deg"], tr["speed_mps"], zone, P)
    for name, value in ref.items():
        assert out[name] == pytest.approx(value, rel=1e-7, abs=1e-6), name


def test_dst_change_moves_the_end_of_the_night():
    # 2026-10-25: 01:00 UTC is 03:00 CEST -> 02:00 CET. A drive from 02:30 to 04:30 UTC
    # is at night (before 05:00 local) until 04:00 UTC, not 03:00 UTC.
    t0 = pd.Timestamp("2026-10-25 02:30", tz="UTC").timestamp()
    tr = track(np.full(7200, 10.0), t0=t0)
    row = _features(tr, time_zone="Europe/Amsterdam").features.iloc[0]
    assert row["night_s"] == pytest.approx(5400.0)


def test_heatmap_matches_histogram():
    rng = np.random.default_rng(5)
    tr = track(np.clip(20 + np.cumsum(rng.normal(0, 1.5, 900)), 0, 45))
    row = _features(tr).features.iloc[0]
    k = naive_kinematics(tr["t_s"], tr["lat_deg"], tr["lon_deg"], tr["speed_mps"], P)
    ok = ~np.isnan(k["accel_mps2"])
    ref, _, _ = np.histogram2d(k["speed_mps"][ok], k["accel_mps2"][ok],
                               bins=[P.heatmap_speed_edges_mps, P.heatmap_accel_edges_mps2])
    got = row[heatmap_columns()].to_numpy(dtype=float).reshape(ref.shape)
    # histogram2d closes its last bins on the right; no sample sits on an edge here.
    np.testing.assert_allclose(got, ref)


def test_road_context_from_speed_profile():
    trips = [track(np.full(400, v * KMH)) for v in (30.0, 70.0, 110.0)]
    cols, offsets = batch(*trips)
    table = _features(cols, offsets).features
    shares = table[["urban_share", "rural_share", "motorway_share"]].to_numpy()
    np.testing.assert_allclose(shares, np.eye(3))
    assert table["scored"].tolist() == [True, True, True]


def test_awkward_batches():
    one = track([])
    nan = track(np.full(5, 10.0))
    nan["lat_deg"][:] = np.nan
    gap = track(np.full(20, 10.0))
    gap["lat_deg"][5:9] = np.nan
    cols, offsets = batch(one, nan, gap)
    offsets = np.insert(offsets, 0, 0)  # an empty first trip
    table = _features(cols, offsets).features
    assert table["n_samples"].tolist() == [0, 1, 0, 17]
    assert table["n_samples_raw"].tolist() == [0, 1, 6, 21]
    assert np.isnan(table["start_t_s"][0]) and table["distance_m"][1] == 0.0
    assert table["quality_score"].tolist()[:3] == [0.0, 0.0, 0.0]
    row = table.iloc[3]
    assert row["distance_m"] == pytest.approx(200.0, rel=1e-9)
    assert row["n_gaps"] == 0 and row["kept_share"] == pytest.approx(17 / 21)
    empty = compute_trip_features([], [], [], [0], now_s=NOW)
    assert len(empty.features) == 0 and len(empty.events) == 0
    # No samples but one (empty) trip, the default offsets: one row of nothing.
    nothing = compute_trip_features([], [], [], now_s=NOW, time_zone="Europe/Paris")
    assert nothing.features["n_samples"].tolist() == [0] and nothing.events.empty
    with pytest.raises(ValueError, match="time_zone"):
        compute_trip_features([], [], [], now_s=NOW, time_zone="Mars/Olympus_Mons")


def test_parallel_equals_serial():
    rng = np.random.default_rng(11)
    trips = [track(np.clip(15 + np.cumsum(rng.normal(0, 1.2, 300)), 0, 45),
                   heading_deg=np.cumsum(rng.normal(0, 6, 300)), t0=T0 + 1000 * i)
             for i in range(12)]
    cols, offsets = batch(*trips)
    serial = _features(cols, offsets, time_zone="Europe/Amsterdam")
    par = _features(cols, offsets, time_zone="Europe/Amsterdam", parallel=True)
    pd.testing.assert_frame_equal(serial.features, par.features)
    pd.testing.assert_frame_equal(serial.events, par.events)
    assert len(serial.events) > 0


def test_extra_events_hook():
    tr = track([20] * 30 + [15, 10, 5, 0] + [0] * 10)
    cols, offsets = batch(tr, tr)
    extra = pd.DataFrame({"trip": [0, 1, 1], "kind": ["phone_handling", "braking", "phone_handling"],
                          "start_t_s": [T0 + 1, T0 + 31, T0 + 5],
                          "end_t_s": [T0 + 7, T0 + 33, T0 + 8],
                          "severity": ["medium", "high", "medium"]})
    out = _features(cols, offsets, extra_events=extra, imu_trips=[False, True])
    table = out.features
    assert table["n_phone_handling"].tolist() == [1, 1]
    assert table["phone_handling_s"].tolist() == [6.0, 3.0]
    assert table["n_braking_severe"].tolist() == [1, 0]  # trip 1 uses the IMU's braking
    assert table["n_braking_high"].tolist() == [0, 1]
    assert out.events["trip"].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="extra_events"):
        _features(cols, offsets, extra_events=extra.drop(columns="end_t_s"))
    with pytest.raises(ValueError, match="trip"):
        _features(cols, offsets, extra_events=extra.assign(trip=[0, 1, 2]))
    with pytest.raises(ValueError, match="imu_trips"):
        _features(cols, offsets, extra_events=extra, imu_trips=[False, False])


def test_validation_names_the_field():
    tr = track(np.full(3, 10.0))
    with pytest.raises(ValueError, match="speed_mps"):
        compute_trip_features(tr["t_s"], tr["lat_deg"], tr["lon_deg"], speed_mps=[1.0])
    with pytest.raises(ValueError, match="time_zone"):
        _features(tr, time_zone="Mars/Olympus")
    with pytest.raises(ValueError, match="time_zone"):
        _features(tr, time_zone=["UTC", "UTC"])
    with pytest.raises(ValueError, match="prior_driving_s"):
        _features(tr, prior_driving_s=[-1.0])
    with pytest.raises(ValueError, match="imu_trips"):
        _features(tr, imu_trips=[True, False])


def test_imu_trips_drop_gps_harsh_events_even_without_extra_events():
    tr = track([20] * 30 + [15, 10, 5, 0] + [0] * 10)
    assert _features(tr, imu_trips=[True]).events.empty
    assert _features(tr, imu_trips=[False]).events["kind"].tolist() == ["braking"]


def test_long_trip_across_two_dst_changes_is_looked_up_per_sample():
    t0 = pd.Timestamp("2026-03-28 12:00", tz="UTC").timestamp()
    t = t0 + np.arange(0.0, 215 * 86400.0, 4 * 3600.0)  # Mar 28 -> Oct 29, 4-hour gaps
    lat = np.full(t.shape, 52.0)
    lon = 4.0 + np.arange(t.shape[0]) * 1e-3
    row = compute_trip_features(t, lat, lon, time_zone="Europe/Amsterdam",
                                now_s=t[-1]).features.iloc[0]
    ref = naive_trip_features(t, lat, lon, np.full(t.shape, np.nan), "Europe/Amsterdam", P)
    assert row["night_s"] == pytest.approx(ref["night_s"])


def test_batch_over_many_chunks_equals_trips_alone(monkeypatch):
    # Small chunks of trips, so that this batch spans many, with empty and one-fix trips.
    from telematics.core import features

    chunks = features._trip_chunks
    monkeypatch.setattr(features, "_trip_chunks", lambda offsets: chunks(offsets, 1000))
    rng = np.random.default_rng(17)
    trips = []
    for i in range(40):
        n = int(rng.choice([0, 1, 2, 700, 1500]))
        tr = track(np.clip(15 + np.cumsum(rng.normal(0, 1.5, max(n - 1, 0))), 0, 45),
                   heading_deg=np.cumsum(rng.normal(0, 8, max(n - 1, 0))), t0=T0 + 5000 * i)
        trips.append({k: v[:n] for k, v in tr.items()})
    cols, offsets = batch(*trips)
    assert chunks(offsets, 1000).shape[0] > 10
    serial = _features(cols, offsets, time_zone="Europe/Amsterdam")
    par = _features(cols, offsets, time_zone="Europe/Amsterdam", parallel=True)
    pd.testing.assert_frame_equal(serial.features, par.features)
    pd.testing.assert_frame_equal(serial.events, par.events)
    for k in (0, 7, 23, 39):
        s, e = offsets[k], offsets[k + 1]
        alone = _features({c: v[s:e] for c, v in cols.items()}, time_zone="Europe/Amsterdam")
        want = serial.features.iloc[[k]].drop(columns="trip").reset_index(drop=True)
        pd.testing.assert_frame_equal(alone.features.drop(columns="trip"), want)
        ev = serial.events[serial.events["trip"] == k].drop(columns="trip")
        pd.testing.assert_frame_equal(alone.events.drop(columns="trip"),
                                      ev.reset_index(drop=True))
