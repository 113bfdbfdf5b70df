import numpy as np
import pytest
from naive import clean as naive_clean
from tracks import T0, track

from telematics.core.clean import clean_gps
from telematics.core.params import GpsParams

P = GpsParams()
NOW = T0 + 10_000.0


def _clean(tr, acc=None, offsets=None, now=NOW):
    return clean_gps(tr["t_s"], tr["lat_deg"], tr["lon_deg"], acc, offsets, now_s=now)


def test_a_clean_trip_is_kept_whole():
    tr = track(np.full(10, 10.0))
    out = _clean(tr)
    np.testing.assert_array_equal(out.sample_index, np.arange(11))
    np.testing.assert_array_equal(out.offsets, [0, 11])
    assert not out.gap_before.any()


def test_each_filter_drops_its_fix():
    tr = track(np.full(12, 10.0))
    acc = np.full(13, 5.0)
    tr["lat_deg"][2] += 0.18  # a 20 km jump for one fix
    tr["lat_deg"][4], tr["lon_deg"][4] = 0.0, 0.0  # null island
    acc[6] = 60.0  # worse than 50 m
    tr["lat_deg"][8] = np.nan  # dropout
    tr["t_s"][12] = NOW + 2 * 86400.0  # far future
    out = _clean(tr, acc)
    np.testing.assert_array_equal(out.sample_index, [0, 1, 3, 5, 7, 9, 10, 11])


def test_duplicates_keep_the_most_accurate_and_order_does_not_matter():
    tr = track(np.full(5, 10.0))
    t = np.concatenate([tr["t_s"], tr["t_s"][[2]]])
    lat = np.concatenate([tr["lat_deg"], tr["lat_deg"][[2]] + 1e-6])
    lon = np.concatenate([tr["lon_deg"], tr["lon_deg"][[2]]])
    acc = np.concatenate([np.full(6, 8.0), [3.0]])
    out = clean_gps(t, lat, lon, acc, now_s=NOW)
    np.testing.assert_array_equal(out.sample_index, [0, 1, 6, 3, 4, 5])
    perm = np.random.default_rng(0).permutation(7)
    shuffled = clean_gps(t[perm], lat[perm], lon[perm], acc[perm], now_s=NOW)
    np.testing.assert_array_equal(perm[shuffled.sample_index], out.sample_index)


def test_bad_first_fix_is_dropped_by_reanchoring():
    tr = track(np.full(10, 10.0))
    tr["lat_deg"][0] += 0.18
    out = _clean(tr)
    # Fixes 1-2 are rejected against the bad anchor; fix 3 agrees with them and re-anchors,
    # and the one-fix run before it (the outlier) is discarded.
    np.testing.assert_array_equal(out.sample_index, np.arange(3, 11))


def test_gaps_are_marked_and_trips_stay_apart():
    a = track(np.full(5, 10.0))
    a["t_s"][3:] += 20.0
    b = track(np.full(3, 10.0), t0=T0 + 1000)
    t = np.concatenate([a["t_s"], b["t_s"]])
    lat = np.concatenate([a["lat_deg"], b["lat_deg"]])
    lon = np.concatenate([a["lon_deg"], b["lon_deg"]])
    out = clean_gps(t, lat, lon, None, [0, 6, 10], now_s=NOW)
    np.testing.assert_array_equal(out.offsets, [0, 6, 10])
    np.testing.assert_array_equal(np.flatnonzero(out.gap_before), [3])


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single(n):
    tr = track(np.full(max(n - 1, 0), 10.0))
    cols = {k: v[:n] for k, v in tr.items()}
    out = _clean(cols)
    assert out.sample_index.shape == (n,) and list(out.offsets) == [0, n]


@pytest.mark.parametrize("seed", range(8))
def test_matches_reference_on_noisy_trips(seed):
    rng = np.random.default_rng(seed)
    n = 200
    tr = track(rng.uniform(0, 40, n - 1), heading_deg=rng.uniform(0, 360, n - 1))
    t = tr["t_s"] + rng.choice([0.0, 0.0, 0.0, -1.0], n)  # duplicate times
    lat, lon = tr["lat_deg"].copy(), tr["lon_deg"].copy()
    jumps = rng.random(n) < 0.05
    lat[jumps] += rng.choice([-1, 1], jumps.sum()) * rng.uniform(0.01, 0.3, jumps.sum())
    lat[rng.random(n) < 0.03] = np.nan
    acc = rng.uniform(2, 70, n)
    acc[rng.random(n) < 0.2] = np.nan
    out = clean_gps(t, lat, lon, acc, now_s=NOW)
    order = np.lexsort((lon, lat, acc, t))
    ref = order[naive_clean(t[order], lat[order], lon[order], acc[order], NOW, P)]
    np.testing.assert_array_equal(out.sample_index, ref)


def test_validation_names_the_field():
    with pytest.raises(ValueError, match="lat_deg"):
        clean_gps([0.0, 1.0], [1.0], [1.0, 2.0], now_s=NOW)
    with pytest.raises(ValueError, match="t_s"):
        clean_gps([0.0, np.nan], [1.0, 1.0], [1.0, 2.0], now_s=NOW)
    with pytest.raises(ValueError, match="offsets"):
        clean_gps([0.0, 1.0], [1.0, 1.0], [1.0, 2.0], offsets=[0, 3], now_s=NOW)
    with pytest.raises(ValueError, match="now_s"):
        clean_gps([0.0], [1.0], [1.0], now_s=float("nan"))


def test_parallel_equals_serial():
    rng = np.random.default_rng(9)
    trips = [track(rng.uniform(0, 40, 150), heading_deg=rng.uniform(0, 360, 150), t0=T0 + 500 * k)
             for k in range(6)]
    t = np.concatenate([tr["t_s"] for tr in trips])
    lat = np.concatenate([tr["lat_deg"] for tr in trips])
    lat[rng.random(t.shape[0]) < 0.05] += 0.2
    lon = np.concatenate([tr["lon_deg"] for tr in trips])
    offsets = np.arange(7) * 151
    serial = clean_gps(t, lat, lon, None, offsets, now_s=NOW)
    par = clean_gps(t, lat, lon, None, offsets, now_s=NOW, parallel=True)
    for a, b in zip(serial, par, strict=True):
        np.testing.assert_array_equal(a, b)
