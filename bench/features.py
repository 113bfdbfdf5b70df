"""GPS feature core throughput: the numba path against a numpy-vectorised one, serial and
parallel, plus the IMU path and one 20-minute trip end to end.

All measurements run in this process on the same synthetic batch of 1 Hz trips. The last
line printed is a JSON object with `gps_points_per_s` (the full path: clean, segment,
then kinematics, events and features, one thread), `parallel_speedup` (the same on two
threads), `ratio_vs_numpy` (the numpy implementation below against the same stages in
the core, i.e. `compute_trip_features` on the given trips: neither segments, and both
compute the same feature columns, which tests/core/test_bench_baseline.py checks),
`imu_samples_per_s` (null when the IMU module has no entry point) and `single_trip_ms`
(1,200 GPS fixes through `compute_trip_features` plus 30,000 IMU samples through the IMU
entry point, median after warm-up). Times are wall-clock; `gps_points_per_cpu_s` adds the
single-threaded full path per second of this process's CPU time, which is what the wall
figure would be on an idle machine (the two-core bench machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

# Idle OpenMP workers sleep instead of spinning: on a shared two-core machine a spinning
# worker steals the core the next serial measurement runs on.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from telematics.core.features import compute_trip_features, stream_trip_features
from telematics.core.params import DEFAULT_PARAMS, GpsParams
from telematics.core.timezones import utc_offsets_s

T0_S = 1_790_000_000.0
WGS84_A_M = 6378137.0
WGS84_E2 = (1 / 298.257223563) * (2 - 1 / 298.257223563)


def synthetic_trips(n_trips: int, n_points: int, seed: int = 7) -> dict[str, np.ndarray]:
    """1 Hz trips: speed mean-reverts to a cruising speed per trip, with red lights (30 s
    at rest every few minutes), occasional hard brakes, turns and fix noise."""
    rng = np.random.default_rng(seed)
    shape = (n_trips, n_points)
    cruise = rng.uniform(8.0, 33.0, n_trips)
    red = (np.arange(n_points)[None, :] + rng.integers(0, 240, (n_trips, 1))) % 240 < 30
    kick = rng.normal(0.0, 0.5, shape) - 4.5 * (rng.random(shape) < 0.004)
    speed = np.empty(shape)
    v = cruise.copy()
    for i in range(n_points):
        target = np.where(red[:, i], 0.0, cruise)
        v = np.clip(v + 0.12 * (target - v) + kick[:, i], 0.0, 40.0)
        speed[:, i] = v
    heading = np.radians(rng.uniform(0, 360, (n_trips, 1)) + np.cumsum(
        rng.normal(0.0, 4.0, shape) * (speed > 2.0), axis=1))
    lat0 = rng.uniform(45.0, 55.0, (n_trips, 1))
    s2 = np.sin(np.radians(lat0)) ** 2
    north_per_deg = math.pi / 180 * WGS84_A_M * (1 - WGS84_E2) / (1 - WGS84_E2 * s2) ** 1.5
    east_per_deg = math.pi / 180 * WGS84_A_M * np.cos(np.radians(lat0)) / np.sqrt(1 - WGS84_E2 * s2)
    lat = lat0 + np.cumsum(speed * np.cos(heading), axis=1) / north_per_deg
    lon = rng.uniform(3.0, 9.0, (n_trips, 1)) + np.cumsum(speed * np.sin(heading), axis=1) / east_per_deg
    lat += rng.normal(0.0, 1.5e-6, shape)
    t = T0_S + 3600.0 * np.arange(n_trips)[:, None] + np.arange(n_points)[None, :]
    limit = np.where(rng.random((n_trips, 1)) < 0.5, 50 / 3.6, np.nan) * np.ones(shape)
    return {
        "t_s": t.ravel(), "lat_deg": lat.ravel(), "lon_deg": lon.ravel(),
        "speed_mps": (speed + rng.normal(0, 0.1, shape)).clip(0).ravel(),
        "accuracy_m": rng.uniform(3.0, 12.0, shape).ravel(), "speed_limit_mps": limit.ravel(),
        "offsets": np.arange(n_trips + 1, dtype=np.int64) * n_points,
    }


def full_gps_path(b: dict[str, np.ndarray], parallel: bool) -> Any:
    """Clean, segment, then kinematics, events and features of the segmented trips, in
    the core's one pass over the streams (the same result as the three steps chained,
    see tests/core/test_stream.py)."""
    return stream_trip_features(
        b["t_s"], b["lat_deg"], b["lon_deg"], b["offsets"], speed_mps=b["speed_mps"],
        accuracy_m=b["accuracy_m"], speed_limit_mps=b["speed_limit_mps"],
        time_zone="Europe/Amsterdam", now_s=T0_S + 1e7, parallel=parallel,
    )


_DEG = math.pi / 180.0
_SEVERITY_NAMES = ("moderate", "medium", "high", "severe")


def _trip_reduce(ufunc: np.ufunc, x: np.ndarray, starts: np.ndarray, nonempty: np.ndarray,
                 fill: float = 0.0, dtype: Any = None) -> np.ndarray:
    """``ufunc`` over each trip's slice of the fix-aligned ``x`` (trips start at
    ``starts``, fixes in trip order); ``fill`` for trips without a fix."""
    if nonempty.all():
        return np.asarray(ufunc.reduceat(x, starts, dtype=dtype))
    out = np.full(starts.shape[0], fill, dtype=np.float64 if dtype is None else dtype)
    if nonempty.any():
        out[nonempty] = ufunc.reduceat(x, starts[nonempty], dtype=dtype)
    return out


def _runs(inside: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each run of True in ``inside``, cut before every index in
    ``stops`` (trip starts and steps longer than the gap)."""
    n = inside.shape[0]
    change = np.flatnonzero(inside[1:] != inside[:-1]) + 1
    if n and inside[0]:
        change = np.concatenate(([0], change))
    if n and inside[-1]:
        change = np.concatenate((change, [n]))
    starts, ends = change[0::2], change[1::2] - 1
    cut = stops[stops > 0]
    cut = cut[inside[cut] & inside[cut - 1]]
    if cut.shape[0]:
        starts = np.sort(np.concatenate((starts, cut)))
        ends = np.sort(np.concatenate((ends, cut - 1)))
    return starts, ends


def _threshold_events(
    inside: np.ndarray, value: np.ndarray, extreme: np.ufunc, t: np.ndarray, dt: np.ndarray,
    first: np.ndarray, stops: np.ndarray, min_s: float, merge_s: float, gap_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The core's threshold-run rule (``events._detect_runs``) over the whole batch: runs of
    in-samples with no step longer than ``gap_s``, each sample holding until the next
    (the last one for as long as the step before it), kept from ``min_s`` on, merged
    into the previous kept run when they start less than ``merge_s`` after its end with
    no long step between. Returns per event its first and last fix, end time and peak
    (``extreme`` of ``value``: np.maximum or np.minimum)."""
    starts, ends = _runs(inside, stops)
    n = t.shape[0]
    nxt = np.minimum(ends + 1, n - 1)
    next_ok = (ends + 1 < n) & ~first[nxt] & (dt[nxt] <= gap_s)
    prev_ok = ~first[ends] & (dt[ends] <= gap_s)
    end_t = t[ends] + np.where(next_ok, dt[nxt], np.where(prev_ok, dt[ends], 0.0))
    keep = end_t - t[starts] >= min_s - 1e-9
    starts, ends, end_t = starts[keep], ends[keep], end_t[keep]
    n_runs = starts.shape[0]
    if n_runs == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0), np.empty(0)
    new = np.ones(n_runs, dtype=bool)
    new[1:] = ((t[starts[1:]] - end_t[:-1] >= merge_s)
               | (np.searchsorted(stops, starts[1:], side="right")
                  != np.searchsorted(stops, ends[:-1], side="right")))
    bounds = np.empty(2 * n_runs, dtype=np.int64)
    bounds[0::2] = starts
    bounds[1::2] = ends + 1
    run_peak = extreme.reduceat(value, bounds[:-1] if bounds[-1] == n else bounds)[0::2]
    first_run = np.flatnonzero(new)
    last_run = np.append(first_run[1:] - 1, n_runs - 1)
    return (starts[first_run], ends[last_run], end_t[last_run],
            extreme.reduceat(run_peak, first_run))


def _search_sorted_near(key: np.ndarray, q: np.ndarray, side: str, offset: int) -> np.ndarray:
    """``np.searchsorted(key, q, side)`` for queries expected near ``arange + offset``
    (a window bound at a regular sampling rate): the guess is checked against its two
    neighbours in ``key`` and only the queries where it is wrong are searched."""
    m = key.shape[0]
    out = np.empty(q.shape[0], dtype=np.int64)
    wrong = np.ones(q.shape[0], dtype=bool)
    lo, hi = max(0, 1 - offset), min(q.shape[0], m - 1 - offset)
    if hi > lo:
        below = key[lo + offset - 1:hi + offset - 1]
        above = key[lo + offset:hi + offset]
        here = q[lo:hi]
        if side == "right":
            wrong[lo:hi] = ~((below <= here) & (above > here))
        else:
            wrong[lo:hi] = ~((below < here) & (above >= here))
        out[lo:hi] = np.arange(lo + offset, hi + offset)
    miss = np.flatnonzero(wrong)
    out[miss] = np.searchsorted(key, q[miss], side="right" if side == "right" else "left")
    return out


def _span_index(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indices lo[e]..hi[e] (inclusive) of every span back to back, and where each
    span begins in them."""
    length = hi - lo + 1
    begin = np.zeros(length.shape[0], dtype=np.int64)
    np.cumsum(length[:-1], out=begin[1:])
    return np.repeat(lo - begin, length) + np.arange(int(length.sum())), begin


def numpy_features(
    b: dict[str, np.ndarray], p: GpsParams = DEFAULT_PARAMS, *,
    time_zone: str = "Europe/Amsterdam", now_s: float = T0_S + 1e7,
) -> dict[str, np.ndarray]:
    """The GPS features of ``compute_trip_features`` vectorised with numpy over the whole
    batch, one array per trip keyed by the core's column names (tests/core/
    test_bench_baseline.py holds them to the core's values).

    Trips are taken as given (no segmentation). Cleaning is the core's fix filters as
    masks, with its implied-speed filter as one pass against the previous fix that
    passed the others (no re-anchoring). Everything else follows the kernels' rules:
    per-step values, gaps, Doppler path steps, time-centred context windows within a
    trip, the events' run, hold and merge rules with moderate bands and the cornering
    confirmations, the fatigue breaks, local time bands from the policy's IANA zone.
    No Python loop runs per sample or per trip; per-trip results come from segment
    reductions (``reduceat``, ``bincount``) and windows and lookups from ``searchsorted``
    on a time key made increasing over the whole batch.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return _numpy_features(b, p, time_zone, now_s)


def _numpy_features(b: dict[str, np.ndarray], p: GpsParams, time_zone: str,
                    now_s: float) -> dict[str, np.ndarray]:
    t, lat, lon = b["t_s"], b["lat_deg"], b["lon_deg"]
    n = t.shape[0]
    rx = b.get("speed_mps", np.full(n, np.nan))
    acc = b.get("accuracy_m", np.full(n, np.nan))
    limit = b.get("speed_limit_mps", np.full(n, np.nan))
    offsets = np.asarray(b["offsets"], dtype=np.int64)
    n_trips = offsets.shape[0] - 1
    prior = np.asarray(b.get("prior_driving_s", np.zeros(n_trips)), dtype=np.float64)
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    starts = offsets[:-1]

    # Sorting and received fixes (distinct times), as the core's sort_order and n_raw.
    first_raw = np.zeros(n, dtype=bool)
    first_raw[starts[nonempty]] = True
    later = t[1:] > t[:-1]
    if not (later | first_raw[1:]).all():
        trip_of = np.repeat(np.arange(n_trips), lengths)
        order = np.lexsort((limit, rx, lon, lat, acc, t, trip_of))
        t, lat, lon, rx, acc, limit = (a[order] for a in (t, lat, lon, rx, acc, limit))
        new_time = np.ones(n, dtype=bool)
        new_time[1:] = (t[1:] != t[:-1]) | first_raw[1:]
        n_raw = _trip_reduce(np.add, new_time, starts, nonempty, 0, np.int64)
    else:
        order = None
        n_raw = lengths
    utc_offset = utc_offsets_s(t, offsets, time_zone, now_s + p.max_future_s)

    # Cleaning: position, accuracy and far-future filters, then time must increase.
    ok = ((np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0) & ~((lat == 0.0) & (lon == 0.0))
          & ~(acc > p.max_accuracy_m) & (t <= now_s + p.max_future_s))
    if order is not None:
        # Of fixes sharing a time (sorted most accurate first), the first one passing.
        kept = np.flatnonzero(ok)
        trip_kept = np.searchsorted(starts, kept, side="right")
        repeat = np.zeros(kept.shape[0], dtype=bool)
        repeat[1:] = (t[kept[1:]] <= t[kept[:-1]]) & (trip_kept[1:] == trip_kept[:-1])
        ok[kept[repeat]] = False
    columns = (t, lat, lon, rx, acc, limit, utc_offset)
    kept_offsets = offsets

    def compact(mask: np.ndarray, cols: tuple[np.ndarray, ...], offs: np.ndarray,
                ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        idx = np.flatnonzero(mask)
        return tuple(c[idx] for c in cols), np.searchsorted(idx, offs).astype(np.int64)

    if not ok.all():
        columns, kept_offsets = compact(ok, columns, kept_offsets)

    def steps(cols: tuple[np.ndarray, ...], offs: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per fix i, the step from fix i-1: east, north, chord, dt (0 for a trip's first)."""
        t, lat, lon = cols[0], cols[1], cols[2]
        m = t.shape[0]
        first = np.zeros(m, dtype=bool)
        first[offs[:-1][np.diff(offs) > 0]] = True
        c = np.cos(lat * _DEG)
        w = c * c
        w -= 1.0
        w *= WGS84_E2
        w += 1.0  # 1 - e2 sin^2
        half_nc = np.sqrt(w)
        np.divide(0.5 * WGS84_A_M, half_nc, out=half_nc)  # N / 2
        half_m = half_nc * (1.0 - WGS84_E2)
        half_m /= w  # M / 2
        half_nc *= c  # N cos(lat) / 2
        east = np.empty(m)
        north = np.empty(m)
        east[:1] = north[:1] = 0.0
        e, no = east[1:], north[1:]
        np.subtract(lon[1:], lon[:-1], out=e)
        e *= _DEG
        wrap = (e >= math.pi) | (e < -math.pi)
        if wrap.any():
            e[wrap] = (e[wrap] + math.pi) % (2.0 * math.pi) - math.pi
        e *= np.add(half_nc[1:], half_nc[:-1], out=half_nc[:-1])
        np.subtract(lat[1:], lat[:-1], out=no)
        no *= _DEG
        no *= np.add(half_m[1:], half_m[:-1], out=half_m[:-1])
        east[first] = 0.0
        north[first] = 0.0
        chord = east * east
        chord += np.square(north, out=c)
        np.sqrt(chord, out=chord)
        dt = np.empty(m)
        dt[:1] = 0.0
        np.subtract(t[1:], t[:-1], out=dt[1:])
        dt[first] = 0.0
        return first, east, north, chord, dt

    first, east, north, chord, dt = steps(columns, kept_offsets)
    # Implied-speed filter: drop a fix reachable from the one before it only too fast,
    # unless the fix before was itself such a jump.
    fast = chord > p.max_implied_speed_mps * dt
    if fast.any():
        jump = fast.copy()
        jump[1:] &= ~fast[:-1]
        columns, kept_offsets = compact(~jump, columns, kept_offsets)
        first, east, north, chord, dt = steps(columns, kept_offsets)
        fast = chord > p.max_implied_speed_mps * dt
    t, lat, lon, rx, acc, limit, utc_offset = columns
    m = t.shape[0]
    kept_len = np.diff(kept_offsets)
    has_fix = kept_len > 0
    k_starts = kept_offsets[:-1]
    last = np.maximum(kept_offsets[1:] - 1, 0)
    start_t = np.full(n_trips, np.nan)
    start_t[has_fix] = t[k_starts[has_fix]]
    end_t = np.full(n_trips, np.nan)
    end_t[has_fix] = t[last[has_fix]]

    def per_trip(x: np.ndarray, ufunc: np.ufunc = np.add, fill: float = 0.0,
                 dtype: Any = None) -> np.ndarray:
        return _trip_reduce(ufunc, x, k_starts, has_fix, fill, dtype)

    # Kinematics (kinematics._trip_motion): gaps, Doppler path steps, speeds, turns.
    gap = first | (dt > p.gap_s) | fast
    gap_at = np.flatnonzero(gap)  # few: trip starts and gaps
    heading_ok = chord >= p.min_heading_speed_mps * dt
    heading_ok[gap_at] = False
    rx_ok = (rx >= 0.0) & (rx <= p.max_implied_speed_mps)
    path = chord.copy()
    if rx_ok.any():
        rxz = np.where(rx < p.standstill_speed_mps, 0.0, rx)
        doppler = rx_ok[1:] & rx_ok[:-1] & (dt[1:] <= p.gap_s)
        doppler[first[1:]] = False
        trapezoid = rxz[:-1] + rxz[1:]
        trapezoid *= 0.5
        trapezoid *= dt[1:]
        path[1:] = np.where(doppler, trapezoid, chord[1:])
    # Position speed over the non-gap steps on either side (0 / 0 = NaN without one).
    ng_chord = chord.copy()
    ng_chord[gap_at] = 0.0
    ng_dt = dt.copy()
    ng_dt[gap_at] = 0.0
    ng_chord[:-1] += ng_chord[1:]
    ng_dt[:-1] += ng_dt[1:]
    pos_speed = np.divide(ng_chord, ng_dt, out=ng_chord)
    speed = rx if rx_ok.all() else np.where(rx_ok, rx, pos_speed)
    accel = np.empty(m)
    np.subtract(speed[1:], speed[:-1], out=accel[:-1])
    accel[:-1] /= dt[1:]
    accel[gap_at[gap_at > 0] - 1] = np.nan
    accel[-1:] = np.nan
    jerk = np.full(m, np.nan)
    np.subtract(accel[1:-1], accel[:-2], out=jerk[:-2])
    half_span = np.full(m, np.nan)
    np.subtract(t[2:], t[:-2], out=half_span[1:-1])
    half_span *= 0.5
    jerk[:-2] /= half_span[1:-1]
    # Turn at fix i from its two step vectors; heading_rate_dps NaN without both headings.
    cross = north[1:-1] * east[2:]
    cross -= east[1:-1] * north[2:]
    dot = north[1:-1] * north[2:]
    dot += east[1:-1] * east[2:]
    rate_dps = np.full(m, np.nan)
    turn = np.arctan2(cross, dot, out=cross)
    turn /= half_span[1:-1]
    turn /= _DEG
    rate_dps[1:-1] = np.where(heading_ok[1:-1] & heading_ok[2:], turn, np.nan)

    # Events (events._gps_trip_events).
    stops = np.flatnonzero(first | (dt > p.gap_s))
    # A time key increasing over the whole batch: trip k's times shifted by a whole
    # number of seconds (exact for epoch times), trips spaced further apart than any
    # window or merge gap, so that searchsorted on it never crosses a trip boundary.
    margin = 8.0 + math.ceil(max(p.context_window_s, p.gap_s, p.harsh_merge_s,
                                 p.speeding_merge_s))
    t_first = np.floor(np.where(has_fix, start_t, 0.0))
    span = np.where(has_fix, np.ceil(end_t - t_first), 0.0) + margin
    trip_base = np.zeros(n_trips + 1)
    np.cumsum(span, out=trip_base[1:])
    shift = trip_base[:-1] - t_first
    shift_fix = np.repeat(shift, kept_len)
    key = t + shift_fix

    def trip_of(idx: np.ndarray) -> np.ndarray:
        return np.searchsorted(kept_offsets, idx, side="right") - 1

    counts = np.zeros((5, n_trips, 4), dtype=np.int64)  # kind, trip, severity
    seconds = np.zeros((5, n_trips, 4))

    def add_events(kind: int, start: np.ndarray, stop_t: np.ndarray, severity: np.ndarray,
                   ) -> None:
        cell = trip_of(start) * 4 + severity
        counts[kind] += np.bincount(cell, minlength=4 * n_trips).reshape(n_trips, 4)
        seconds[kind] += np.bincount(cell, weights=stop_t - t[start],
                                     minlength=4 * n_trips).reshape(n_trips, 4)

    def bands(peak_abs: np.ndarray, high: float, severe: float) -> np.ndarray:
        return 1 + (peak_abs >= high).astype(np.int64) + (peak_abs >= severe)

    for kind, sign, harsh, moderate, high, severe in (
        (0, -1.0, p.brake_harsh_mps2, p.brake_moderate_mps2, p.brake_band_high_mps2,
         p.brake_band_severe_mps2),
        (1, 1.0, p.accel_harsh_mps2, p.accel_moderate_mps2, p.accel_band_high_mps2,
         p.accel_band_severe_mps2),
    ):
        extreme = np.minimum if sign < 0 else np.maximum
        found = []
        for level in (harsh, moderate):
            inside = accel <= -level if sign < 0 else accel >= level
            found.append(_threshold_events(inside, accel, extreme, t, dt, first, stops,
                                           p.harsh_min_duration_s, p.harsh_merge_s, p.gap_s))
        (h_start, _, h_end_t, h_peak), (m_start, _, m_end_t, _) = found
        add_events(kind, h_start, h_end_t, bands(np.abs(h_peak), high, severe))
        # A moderate event overlapping a harsh one of its kind is that harsh event.
        h_trip = trip_of(h_start)
        m_trip = trip_of(m_start)
        h_end_key = h_end_t + shift[h_trip]
        h = np.searchsorted(h_end_key, key[m_start], side="right")
        hc = np.minimum(h, max(h_start.shape[0] - 1, 0))
        overlap = (h < h_start.shape[0])
        if h_start.shape[0]:
            overlap &= (h_trip[hc] == m_trip) & (key[h_start[hc]] < m_end_t + shift[m_trip])
        moderate_only = ~overlap
        add_events(kind, m_start[moderate_only], m_end_t[moderate_only],
                   np.zeros(int(moderate_only.sum()), dtype=np.int64))

    # Cornering: lateral acceleration over two consecutive turns, confirmed by speed at
    # the peak, a heading change over the widened manoeuvre and the fixes' accuracy.
    lat2 = np.full(m, np.nan)
    hs0 = half_span[1:-2]
    hs1 = half_span[2:-1]
    two = np.multiply(rate_dps[1:-2], hs0, out=lat2[1:-2])
    two += rate_dps[2:-1] * hs1
    two /= hs0 + hs1
    two *= _DEG
    two *= np.add(speed[1:-2], speed[2:-1])
    two *= -0.5
    lateral = np.abs(lat2)
    c_start, c_end, c_end_t, c_peak = _threshold_events(
        lateral >= p.corner_lateral_mps2, lateral, np.maximum, t, dt, first, stops,
        p.harsh_min_duration_s, p.harsh_merge_s, p.gap_s)
    if c_start.shape[0]:
        idx, begin = _span_index(c_start, c_end)
        is_peak = np.flatnonzero(lateral[idx] == np.repeat(c_peak, c_end - c_start + 1))
        owner = np.searchsorted(begin, is_peak, side="right") - 1
        first_hit = np.ones(is_peak.shape[0], dtype=bool)
        first_hit[1:] = owner[1:] != owner[:-1]
        peak_at = idx[is_peak[first_hit]]
        fast_enough = speed[peak_at] > p.corner_min_speed_mps
        c_start, c_end, c_end_t, c_peak = (a[fast_enough] for a in (c_start, c_end, c_end_t,
                                                                     c_peak))
    if c_start.shape[0]:
        wide_lo, wide_hi = _runs(lateral >= 0.5 * p.corner_lateral_mps2, stops[:0])
        lo = wide_lo[np.searchsorted(wide_lo, c_start, side="right") - 1]
        hi = wide_hi[np.searchsorted(wide_hi, c_end, side="left")]
        idx, begin = _span_index(lo, hi + 1)
        turn_deg = np.add.reduceat(rate_dps[idx] * 0.5 * (t[idx + 1] - t[idx - 1]), begin)
        idx, begin = _span_index(lo - 1, hi + 2)
        vague = np.logical_or.reduceat(acc[idx] > p.corner_max_accuracy_m, begin)
        corner = (np.abs(turn_deg) > p.corner_min_heading_change_deg) & ~vague
        add_events(2, c_start[corner], c_end_t[corner],
                   bands(c_peak[corner], p.corner_band_high_mps2, p.corner_band_severe_mps2))

    # Speeding: over the posted limit plus the tolerance, else the fallback limit.
    excess = speed - np.where(limit > 0.0, limit + p.speeding_tolerance_mps,
                              p.speeding_fallback_limit_mps)
    s_start, _, s_end_t, s_peak = _threshold_events(
        excess >= 0.0, excess, np.maximum, t, dt, first, stops, p.speeding_min_duration_s,
        p.speeding_merge_s, p.gap_s)
    add_events(3, s_start, s_end_t, bands(s_peak, p.speeding_band_high_mps,
                                          p.speeding_band_severe_mps))

    # Fatigue: driving time over moving steps since the trip's start (plus the prior
    # driving) or the last break, a stop of at least fatigue_break_s (standing or no data).
    mean_v = np.full(m, np.nan)
    mean_v[1:] = 0.5 * (speed[:-1] + speed[1:])
    driving_step = ~first & (dt <= p.gap_s) & (mean_v >= p.moving_speed_mps)
    driven = np.cumsum(np.where(driving_step, dt, 0.0))
    stop_lo, stop_hi = _runs(~first & ~driving_step, stops[:0])
    stop_s = np.empty(0)
    if stop_lo.shape[0]:
        bounds = np.empty(2 * stop_lo.shape[0], dtype=np.int64)
        bounds[0::2] = stop_lo
        bounds[1::2] = stop_hi + 1
        stop_s = np.add.reduceat(dt, bounds[:-1] if bounds[-1] == m else bounds)[0::2]
    brk = np.flatnonzero(stop_s >= p.fatigue_break_s)
    brk_lo, brk_hi = stop_lo[brk], stop_hi[brk]
    # Driving stretches start at a trip's first fix (with the prior driving) and at the
    # last step of each break (with none); each ends at the next break of its trip, else
    # at the trip's end (at the start of the stop the trip ends in, if it does).
    with_fix = np.flatnonzero(has_fix)
    seg_at = np.concatenate((k_starts[with_fix], brk_hi))
    seg_order = np.argsort(seg_at, kind="stable")
    seg_at = seg_at[seg_order]
    seg_base = np.concatenate((prior[with_fix], np.zeros(brk.shape[0])))[seg_order]
    seg_trip = np.concatenate((with_fix, trip_of(brk_hi)))[seg_order]
    seg_brk = np.concatenate((np.full(with_fix.shape[0], -1), np.arange(brk.shape[0])))[
        seg_order]
    n_seg = seg_at.shape[0]
    broken = np.zeros(n_seg, dtype=bool)
    broken[:-1] = seg_brk[1:] >= 0
    next_brk = np.zeros(n_seg, dtype=np.int64)
    if brk.shape[0]:
        next_brk[:-1] = brk_lo[np.maximum(seg_brk[1:], 0)]
    trip_last = last[seg_trip]
    trailing = ~first[trip_last] & ~driving_step[trip_last]
    trail_lo = (stop_lo[np.maximum(np.searchsorted(stop_lo, trip_last, side="right") - 1, 0)]
                if stop_lo.shape[0] else trip_last)
    seg_end = np.where(broken, next_brk - 1, np.where(trailing, trail_lo - 1, trip_last))
    seg_last = np.where(broken, next_brk, trip_last)
    onset = np.searchsorted(driven, driven[seg_at] + np.maximum(
        p.fatigue_driving_s - seg_base, 0.0), side="right")
    tired = onset <= seg_last
    add_events(4, onset[tired], t[seg_end[tired]], np.full(int(tired.sum()), 2))
    driving_end = prior.copy()
    final = ~broken
    driving_end[seg_trip[final]] = (seg_base[final] + driven[trip_last[final]]
                                    - driven[seg_at[final]])

    # Trip features (features._trip_features). Sums over steps weight a mask by the
    # step's time or driven distance, both finite and 0 at a trip's first fix.
    local = np.zeros(m)
    np.multiply(dt[1:], 0.5, out=local[1:])
    local[1:] += t[:-1]
    local[1:] += 0.5 * (utc_offset[:-1] + utc_offset[1:])
    day = local / 86400.0
    np.floor(day, out=day)
    hour = day * -86400.0
    hour += local
    hour /= 3600.0

    def in_band(start_h: float, end_h: float) -> np.ndarray:
        if start_h <= end_h:
            return (hour >= start_h) & (hour < end_h)
        return (hour >= start_h) | (hour < end_h)

    night = in_band(p.night_start_h, p.night_end_h)
    rush = (in_band(p.rush_morning_start_h, p.rush_morning_end_h)
            | in_band(p.rush_evening_start_h, p.rush_evening_end_h))
    # 1970-01-01 was a Thursday: (day + 3) mod 7 counts weekdays from Monday = 0.
    day += 3.0
    weekday = day - 7.0 * np.floor(day / 7.0)
    rush &= weekday < 5.0
    gap_step = gap & ~first
    no_gap = ~gap
    move_v = mean_v
    no_v = ~(move_v == move_v) & ~first
    if no_v.any():
        move_v = mean_v.copy()
        move_v[no_v] = path[no_v] / dt[no_v]
    moving = no_gap & (move_v >= p.moving_speed_mps)
    idle = no_gap & ~moving
    limit_known = np.zeros(m, dtype=bool)
    np.greater(limit[:-1], 0.0, out=limit_known[1:])
    limit_known &= moving
    # Road context: mean known speed over [t - w/2, t + w/2] within the trip.
    # The bounds come from searchsorted on the batch's time key, seeded with where they
    # fall at the typical sampling step.
    half = 0.5 * p.context_window_s
    typical_dt = float(np.median(dt[1::97])) if m > 1 else 0.0
    reach = int(half / typical_dt) if typical_dt > 0.0 else 0
    hi_w = _search_sorted_near(key, t + half + shift_fix, "right", reach + 1)
    lo_w = _search_sorted_near(key, t - half + shift_fix, "left", -reach)
    known = speed == speed
    speed_sum = np.zeros(m + 1)
    if known.all():
        np.cumsum(speed, out=speed_sum[1:])
        in_window = hi_w - lo_w
    else:
        np.cumsum(np.where(known, speed, 0.0), out=speed_sum[1:])
        speed_n = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(known, out=speed_n[1:])
        in_window = speed_n[hi_w] - speed_n[lo_w]
    context = speed_sum[hi_w]
    context -= speed_sum[lo_w]
    context /= in_window
    urban = np.zeros(m, dtype=bool)
    motorway = np.zeros(m, dtype=bool)
    rural = np.zeros(m, dtype=bool)
    np.less(context[:-1], p.urban_max_mps, out=urban[1:])
    np.greater_equal(context[:-1], p.motorway_min_mps, out=motorway[1:])
    np.equal(context[:-1], context[:-1], out=rural[1:])
    urban &= no_gap
    motorway &= no_gap
    rural &= no_gap & ~urban & ~motorway
    # Heatmap: time of non-gap steps by the speed and acceleration bin of their first
    # fix. Bins count the edges at or below the value; counts 0 and len(edges) (below,
    # above, NaN) fall into border cells that are cut off after the sum.
    s_edges = np.asarray(p.heatmap_speed_edges_mps)
    a_edges = np.asarray(p.heatmap_accel_edges_mps2)
    n_s, n_a = s_edges.shape[0] - 1, a_edges.shape[0] - 1
    cell = np.zeros(m, dtype=np.int64)
    cell[1:] = (n_s + 2) * (n_a + 2) * np.repeat(np.arange(n_trips), kept_len)[1:]
    sb = np.zeros(max(m - 1, 0), dtype=np.min_scalar_type((n_s + 2) * (n_a + 2)))
    for edge in s_edges:
        sb += speed[:-1] >= edge
    sb *= n_a + 2
    for edge in a_edges:
        sb += accel[:-1] >= edge
    cell[1:] += sb
    heat = np.bincount(cell, weights=dt * no_gap, minlength=n_trips * (n_s + 2) * (n_a + 2))
    heat = heat.reshape(n_trips, n_s + 2, n_a + 2)[:, 1:-1, 1:-1].reshape(n_trips, -1)

    def fsum(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
        return per_trip(x * mask)

    def count(mask: np.ndarray) -> np.ndarray:
        return per_trip(mask, dtype=np.int64)

    n_kept = kept_len
    duration = np.where(has_fix, end_t - start_t, 0.0)
    distance = per_trip(path)
    moving_s = fsum(moving, dt)
    # Means over the fixes where a value is known (NaN elsewhere).
    jerk_abs = np.abs(jerk)
    jerk_ok = jerk_abs == jerk_abs
    acc_ok = acc == acc
    span_acc = p.max_accuracy_m - p.quality_accuracy_good_m
    good = (np.clip((p.max_accuracy_m - acc) / span_acc, 0.0, 1.0) if span_acc > 0
            else np.ones(m))
    discrepancy = np.abs(rx - pos_speed)
    disc_ok = discrepancy == discrepancy
    acc_n = count(acc_ok)
    gap_time = fsum(gap_step, dt)
    kept_share = np.where(n_raw > 0, n_kept / np.maximum(n_raw, 1), np.nan)
    coverage = np.where(duration > 0.0, 1.0 - gap_time / duration, np.nan)
    accuracy_score = np.where(acc_n > 0, per_trip(np.where(acc_ok, good, 0.0)) / acc_n, 1.0)
    accuracy_score[~has_fix] = np.nan
    roads = {"urban": fsum(urban, path), "rural": fsum(rural, path),
             "motorway": fsum(motorway, path)}
    classified = roads["urban"] + roads["rural"] + roads["motorway"]
    out: dict[str, np.ndarray] = {
        "start_t_s": start_t, "end_t_s": end_t, "n_samples_raw": n_raw,
        "n_samples": n_kept, "distance_m": distance, "duration_s": duration,
        "moving_s": moving_s, "idle_s": fsum(idle, dt), "gap_time_s": gap_time,
        "n_gaps": count(gap_step), "gap_distance_m": fsum(gap_step, path),
        "night_distance_m": fsum(night, path), "night_s": fsum(night, dt),
        "rush_distance_m": fsum(rush, path), "rush_s": fsum(rush, dt),
        **{f"{r}_distance_m": v for r, v in roads.items()},
        "speed_max_mps": per_trip(speed, np.fmax, np.nan),
        "speed_mean_mps": np.where(moving_s > 0.0, fsum(moving, path) / moving_s, np.nan),
        "limit_known_share": np.where(moving_s > 0.0, fsum(limit_known, dt) / moving_s,
                                      np.nan),
        "jerk_abs_mean_mps3": per_trip(np.fmax(jerk_abs, 0.0)) / count(jerk_ok),
        "driving_end_s": driving_end, "kept_share": kept_share, "coverage_share": coverage,
        "accuracy_score": accuracy_score,
        "mean_accuracy_m": per_trip(np.where(acc_ok, acc, 0.0)) / acc_n,
        "speed_discrepancy_mps": per_trip(np.fmax(discrepancy, 0.0)) / count(disc_ok),
        "quality_score": np.where((n_kept >= 2) & (duration > 0.0),
                                  kept_share * coverage * accuracy_score, 0.0),
        "scored": (n_kept >= 2) & (distance >= p.min_trip_distance_m)
        & (duration >= p.min_trip_duration_s),
        "position_distance_m": per_trip(chord),
        **{f"{r}_share": v / np.where(classified > 0.0, classified, np.nan)
           for r, v in roads.items()},
    }
    per_100km = 1e5 / np.where(distance > 0.0, distance, np.nan)
    for k, name in enumerate(("braking", "acceleration", "cornering", "speeding", "fatigue")):
        for s, level in enumerate(_SEVERITY_NAMES):
            if s or k < 2:
                out[f"n_{name}_{level}"] = counts[k, :, s]
        out[f"n_{name}"] = counts[k, :, 1:].sum(axis=1)
        out[f"{name}_s"] = seconds[k, :, 1:].sum(axis=1)
        out[f"{name}_per_100km"] = out[f"n_{name}"] * per_100km
        if k < 2:
            out[f"{name}_moderate_per_100km"] = counts[k, :, 0] * per_100km
    out["speeding_share"] = out["speeding_s"] / np.where(moving_s > 0.0, moving_s, np.nan)
    for i in range(n_s):
        for j in range(n_a):
            out[f"heatmap_s_v{i}_a{j}"] = heat[:, i * n_a + j]
    return out


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def synthetic_imu(n_trips: int, seconds: int, hz: int = 25, seed: int = 3) -> dict[str, Any]:
    """A phone lying rotated in the car: vehicle accelerations seen through a fixed rotation."""
    rng = np.random.default_rng(seed)
    n = seconds * hz
    a_long = np.repeat(rng.normal(0, 0.8, (n_trips, seconds)), hz, axis=1)
    a_lat = np.repeat(rng.normal(0, 0.5, (n_trips, seconds)), hz, axis=1)
    g = 9.80665
    rot = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, 0.6], [-0.6, 0.0, 0.8]])
    vehicle = np.stack([a_long, a_lat, np.full_like(a_long, g)], axis=-1)
    phone = vehicle @ rot.T + rng.normal(0, 0.05, (n_trips, n, 3))
    speed = np.clip(12 + np.cumsum(a_long[:, ::hz], axis=1), 0, 38)
    return {
        "imu_t_s": (T0_S + np.arange(n_trips)[:, None] * 3600.0 + np.arange(n)[None] / hz).ravel(),
        "acc": [phone[..., k].ravel() for k in range(3)],
        "imu_offsets": np.arange(n_trips + 1, dtype=np.int64) * n,
        "gps_t_s": (T0_S + np.arange(n_trips)[:, None] * 3600.0 + np.arange(seconds)[None]).ravel(),
        "gps_speed_mps": speed.ravel(),
        "gps_offsets": np.arange(n_trips + 1, dtype=np.int64) * seconds,
    }


def imu_runner(imu: dict[str, Any]) -> Callable[[], Any] | None:
    """The IMU engineer's batch entry point over ``imu``, if telematics.core.imu has one."""
    try:
        from telematics.core.imu import process_imu
    except ImportError:
        return None

    def run() -> Any:
        return process_imu(imu["imu_t_s"], *imu["acc"], imu["imu_offsets"], imu["gps_t_s"],
                           imu["gps_speed_mps"], imu["gps_offsets"])

    try:
        run()
    except (TypeError, ValueError):
        return None
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under 60 s")
    args = parser.parse_args()
    n_trips = 1000 if args.quick else 4000
    repeats = 3 if args.quick else 5
    batch = synthetic_trips(n_trips, 1200)
    n_points = batch["t_s"].shape[0]

    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    full_gps_path(batch, parallel=False)
    full_gps_path(batch, parallel=True)
    # Serial and parallel runs alternate, so that a change of load on the shared machine
    # hits both sides of the speedup alike.
    serial_s = serial_cpu_s = parallel_s = math.inf
    for _ in range(repeats):
        numba.set_num_threads(1)
        cpu_start = time.process_time()
        serial_s = min(serial_s, best_of(lambda: full_gps_path(batch, parallel=False), 1))
        serial_cpu_s = min(serial_cpu_s, time.process_time() - cpu_start)
        numba.set_num_threads(threads)
        parallel_s = min(parallel_s, best_of(lambda: full_gps_path(batch, parallel=True), 1))
    numba.set_num_threads(1)
    features_only_s = best_of(lambda: compute_trip_features(
        batch["t_s"], batch["lat_deg"], batch["lon_deg"], batch["offsets"],
        speed_mps=batch["speed_mps"], accuracy_m=batch["accuracy_m"],
        speed_limit_mps=batch["speed_limit_mps"], time_zone="Europe/Amsterdam",
        now_s=T0_S + 1e7), repeats)
    numpy_s = best_of(lambda: numpy_features(batch), 2)

    one = synthetic_trips(1, 1200, seed=11)
    imu_one = synthetic_imu(1, 1200)
    imu_one_run = imu_runner(imu_one)

    def single_trip() -> None:
        compute_trip_features(one["t_s"], one["lat_deg"], one["lon_deg"],
                              speed_mps=one["speed_mps"], accuracy_m=one["accuracy_m"],
                              speed_limit_mps=one["speed_limit_mps"],
                              time_zone="Europe/Amsterdam", now_s=T0_S + 1e7)
        if imu_one_run is not None:
            imu_one_run()

    single_trip()
    single_s = sorted(best_of(single_trip, 1) for _ in range(31))[15]

    imu_points_per_s = None
    imu = synthetic_imu(20 if args.quick else 160, 1200)
    imu_run = imu_runner(imu)
    if imu_run is not None:
        # One run is a few milliseconds: more repeats cost nothing and steady the best.
        imu_points_per_s = imu["imu_t_s"].shape[0] / best_of(imu_run, 4 * repeats)

    print(f"batch: {n_trips} trips x 1200 points = {n_points:,} GPS points")
    print(f"full GPS path, 1 thread:       {serial_s * 1e3:8.1f} ms  {n_points / serial_s / 1e6:6.2f} M pts/s"
          f"  ({serial_cpu_s * 1e3:.1f} ms of CPU: {n_points / serial_cpu_s / 1e6:.2f} M pts per CPU-s)")
    print(f"features only, 1 thread:       {features_only_s * 1e3:8.1f} ms  {n_points / features_only_s / 1e6:6.2f} M pts/s")
    print(f"full GPS path, {threads} threads:      {parallel_s * 1e3:8.1f} ms  speedup {serial_s / parallel_s:.2f}x")
    print(f"numpy vectorised features:     {numpy_s * 1e3:8.1f} ms  {n_points / numpy_s / 1e6:6.2f} M pts/s"
          f"  (core {numpy_s / features_only_s:.2f}x faster on the same stages)")
    if imu_points_per_s is not None:
        print(f"IMU path, 1 thread:            {imu_points_per_s / 1e6:6.2f} M samples/s")
    print(f"one 20-min trip end to end:    {single_s * 1e3:8.3f} ms (median of 31)")
    print(json.dumps({
        "gps_points_per_s": round(n_points / serial_s),
        "gps_points_per_cpu_s": round(n_points / serial_cpu_s),
        "parallel_speedup": round(serial_s / parallel_s, 3),
        "ratio_vs_numpy": round(numpy_s / features_only_s, 3),
        "imu_samples_per_s": None if imu_points_per_s is None else round(imu_points_per_s),
        "single_trip_ms": round(single_s * 1e3, 3),
    }))


if __name__ == "__main__":
    main()
