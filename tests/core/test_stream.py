"""The one-pass stream entry point against the steps it fuses: clean, segment, features."""

import numpy as np
import pandas as pd
import pytest
from tracks import T0, batch, track

from telematics.core.clean import clean_gps
from telematics.core.features import compute_trip_features, stream_trip_features
from telematics.core.segment import segment_trips

NOW = 2.0e9
ZONE = "Europe/Amsterdam"


def _steps(cols, offsets, parallel=False):
    """clean_gps, then segment_trips on the cleaned streams, then compute_trip_features."""
    cleaned = clean_gps(cols["t_s"], cols["lat_deg"], cols["lon_deg"], cols["accuracy_m"],
                        offsets, now_s=NOW, parallel=parallel)
    idx = cleaned.sample_index
    seg = segment_trips(cols["t_s"][idx], cols["lat_deg"][idx], cols["lon_deg"][idx],
                        cleaned.offsets, parallel=parallel)
    take = idx[seg.sample_index]
    out = compute_trip_features(
        cols["t_s"][take], cols["lat_deg"][take], cols["lon_deg"][take], seg.offsets,
        speed_mps=cols["speed_mps"][take], accuracy_m=cols["accuracy_m"][take],
        speed_limit_mps=cols["speed_limit_mps"][take], time_zone=ZONE, now_s=NOW,
        parallel=parallel,
    )
    return out, seg


def _stream(cols, offsets, parallel=False):
    return stream_trip_features(
        cols["t_s"], cols["lat_deg"], cols["lon_deg"], offsets, speed_mps=cols["speed_mps"],
        accuracy_m=cols["accuracy_m"], speed_limit_mps=cols["speed_limit_mps"],
        time_zone=ZONE, now_s=NOW, parallel=parallel,
    )


def _assert_same(cols, offsets):
    ref, seg = _steps(cols, offsets)
    for parallel in (False, True):
        out = _stream(cols, offsets, parallel)
        pd.testing.assert_frame_equal(out.features, ref.features, check_exact=True)
        pd.testing.assert_frame_equal(out.events, ref.events, check_exact=True)
        np.testing.assert_array_equal(out.stream, seg.stream)
    return ref


def _with_extras(tr, rng):
    n = tr["t_s"].shape[0]
    tr["accuracy_m"] = rng.uniform(3.0, 12.0, n)
    tr["speed_limit_mps"] = np.where(rng.random(n) < 0.5, 50 / 3.6, np.nan)
    return tr


def _day(rng, t0, lat0=52.0):
    """Drive, park 10 minutes, drive on (with hard brakes and turns), park again."""
    v = np.concatenate([np.clip(14 + np.cumsum(rng.normal(0, 0.8, 500)), 0, 35), np.zeros(600),
                        np.clip(10 + np.cumsum(rng.normal(0, 0.8, 400)), 0, 35), np.zeros(300)])
    heading = 90 + np.cumsum(rng.normal(0, 6, v.shape[0]))
    return _with_extras(track(v, heading, lat0=lat0, t0=t0), rng)


def test_drive_stop_drive_streams_match_the_steps():
    rng = np.random.default_rng(1)
    cols, offsets = batch(_day(rng, T0), _day(rng, T0 + 86400.0, lat0=-33.9),
                          _day(rng, T0 + 3600.0, lat0=0.05))
    ref = _assert_same(cols, offsets)
    assert len(ref.features) >= 6 and not ref.events.empty


def test_a_jump_the_stream_re_anchored_on_is_cleaned_again_as_the_steps_do():
    rng = np.random.default_rng(2)
    tr = _with_extras(track(np.full(600, 12.0)), rng)
    tr["lat_deg"][300:] += 0.05  # the car "teleports" 5.5 km and goes on from there
    cols, offsets = batch(tr)
    ref = _assert_same(cols, offsets)
    # The features step drops fixes from the already clean trip: the fused path must too.
    assert ref.features["n_samples"].sum() < ref.features["n_samples_raw"].sum()


@pytest.mark.parametrize("seed", range(6))
def test_noisy_unsorted_streams_match_the_steps(seed):
    rng = np.random.default_rng(seed)
    trips = [_day(rng, T0 + 86400.0 * k) for k in range(3)]
    for tr in trips:
        n = tr["t_s"].shape[0]
        tr["t_s"] += rng.choice([0.0, 0.0, 0.0, -1.0], n)  # duplicate times
        jumps = rng.random(n) < 0.01
        tr["lat_deg"][jumps] += rng.choice([-1, 1], jumps.sum()) * rng.uniform(
            0.01, 0.3, jumps.sum())
        tr["lat_deg"][rng.random(n) < 0.02] = np.nan
        tr["accuracy_m"][rng.random(n) < 0.05] = 80.0
        tr["speed_mps"][rng.random(n) < 0.05] = np.nan
        tr["t_s"][1500:] += 4000.0  # a gap that splits
    tiny = _with_extras(track([10.0]), rng)
    empty = {k: v[:0] for k, v in tiny.items()}
    cols, offsets = batch(trips[0], empty, tiny, trips[1], trips[2])
    perm = np.concatenate([offsets[k] + rng.permutation(offsets[k + 1] - offsets[k])
                           for k in range(offsets.shape[0] - 1)])
    _assert_same({k: v[perm] for k, v in cols.items()}, offsets)


def test_no_streams_and_streams_without_trips():
    rng = np.random.default_rng(3)
    parked = _with_extras(track(np.zeros(400)), rng)
    cols, offsets = batch(parked, parked)
    ref = _assert_same(cols, offsets)
    assert ref.features.empty and ref.events.empty
    out = _stream({k: v[:0] for k, v in cols.items()}, None)
    assert out.features.empty and out.stream.shape == (0,)


def test_trips_with_more_events_than_slots_and_many_chunks(monkeypatch):
    # Two event slots per trip and chunks of a few hundred samples: trips overflow and are
    # re-run alone from their rows, and the batch spans many chunks.
    from telematics.core import features

    chunks = features._trip_chunks
    monkeypatch.setattr(features, "_trip_chunks", lambda offsets: chunks(offsets, 300))
    monkeypatch.setattr(features, "_SAMPLES_PER_EVENT_SLOT", 10**9)
    monkeypatch.setattr(features, "_MIN_EVENT_SLOTS", 2)
    rng = np.random.default_rng(5)
    cols, offsets = batch(*(_day(rng, T0 + 86400.0 * k) for k in range(4)))
    ref = _assert_same(cols, offsets)
    assert (ref.events.groupby("trip").size() > 2).any()
