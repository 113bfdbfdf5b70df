import numpy as np
import pytest
from naive import segment as naive_segment
from tracks import T0, batch, track

from telematics.core.params import GpsParams
from telematics.core.segment import segment_trips

P = GpsParams()


def _segment(tr, offsets=None):
    return segment_trips(tr["t_s"], tr["lat_deg"], tr["lon_deg"], offsets)


def test_a_stop_splits_two_trips_and_keeps_their_full_distance():
    tr = track([10.0] * 400 + [0.0] * 300 + [10.0] * 100 + [0.2] * 50)
    seg = _segment(tr)
    np.testing.assert_array_equal(seg.offsets, [0, 401, 552])
    np.testing.assert_array_equal(seg.sample_index[[0, 400, 401, 551]], [0, 400, 700, 850])
    np.testing.assert_allclose(seg.distance_m, [4000.0, 1010.0], rtol=1e-9)
    assert seg.stream.tolist() == [0, 0] and seg.scored.tolist() == [True, False]


def test_short_stop_does_not_split_and_long_gap_does():
    tr = track([10.0] * 100 + [0.0] * 120 + [10.0] * 100)
    assert len(_segment(tr).stream) == 1
    tr = track([10.0] * 99 + [10_000.0] + [10.0] * 100)
    tr["t_s"][100:] += 4000.0  # 10 km in a 4,000 s gap splits the trip
    seg = _segment(tr)
    np.testing.assert_array_equal(seg.offsets, [0, 100, 201])
    tr["t_s"][100:] -= 2000.0  # a 2,000 s gap while moving does not
    assert len(_segment(tr).stream) == 1
    tr["lon_deg"][100:] -= tr["lon_deg"][100] - tr["lon_deg"][99]
    assert len(_segment(tr).stream) == 2  # but 2,000 s without moving is a stop


def test_parked_with_the_phone_off_is_a_stop():
    tr = track([10.0] * 60 + [0.0] * 2 + [10.0] * 60)
    tr["t_s"][62:] += 1800.0
    seg = _segment(tr)
    assert len(seg.stream) == 2 and seg.duration_s.tolist() == [60.0, 60.0]


def test_standing_still_is_no_trip_and_edge_sizes():
    assert len(_segment(track([0.0] * 600)).stream) == 0
    assert len(_segment(track([])).stream) == 0
    empty = segment_trips([], [], [])
    assert empty.offsets.tolist() == [0] and empty.sample_index.shape == (0,)


def _stream(rng, t0):
    parts = []
    for _ in range(rng.integers(1, 5)):
        parts.append(rng.uniform(3, 30) + np.cumsum(rng.normal(0, 0.5, rng.integers(30, 400))))
        parts.append(np.abs(rng.normal(0, 0.02, rng.integers(50, 400))))
    speeds = np.clip(np.concatenate(parts), 0, 40)
    tr = track(speeds, heading_deg=np.cumsum(rng.normal(0, 5, speeds.size)), t0=t0)
    tr["t_s"] = tr["t_s"] + np.cumsum(rng.choice([0.0] * 300 + [30.0, 4000.0], speeds.size + 1))
    return tr


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_on_random_streams(seed):
    rng = np.random.default_rng(seed)
    streams = [_stream(rng, T0 + 1e5 * k) for k in range(3)]
    cols, offsets = batch(*streams)
    seg = _segment(cols, offsets)
    ref = []
    for k, tr in enumerate(streams):
        ref += [(s + offsets[k], e + offsets[k])
                for s, e in naive_segment(tr["t_s"], tr["lat_deg"], tr["lon_deg"], P)]
    got = [(seg.sample_index[a], seg.sample_index[b - 1] + 1)
           for a, b in zip(seg.offsets[:-1], seg.offsets[1:], strict=True)]
    assert got == ref


def test_requires_clean_input():
    with pytest.raises(ValueError, match="t_s"):
        segment_trips([2.0, 1.0], [52.0, 52.0], [4.0, 4.0])
    with pytest.raises(ValueError, match="lon_deg"):
        segment_trips([1.0, 2.0], [52.0, 52.0], [4.0, np.nan])


def test_parallel_equals_serial():
    rng = np.random.default_rng(8)
    streams = [_stream(rng, T0 + 1e5 * k) for k in range(5)]
    cols, offsets = batch(*streams)
    serial = _segment(cols, offsets)
    par = segment_trips(cols["t_s"], cols["lat_deg"], cols["lon_deg"], offsets, parallel=True)
    for a, b in zip(serial, par, strict=True):
        np.testing.assert_array_equal(a, b)
