"""Per-trip features from raw GPS trips in one fused pass per trip (clean, kinematics,
events and features), or from device streams cleaned and cut into trips on the way,
serially or with a parallel loop over trips."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numba
import numpy as np
import pandas as pd

from telematics.core.checks import (
    FloatArray,
    IntArray,
    float_column,
    offsets_column,
    optional_float_column,
)
from telematics.core.clean import _clean_trip, sort_order
from telematics.core.events import (
    EV_END_T,
    EV_LAT,
    EV_LON,
    EV_PEAK,
    EV_SPEED,
    EV_START_T,
    EVENT_KINDS,
    N_EV_FLOAT,
    SEV_MODERATE,
    SEVERITIES,
    _gps_trip_events,
)
from telematics.core.jit import dynamic_schedule, serial
from telematics.core.jit import parallel as parallel_jit
from telematics.core.kinematics import _trip_motion
from telematics.core.params import DEFAULT_PARAMS, GpsParams, KernelParams
from telematics.core.segment import _segment_stream
from telematics.core.timezones import utc_offsets_s

KERNEL_COLUMNS: tuple[str, ...] = (
    "start_t_s", "end_t_s", "n_samples_raw", "n_samples", "distance_m", "duration_s",
    "moving_s", "idle_s", "gap_time_s", "n_gaps", "gap_distance_m",
    "night_distance_m", "night_s", "rush_distance_m", "rush_s",
    "urban_distance_m", "rural_distance_m", "motorway_distance_m",
    "speed_max_mps", "speed_mean_mps", "limit_known_share", "jerk_abs_mean_mps3",
    "driving_end_s", "kept_share", "coverage_share", "accuracy_score", "mean_accuracy_m",
    "speed_discrepancy_mps", "quality_score", "scored", "position_distance_m",
)
_F = {name: i for i, name in enumerate(KERNEL_COLUMNS)}
F_START_T, F_END_T, F_N_RAW, F_N, F_DIST, F_DUR = (_F[c] for c in KERNEL_COLUMNS[:6])
F_MOVING, F_IDLE, F_GAP_T, F_N_GAPS, F_GAP_D = (_F[c] for c in KERNEL_COLUMNS[6:11])
F_NIGHT_D, F_NIGHT_T, F_RUSH_D, F_RUSH_T = (_F[c] for c in KERNEL_COLUMNS[11:15])
F_URBAN, F_RURAL, F_MOTORWAY = (_F[c] for c in KERNEL_COLUMNS[15:18])
F_VMAX, F_VMEAN, F_LIMIT_KNOWN, F_JERK, F_DRIVING_END = (_F[c] for c in KERNEL_COLUMNS[18:23])
F_KEPT, F_COVERAGE, F_ACC_SCORE, F_ACC_MEAN, F_DISCREPANCY, F_QUALITY, F_SCORED = (
    _F[c] for c in KERNEL_COLUMNS[23:30]
)
F_POS_DIST = _F["position_distance_m"]
N_KERNEL_COLUMNS = len(KERNEL_COLUMNS)
SECONDS_PER_DAY = 86400.0


@serial
def _in_band(hour: float, start_h: float, end_h: float) -> bool:
    """Whether a local hour of day lies in [start_h, end_h), a band that may wrap midnight."""
    if start_h <= end_h:
        return start_h <= hour < end_h
    return hour >= start_h or hour < end_h


@serial
def _bin_index(x: float, edges: FloatArray) -> int:
    """Index of the bin [edges[b], edges[b+1]) holding x, or -1 outside or NaN.

    Counts the inner edges at or below x without branching: accelerations hop between
    neighbouring bins from one fix to the next, and a search mispredicts on each hop.
    """
    last = edges.shape[0] - 1
    if not (edges[0] <= x < edges[last]):
        return -1
    b = 0
    for j in range(1, last):
        b += x >= edges[j]
    return b


@serial
def _trip_features(
    t_s: FloatArray, chord_m: FloatArray, dist_m: FloatArray, gap_before: np.ndarray,
    speed_mps: FloatArray,
    pos_speed_mps: FloatArray, rx_speed_mps: FloatArray, accel_mps2: FloatArray,
    jerk_mps3: FloatArray, accuracy_m: FloatArray, speed_limit_mps: FloatArray,
    utc_offset_s: FloatArray, n_raw: int, p: KernelParams,
    speed_edges_mps: FloatArray, accel_edges_mps2: FloatArray,
    feat: FloatArray, heat: FloatArray, context: FloatArray,
) -> None:
    """Fill one trip's kernel feature row (``KERNEL_COLUMNS``) and heatmap row (seconds).

    ``dist_m`` is the driven distance per step (kinematics' ``path_m``), ``chord_m`` the
    geodesic step between fixes (kinematics' ``dist_m``); ``context`` is scratch of at
    least the trip's length.
    """
    m = t_s.shape[0]
    for c in range(feat.shape[0]):
        if c != F_DRIVING_END:
            feat[c] = 0.0
    heat[:] = 0.0
    feat[F_N_RAW] = n_raw
    feat[F_N] = m
    feat[F_KEPT] = m / n_raw if n_raw > 0 else math.nan
    if m == 0:
        for c in (F_START_T, F_END_T, F_VMAX, F_VMEAN, F_LIMIT_KNOWN, F_JERK, F_COVERAGE,
                  F_ACC_SCORE, F_ACC_MEAN, F_DISCREPANCY):
            feat[c] = math.nan
        return
    feat[F_START_T] = t_s[0]
    feat[F_END_T] = t_s[m - 1]
    duration = t_s[m - 1] - t_s[0]
    feat[F_DUR] = duration
    # Road context: mean speed over a centred window, so a red light on a rural road
    # stays rural; two pointers keep it linear. The per-fix sums ride along.
    half = 0.5 * p.context_window_s
    lo = 0
    hi = 0
    total = 0.0
    count = 0
    vmax = -math.inf
    jerk_sum = 0.0
    jerk_n = 0
    acc_sum = 0.0
    acc_score = 0.0
    acc_n = 0
    disc_sum = 0.0
    disc_n = 0
    span = p.max_accuracy_m - p.quality_accuracy_good_m
    for i in range(m):
        while hi < m and t_s[hi] <= t_s[i] + half:
            if speed_mps[hi] == speed_mps[hi]:
                total += speed_mps[hi]
                count += 1
            hi += 1
        while t_s[lo] < t_s[i] - half:
            if speed_mps[lo] == speed_mps[lo]:
                total -= speed_mps[lo]
                count -= 1
            lo += 1
        context[i] = total / count if count > 0 else math.nan
        if speed_mps[i] > vmax:
            vmax = speed_mps[i]
        if jerk_mps3[i] == jerk_mps3[i]:
            jerk_sum += abs(jerk_mps3[i])
            jerk_n += 1
        a = accuracy_m[i]
        if a == a:
            acc_sum += a
            acc_n += 1
            acc_score += min(1.0, max(0.0, (p.max_accuracy_m - a) / span)) if span > 0 else 1.0
        diff = rx_speed_mps[i] - pos_speed_mps[i]
        if diff == diff:
            disc_sum += abs(diff)
            disc_n += 1
    n_accel_bins = accel_edges_mps2.shape[0] - 1
    dist = 0.0
    chord = 0.0
    night_d = 0.0
    night_t = 0.0
    rush_d = 0.0
    rush_t = 0.0
    gap_t = 0.0
    gap_d = 0.0
    n_gaps = 0
    moving = 0.0
    idle = 0.0
    moving_dist = 0.0
    limit_known = 0.0
    urban = 0.0
    rural = 0.0
    motorway = 0.0
    day_start = math.inf
    weekday = False
    for i in range(1, m):
        dt = t_s[i] - t_s[i - 1]
        d = dist_m[i]
        dist += d
        chord += chord_m[i]
        local = t_s[i - 1] + 0.5 * dt + 0.5 * (utc_offset_s[i - 1] + utc_offset_s[i])
        if not day_start <= local < day_start + SECONDS_PER_DAY:
            day = math.floor(local / SECONDS_PER_DAY)
            day_start = day * SECONDS_PER_DAY
            # 1970-01-01 was a Thursday: (day + 3) % 7 counts weekdays from Monday = 0.
            weekday = (day + 3) % 7 < 5
        hour = (local - day_start) / 3600.0
        if _in_band(hour, p.night_start_h, p.night_end_h):
            night_d += d
            night_t += dt
        if weekday and (
            _in_band(hour, p.rush_morning_start_h, p.rush_morning_end_h)
            or _in_band(hour, p.rush_evening_start_h, p.rush_evening_end_h)
        ):
            rush_d += d
            rush_t += dt
        if gap_before[i]:
            gap_t += dt
            n_gaps += 1
            gap_d += d
            continue
        v = 0.5 * (speed_mps[i - 1] + speed_mps[i])
        if not v == v:
            v = d / dt
        if v >= p.moving_speed_mps:
            moving += dt
            moving_dist += d
            if speed_limit_mps[i - 1] > 0.0:
                limit_known += dt
        else:
            idle += dt
        ctx = context[i - 1]
        if ctx < p.urban_max_mps:
            urban += d
        elif ctx >= p.motorway_min_mps:
            motorway += d
        elif ctx == ctx:
            rural += d
        sb = _bin_index(speed_mps[i - 1], speed_edges_mps)
        ab = _bin_index(accel_mps2[i - 1], accel_edges_mps2)
        if sb >= 0 and ab >= 0:
            heat[sb * n_accel_bins + ab] += dt
    feat[F_DIST] = dist
    feat[F_POS_DIST] = chord
    feat[F_NIGHT_D] = night_d
    feat[F_NIGHT_T] = night_t
    feat[F_RUSH_D] = rush_d
    feat[F_RUSH_T] = rush_t
    feat[F_GAP_T] = gap_t
    feat[F_GAP_D] = gap_d
    feat[F_N_GAPS] = n_gaps
    feat[F_MOVING] = moving
    feat[F_IDLE] = idle
    feat[F_URBAN] = urban
    feat[F_RURAL] = rural
    feat[F_MOTORWAY] = motorway
    feat[F_VMAX] = vmax if vmax > -math.inf else math.nan
    feat[F_VMEAN] = moving_dist / moving if moving > 0.0 else math.nan
    feat[F_LIMIT_KNOWN] = limit_known / moving if moving > 0.0 else math.nan
    feat[F_JERK] = jerk_sum / jerk_n if jerk_n > 0 else math.nan
    feat[F_ACC_MEAN] = acc_sum / acc_n if acc_n > 0 else math.nan
    feat[F_ACC_SCORE] = acc_score / acc_n if acc_n > 0 else 1.0
    feat[F_DISCREPANCY] = disc_sum / disc_n if disc_n > 0 else math.nan
    feat[F_COVERAGE] = 1.0 - feat[F_GAP_T] / duration if duration > 0.0 else math.nan
    if m >= 2 and duration > 0.0:
        feat[F_QUALITY] = feat[F_KEPT] * feat[F_COVERAGE] * feat[F_ACC_SCORE]
    if m >= 2 and feat[F_DIST] >= p.min_trip_distance_m and duration >= p.min_trip_duration_s:
        feat[F_SCORED] = 1.0


# Rows of a chunk's float scratch: the trip's gathered columns, then its kinematics.
(_S_T, _S_LAT, _S_LON, _S_ACC, _S_RX, _S_LIMIT, _S_OFFSET, _S_CHORD, _S_DIST, _S_POS_SPEED,
 _S_SPEED, _S_ACCEL, _S_JERK, _S_HEADING_RATE, _S_LAT_ACCEL, _S_EAST, _S_NORTH,
 _S_CONTEXT) = range(18)
_N_SCRATCH_ROWS = 18


@serial
def _steps_within_clean_speed(t_s: FloatArray, chord_m: FloatArray, p: KernelParams) -> bool:
    """Whether every step needs clearly less than ``max_implied_speed_mps``: then cleaning
    the trip again would keep every fix (its step lengths differ from the kinematics' by
    the radii interpolation, under 1e-8 relative, far inside the 1e-6 margin)."""
    limit = p.max_implied_speed_mps * (1.0 - 1e-6)
    for i in range(1, t_s.shape[0]):
        if not chord_m[i] <= limit * (t_s[i] - t_s[i - 1]):
            return False
    return True


@serial
def _gather_columns(scratch: FloatArray, rows: IntArray, m: int, t_s: FloatArray,
                    lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
                    rx_speed_mps: FloatArray, speed_limit_mps: FloatArray,
                    utc_offset_s: FloatArray) -> None:
    """Copy fixes ``rows[:m]`` of the columns into the scratch rows, in order; the columns
    may be those scratch rows themselves when ``rows[j] >= j`` (forward compaction)."""
    for j in range(m):
        i = rows[j]
        scratch[_S_T, j] = t_s[i]
        scratch[_S_LAT, j] = lat_deg[i]
        scratch[_S_LON, j] = lon_deg[i]
        scratch[_S_ACC, j] = accuracy_m[i]
        scratch[_S_RX, j] = rx_speed_mps[i]
        scratch[_S_LIMIT, j] = speed_limit_mps[i]
        scratch[_S_OFFSET, j] = utc_offset_s[i]


@serial
def _gathered_pipeline(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
    rx_speed_mps: FloatArray, speed_limit_mps: FloatArray, utc_offset_s: FloatArray,
    rows: IntArray, n_raw: int, reclean: bool, now_s: float, prior_driving_s: float,
    p: KernelParams, speed_edges_mps: FloatArray, accel_edges_mps2: FloatArray,
    feat: FloatArray, heat: FloatArray, ev_kind: IntArray, ev_sev: IntArray, ev_f: FloatArray,
    keep: IntArray, scratch: FloatArray, flags: np.ndarray, ev_ints: IntArray,
    ev_floats: FloatArray,
) -> int:
    """Kinematics, events and features of the trip made of the fixes ``rows`` (increasing
    indices of clean fixes into the columns); return its event count.

    With ``reclean`` the trip is first cleaned again as :func:`_trip_pipeline` would
    clean it, which changes it only where a step needs the implied-speed filter (a jump
    the stream's cleaning re-anchored on); the check rides on the kinematics. Scratch as
    in :func:`_trip_pipeline`.
    """
    m = rows.shape[0]
    first = rows[0] if m > 0 else 0
    if m > 0 and rows[m - 1] - first == m - 1:
        # No fix dropped inside the trip (the usual case): read the columns in place.
        t = t_s[first:first + m]
        lat = lat_deg[first:first + m]
        lon = lon_deg[first:first + m]
        acc = accuracy_m[first:first + m]
        rx = rx_speed_mps[first:first + m]
        limit = speed_limit_mps[first:first + m]
        offset = utc_offset_s[first:first + m]
    else:
        _gather_columns(scratch, rows, m, t_s, lat_deg, lon_deg, accuracy_m, rx_speed_mps,
                        speed_limit_mps, utc_offset_s)
        t = scratch[_S_T, :m]
        lat = scratch[_S_LAT, :m]
        lon = scratch[_S_LON, :m]
        acc = scratch[_S_ACC, :m]
        rx = scratch[_S_RX, :m]
        limit = scratch[_S_LIMIT, :m]
        offset = scratch[_S_OFFSET, :m]
    # Cornering sums two consecutive turns (see _gps_trip_events), so every turn must be
    # exact: no floor below which the kinematics skip the arctangent.
    lat_floor = 0.0
    _trip_motion(t, lat, lon, rx, p, lat_floor, scratch[_S_CHORD, :m], scratch[_S_DIST, :m],
                 flags[0, :m], scratch[_S_POS_SPEED, :m], scratch[_S_SPEED, :m],
                 scratch[_S_ACCEL, :m], scratch[_S_JERK, :m], scratch[_S_HEADING_RATE, :m],
                 scratch[_S_LAT_ACCEL, :m], scratch[_S_EAST, :m], scratch[_S_NORTH, :m],
                 flags[1, :m])
    if reclean and not _steps_within_clean_speed(t, scratch[_S_CHORD, :m], p):
        kept = _clean_trip(t, lat, lon, acc, now_s, p, keep)
        if kept < m:
            # Forward compaction (keep[j] >= j), in place when the columns are scratch.
            _gather_columns(scratch, keep, kept, t, lat, lon, acc, rx, limit, offset)
            m = kept
            t = scratch[_S_T, :m]
            lat = scratch[_S_LAT, :m]
            lon = scratch[_S_LON, :m]
            acc = scratch[_S_ACC, :m]
            rx = scratch[_S_RX, :m]
            limit = scratch[_S_LIMIT, :m]
            offset = scratch[_S_OFFSET, :m]
            _trip_motion(t, lat, lon, rx, p, lat_floor, scratch[_S_CHORD, :m],
                         scratch[_S_DIST, :m], flags[0, :m], scratch[_S_POS_SPEED, :m],
                         scratch[_S_SPEED, :m], scratch[_S_ACCEL, :m], scratch[_S_JERK, :m],
                         scratch[_S_HEADING_RATE, :m], scratch[_S_LAT_ACCEL, :m],
                         scratch[_S_EAST, :m], scratch[_S_NORTH, :m], flags[1, :m])
    speed = scratch[_S_SPEED, :m]
    accel = scratch[_S_ACCEL, :m]
    n_events = _gps_trip_events(t, lat, lon, speed, accel, scratch[_S_HEADING_RATE, :m], acc,
                                limit,
                                prior_driving_s, p, ev_kind, ev_sev, ev_f,
                                feat[F_DRIVING_END:F_DRIVING_END + 1], ev_ints, ev_floats)
    _trip_features(t, scratch[_S_CHORD, :m], scratch[_S_DIST, :m], flags[0, :m], speed,
                   scratch[_S_POS_SPEED, :m], rx, accel, scratch[_S_JERK, :m], acc, limit,
                   offset, n_raw, p,
                   speed_edges_mps, accel_edges_mps2, feat, heat, scratch[_S_CONTEXT, :m])
    return n_events


@serial
def _trip_pipeline(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
    rx_speed_mps: FloatArray, speed_limit_mps: FloatArray, utc_offset_s: FloatArray,
    now_s: float, prior_driving_s: float, p: KernelParams,
    speed_edges_mps: FloatArray, accel_edges_mps2: FloatArray,
    feat: FloatArray, heat: FloatArray, ev_kind: IntArray, ev_sev: IntArray, ev_f: FloatArray,
    keep: IntArray, scratch: FloatArray, flags: np.ndarray, ev_ints: IntArray,
    ev_floats: FloatArray,
) -> int:
    """Clean, kinematics, events and features of one raw trip; return its event count.

    The rest is scratch with at least the trip's length per row, reused from trip to trip:
    ``keep``, ``scratch[_N_SCRATCH_ROWS]``, ``flags[2]`` and the events' ``ev_ints[6]``
    and ``ev_floats[4]``.
    """
    m = _clean_trip(t_s, lat_deg, lon_deg, accuracy_m, now_s, p, keep)
    # Received fixes count distinct times, so a re-sent upload does not lower kept_share.
    n_raw = 0
    for i in range(t_s.shape[0]):
        if i == 0 or t_s[i] != t_s[i - 1]:
            n_raw += 1
    return _gathered_pipeline(t_s, lat_deg, lon_deg, accuracy_m, rx_speed_mps,
                              speed_limit_mps, utc_offset_s, keep[:m], n_raw, False, now_s,
                              prior_driving_s, p, speed_edges_mps, accel_edges_mps2, feat,
                              heat, ev_kind, ev_sev, ev_f, keep, scratch, flags, ev_ints,
                              ev_floats)


def _features_batch(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
    rx_speed_mps: FloatArray, speed_limit_mps: FloatArray, utc_offset_s: FloatArray,
    offsets: IntArray, chunks: IntArray, ev_offsets: IntArray, now_s: float,
    prior_driving_s: FloatArray, p: KernelParams, speed_edges_mps: FloatArray,
    accel_edges_mps2: FloatArray,
    feat: FloatArray, heat: FloatArray, ev_kind: IntArray, ev_sev: IntArray, ev_f: FloatArray,
    n_events: IntArray,
) -> None:
    """Run :func:`_trip_pipeline` per trip; trip k owns ``feat[k]``, ``heat[k]``,
    ``n_events[k]`` and event slots ``ev_offsets[k]:ev_offsets[k + 1]``.

    The loop runs over chunks of trips ``chunks[c]:chunks[c + 1]`` of similar sample
    counts (see :func:`_trip_chunks`); each chunk allocates its scratch once.
    """
    for c in numba.prange(chunks.shape[0] - 1):
        k0 = chunks[c]
        k1 = chunks[c + 1]
        longest = 0
        for k in range(k0, k1):
            longest = max(longest, offsets[k + 1] - offsets[k])
        keep = np.empty(longest, dtype=np.int64)
        scratch = np.empty((_N_SCRATCH_ROWS, longest))
        flags = np.empty((2, longest), dtype=np.bool_)
        ev_ints = np.empty((6, longest), dtype=np.int64)
        ev_floats = np.empty((4, longest))
        for k in range(k0, k1):
            s = offsets[k]
            e = offsets[k + 1]
            es = ev_offsets[k]
            ee = ev_offsets[k + 1]
            n_events[k] = _trip_pipeline(
                t_s[s:e], lat_deg[s:e], lon_deg[s:e], accuracy_m[s:e], rx_speed_mps[s:e],
                speed_limit_mps[s:e], utc_offset_s[s:e], now_s, prior_driving_s[k], p,
                speed_edges_mps, accel_edges_mps2, feat[k], heat[k], ev_kind[es:ee],
                ev_sev[es:ee], ev_f[es:ee], keep, scratch, flags, ev_ints, ev_floats,
            )


_features_serial = serial(_features_batch)
_features_parallel = parallel_jit(_features_batch)


def _clean_trip_rows_batch(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
    rx_speed_mps: FloatArray, speed_limit_mps: FloatArray, utc_offset_s: FloatArray,
    rows: IntArray, trip_start: IntArray, trip_stop: IntArray, chunks: IntArray,
    ev_offsets: IntArray, now_s: float, prior_driving_s: FloatArray, p: KernelParams,
    speed_edges_mps: FloatArray, accel_edges_mps2: FloatArray,
    feat: FloatArray, heat: FloatArray, ev_kind: IntArray, ev_sev: IntArray, ev_f: FloatArray,
    n_events: IntArray,
) -> None:
    """:func:`_features_batch` for trips of clean fixes read in place: trip k is the
    fixes ``rows[trip_start[k]:trip_stop[k]]`` of the columns, and it is cleaned again
    only where that could change it (see :func:`_gathered_pipeline`)."""
    for c in numba.prange(chunks.shape[0] - 1):
        k0 = chunks[c]
        k1 = chunks[c + 1]
        longest = 0
        for k in range(k0, k1):
            longest = max(longest, trip_stop[k] - trip_start[k])
        keep = np.empty(longest, dtype=np.int64)
        scratch = np.empty((_N_SCRATCH_ROWS, longest))
        flags = np.empty((2, longest), dtype=np.bool_)
        ev_ints = np.empty((6, longest), dtype=np.int64)
        ev_floats = np.empty((4, longest))
        for k in range(k0, k1):
            trip_rows = rows[trip_start[k]:trip_stop[k]]
            es = ev_offsets[k]
            ee = ev_offsets[k + 1]
            n_events[k] = _gathered_pipeline(
                t_s, lat_deg, lon_deg, accuracy_m, rx_speed_mps, speed_limit_mps,
                utc_offset_s, trip_rows, trip_rows.shape[0], True, now_s, prior_driving_s[k],
                p, speed_edges_mps, accel_edges_mps2, feat[k], heat[k], ev_kind[es:ee],
                ev_sev[es:ee], ev_f[es:ee], keep, scratch, flags, ev_ints, ev_floats,
            )


_rows_features_serial = serial(_clean_trip_rows_batch)
_rows_features_parallel = parallel_jit(_clean_trip_rows_batch)


def _clean_and_segment_streams(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
    offsets: IntArray, now_s: float, p: KernelParams, stop_radius_m: float,
    stop_min_s: float, split_gap_s: float, core_radius_m: float,
    rows: IntArray, start_slot: IntArray, stop_slot: IntArray, dist_slot: FloatArray,
    n_trips: IntArray,
) -> None:
    """Per stream k: the indices of its kept fixes into ``rows[offsets[k]:]`` (as
    :func:`telematics.core.clean.clean_gps`), then its trips as
    :func:`telematics.core.segment.segment_trips` cuts them, trip q of the stream being
    ``rows[offsets[k] + start_slot[offsets[k] + q]:offsets[k] + stop_slot[...]]``, and
    their count into ``n_trips[k]``."""
    for k in numba.prange(offsets.shape[0] - 1):
        s = offsets[k]
        e = offsets[k + 1]
        kept = rows[s:e]
        m = _clean_trip(t_s[s:e], lat_deg[s:e], lon_deg[s:e], accuracy_m[s:e], now_s, p, kept)
        for j in range(m):
            kept[j] += s
        if m > 0 and kept[m - 1] - kept[0] == m - 1:
            # No fix dropped (the usual case): segment the columns in place.
            t = t_s[kept[0]:kept[0] + m]
            lat = lat_deg[kept[0]:kept[0] + m]
            lon = lon_deg[kept[0]:kept[0] + m]
        else:
            t = np.empty(m)
            lat = np.empty(m)
            lon = np.empty(m)
            for j in range(m):
                t[j] = t_s[kept[j]]
                lat[j] = lat_deg[kept[j]]
                lon[j] = lon_deg[kept[j]]
        n_trips[k] = _segment_stream(t, lat, lon, stop_radius_m, stop_min_s, split_gap_s,
                                     core_radius_m, False, start_slot[s:e], stop_slot[s:e],
                                     dist_slot[s:e])


_streams_serial = serial(_clean_and_segment_streams)
_streams_parallel = parallel_jit(_clean_and_segment_streams)


EVENT_COLUMNS: tuple[str, ...] = (
    "trip", "kind", "severity", "start_t_s", "end_t_s", "duration_s", "peak_value",
    "speed_mps", "lat_deg", "lon_deg",
)
# Kinds whose events can come from the IMU instead of GPS (see ``imu_trips``).
IMU_KINDS: tuple[str, ...] = ("braking", "acceleration", "cornering")
DEFAULT_EXTRA_KINDS: tuple[str, ...] = ("phone_handling",)
# GPS kinds with a moderate band; extra kinds keep all bands.
_MODERATE_KINDS = ("braking", "acceleration")
_COUNT_COLUMNS = ("n_samples_raw", "n_samples", "n_gaps")


class TripFeatures(NamedTuple):
    """Result of :func:`compute_trip_features`: one feature row per trip, one row per event."""

    features: pd.DataFrame
    events: pd.DataFrame


class _EventArrays(NamedTuple):
    trip: IntArray
    kind: IntArray
    severity: IntArray
    values: FloatArray  # columns EV_START_T ... EV_LON

    @staticmethod
    def concat(parts: Sequence[_EventArrays]) -> _EventArrays:
        return _EventArrays(*(np.concatenate([getattr(p, f) for p in parts])
                              for f in _EventArrays._fields))

    def take(self, sel: Any) -> _EventArrays:
        return _EventArrays(self.trip[sel], self.kind[sel], self.severity[sel], self.values[sel])


def heatmap_columns(params: GpsParams = DEFAULT_PARAMS) -> list[str]:
    """Names of the speed-acceleration heatmap columns, speed bin major."""
    n_speed = len(params.heatmap_speed_edges_mps) - 1
    n_accel = len(params.heatmap_accel_edges_mps2) - 1
    return [f"heatmap_s_v{i}_a{j}" for i in range(n_speed) for j in range(n_accel)]


# Samples per chunk of trips handed to a thread: enough to amortise the chunk's scratch,
# few enough that two threads balance on a batch of a few hundred trips.
_CHUNK_SAMPLES = 16384
# Event slots per trip: one per this many samples plus a floor; a trip with more events
# (an event every few samples) is re-run alone with a provable bound.
_SAMPLES_PER_EVENT_SLOT = 8
_MIN_EVENT_SLOTS = 16


def _trip_chunks(offsets: IntArray, chunk_samples: int = _CHUNK_SAMPLES) -> IntArray:
    """Trip boundaries ``chunks[n_chunks + 1]`` cutting the batch into runs of trips of
    about ``chunk_samples`` samples each (a long trip is a chunk of its own)."""
    n_trips = offsets.shape[0] - 1
    marks = np.arange(chunk_samples, offsets[-1], chunk_samples, dtype=np.int64)
    cuts = np.searchsorted(offsets[:-1], marks, side="left")
    return np.unique(np.concatenate(([0], cuts, [n_trips])).astype(np.int64))


@serial
def _compact_events(
    ev_offsets: IntArray, n_events: IntArray, ev_kind: IntArray, ev_sev: IntArray,
    ev_f: FloatArray, out_offsets: IntArray,
    trip_out: IntArray, kind_out: IntArray, sev_out: IntArray, f_out: FloatArray,
) -> None:
    """Move each trip's written events from its slots to ``out_offsets[k]:``."""
    for k in range(n_events.shape[0]):
        o = out_offsets[k]
        for q in range(out_offsets[k + 1] - o):
            slot = ev_offsets[k] + q
            trip_out[o + q] = k
            kind_out[o + q] = ev_kind[slot]
            sev_out[o + q] = ev_sev[slot]
            for c in range(N_EV_FLOAT):
                f_out[o + q, c] = ev_f[slot, c]


def _run_kernel(
    columns: tuple[FloatArray, ...], offsets: IntArray, capacity: IntArray, now_s: float,
    prior: FloatArray, p: KernelParams, edges: tuple[FloatArray, FloatArray], n_heat: int,
    use_parallel: bool, trip_rows: tuple[IntArray, IntArray, IntArray] | None = None,
) -> tuple[FloatArray, FloatArray, _EventArrays, IntArray, IntArray]:
    """Run the batch kernel; return features, heatmap, the events that fit their slots,
    each trip's true event count and its slot count.

    Trips are raw slices ``offsets`` of ``columns``, or with ``trip_rows`` = (rows,
    start, stop) clean fixes ``rows[start[k]:stop[k]]`` (``offsets`` then only give
    their lengths)."""
    n_trips = offsets.shape[0] - 1
    ev_offsets = np.zeros(n_trips + 1, dtype=np.int64)
    np.cumsum(capacity, out=ev_offsets[1:])
    n_slots = int(ev_offsets[-1])
    feat = np.empty((n_trips, N_KERNEL_COLUMNS))
    heat = np.empty((n_trips, n_heat))
    ev_kind = np.empty(n_slots, dtype=np.int64)
    ev_sev = np.empty(n_slots, dtype=np.int64)
    ev_f = np.empty((n_slots, N_EV_FLOAT))
    n_events = np.empty(n_trips, dtype=np.int64)
    kernel: Any
    if trip_rows is None:
        kernel = _features_parallel if use_parallel else _features_serial
        trips: tuple[IntArray, ...] = (offsets,)
    else:
        kernel = _rows_features_parallel if use_parallel else _rows_features_serial
        trips = trip_rows
    with dynamic_schedule(1):
        kernel(*columns, *trips, _trip_chunks(offsets), ev_offsets, now_s, prior, p,
               edges[0], edges[1], feat, heat, ev_kind, ev_sev, ev_f, n_events)
    out_offsets = np.zeros(n_trips + 1, dtype=np.int64)
    np.cumsum(np.minimum(n_events, capacity), out=out_offsets[1:])
    n_out = int(out_offsets[-1])
    events = _EventArrays(np.empty(n_out, dtype=np.int64), np.empty(n_out, dtype=np.int64),
                          np.empty(n_out, dtype=np.int64), np.empty((n_out, N_EV_FLOAT)))
    _compact_events(ev_offsets, n_events, ev_kind, ev_sev, ev_f, out_offsets, *events)
    return feat, heat, events, n_events, capacity


def _extra_event_arrays(extra: pd.DataFrame, n_trips: int, kinds: list[str]) -> _EventArrays:
    """Validate ``extra_events`` and code it like kernel events (new kinds join ``kinds``)."""
    for col in ("trip", "kind", "start_t_s", "end_t_s"):
        if col not in extra.columns:
            raise ValueError(f"extra_events: missing column {col!r}")
    trip = np.asarray(extra["trip"])
    if not np.issubdtype(trip.dtype, np.integer) or (
        trip.size and (trip.min() < 0 or trip.max() >= n_trips)
    ):
        raise ValueError(f"extra_events: 'trip' must be integers in [0, {n_trips})")
    names = extra["kind"].astype(str).to_numpy()
    kinds.extend(sorted(set(names) - set(kinds)))
    kind = np.array([kinds.index(k) for k in names], dtype=np.int64)
    if "severity" in extra.columns:
        sev_names = extra["severity"].astype(str).to_numpy()
        if not np.isin(sev_names, SEVERITIES).all():
            raise ValueError(f"extra_events: 'severity' must be one of {SEVERITIES}")
        sev = np.array([SEVERITIES.index(v) for v in sev_names], dtype=np.int64)
    else:
        sev = np.full(trip.shape[0], SEVERITIES.index("medium"), dtype=np.int64)
    values = np.full((trip.shape[0], N_EV_FLOAT), np.nan)
    for col, c in (("start_t_s", EV_START_T), ("end_t_s", EV_END_T), ("peak_value", EV_PEAK),
                   ("speed_mps", EV_SPEED), ("lat_deg", EV_LAT), ("lon_deg", EV_LON)):
        if col in extra.columns:
            values[:, c] = float_column(f"extra_events.{col}", extra[col],
                                        finite=c in (EV_START_T, EV_END_T))
    if (values[:, EV_END_T] < values[:, EV_START_T]).any():
        raise ValueError("extra_events: 'end_t_s' before 'start_t_s'")
    return _EventArrays(trip.astype(np.int64), kind, sev, values)


def _event_columns(
    ev: _EventArrays, n_trips: int, kinds: Sequence[str], distance_m: FloatArray,
    moving_s: FloatArray,
) -> dict[str, Any]:
    """Counts, harsh-event time and rates per 100 km by kind and severity."""
    n_kinds = len(kinds)
    n_sev = len(SEVERITIES)
    cell = (ev.trip * n_kinds + ev.kind) * n_sev + ev.severity
    size = n_trips * n_kinds * n_sev
    counts = np.bincount(cell, minlength=size).reshape(n_trips, n_kinds, n_sev)
    seconds = np.bincount(cell, weights=ev.values[:, EV_END_T] - ev.values[:, EV_START_T],
                          minlength=size).reshape(n_trips, n_kinds, n_sev)
    per_100km = 1e5 / np.where(distance_m > 0.0, distance_m, np.nan)
    cols: dict[str, Any] = {}
    for k, name in enumerate(kinds):
        has_moderate = name in _MODERATE_KINDS or name not in EVENT_KINDS
        for s, level in enumerate(SEVERITIES):
            if s != SEV_MODERATE or has_moderate:
                cols[f"n_{name}_{level}"] = counts[:, k, s]
        harsh = counts[:, k, SEV_MODERATE + 1:].sum(axis=1)
        cols[f"n_{name}"] = harsh
        cols[f"{name}_s"] = seconds[:, k, SEV_MODERATE + 1:].sum(axis=1)
        cols[f"{name}_per_100km"] = harsh * per_100km
        if has_moderate:
            cols[f"{name}_moderate_per_100km"] = counts[:, k, SEV_MODERATE] * per_100km
    cols["speeding_share"] = cols["speeding_s"] / np.where(moving_s > 0.0, moving_s, np.nan)
    return cols


@functools.lru_cache(maxsize=64)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    """Column labels, built once per layout: making a string Index costs more than the
    kernel for one trip."""
    return pd.Index(names)


@functools.lru_cache(maxsize=64)
def _categories(names: tuple[str, ...], ordered: bool) -> pd.CategoricalDtype:
    """A categorical dtype, built once per set of names (as :func:`_column_index`)."""
    return pd.CategoricalDtype(pd.Index(names), ordered=ordered)


def _stack(columns: list[Any], n_rows: int, dtype: type) -> np.ndarray:
    out: np.ndarray = np.empty((n_rows, len(columns)), dtype=dtype)
    for c, values in enumerate(columns):
        out[:, c] = values
    return out


def _gps_columns(t_s: Any, lat_deg: Any, lon_deg: Any, speed_mps: Any, accuracy_m: Any,
                 speed_limit_mps: Any, offsets: Any) -> tuple[FloatArray, FloatArray, FloatArray,
                                                           FloatArray, FloatArray, FloatArray,
                                                           IntArray]:
    """The public wrappers' GPS columns, validated (each error names its column)."""
    t = float_column("t_s", t_s, finite=True)
    n = t.shape[0]
    return (t, float_column("lat_deg", lat_deg, n), float_column("lon_deg", lon_deg, n),
            optional_float_column("speed_mps", speed_mps, n),
            optional_float_column("accuracy_m", accuracy_m, n),
            optional_float_column("speed_limit_mps", speed_limit_mps, n),
            offsets_column(offsets, n))


def compute_trip_features(
    t_s: Any, lat_deg: Any, lon_deg: Any, offsets: Any = None, *,
    speed_mps: Any = None, accuracy_m: Any = None, speed_limit_mps: Any = None,
    time_zone: str | Sequence[str] = "UTC", now_s: float | None = None,
    prior_driving_s: Any = None, extra_events: pd.DataFrame | None = None,
    imu_trips: Any = None, params: GpsParams = DEFAULT_PARAMS, parallel: bool = False,
) -> TripFeatures:
    """Features and events of a batch of raw GPS trips (the full GPS path of the core).

    Inputs are flat per-sample columns with trips at ``offsets[n_trips + 1]`` (default:
    one trip): ``t_s`` (seconds since the epoch, UTC, finite; any order, duplicates
    allowed), ``lat_deg``/``lon_deg`` (NaN for a dropout) and optionally the receiver's
    ``speed_mps``, ``accuracy_m`` and the posted ``speed_limit_mps`` (NaN where unknown).
    ``time_zone`` is the policy's IANA zone, one for all trips or one per trip, used for
    night and rush-hour bands. ``now_s`` (default: the clock) bounds far-future fixes.
    ``prior_driving_s[n_trips]`` carries driving time without a break from earlier trips
    into the fatigue rule. ``extra_events`` adds events found elsewhere (phone handling,
    IMU harsh events) with columns ``trip``, ``kind``, ``start_t_s``, ``end_t_s`` and
    optionally ``severity``, ``peak_value``, ``speed_mps``, ``lat_deg``, ``lon_deg``;
    for trips flagged in ``imu_trips`` (bool per trip, the IMU was oriented), GPS
    braking, acceleration and cornering events are dropped in favour of the extra
    events of those kinds (none if the IMU found none). ``parallel`` runs
    trips on all numba threads; results do not depend on it.

    Returns the feature table (one row per trip, columns in docs/FEATURES.md) and the
    event table (``EVENT_COLUMNS``), sorted by trip and start time.
    """
    return compute_trip_feature_blocks(
        t_s, lat_deg, lon_deg, offsets, speed_mps=speed_mps, accuracy_m=accuracy_m,
        speed_limit_mps=speed_limit_mps, time_zone=time_zone, now_s=now_s,
        prior_driving_s=prior_driving_s, extra_events=extra_events, imu_trips=imu_trips,
        params=params, parallel=parallel).frames()


def compute_trip_feature_blocks(
    t_s: Any, lat_deg: Any, lon_deg: Any, offsets: Any = None, *,
    speed_mps: Any = None, accuracy_m: Any = None, speed_limit_mps: Any = None,
    time_zone: str | Sequence[str] = "UTC", now_s: float | None = None,
    prior_driving_s: Any = None, extra_events: pd.DataFrame | None = None,
    imu_trips: Any = None, params: GpsParams = DEFAULT_PARAMS, parallel: bool = False,
) -> FeatureBlocks:
    """:func:`compute_trip_features` without the tables: their blocks and the coded
    events, for callers of one trip (real-time scoring) that read a row as scalars."""
    t, lat, lon, rx, acc, limit, offs = _gps_columns(t_s, lat_deg, lon_deg, speed_mps,
                                                     accuracy_m, speed_limit_mps, offsets)
    n_trips = offs.shape[0] - 1
    if prior_driving_s is None:
        prior = np.zeros(n_trips)
    else:
        prior = float_column("prior_driving_s", prior_driving_s, finite=True)
        if prior.shape[0] != n_trips or (prior < 0).any():
            raise ValueError(f"prior_driving_s: expected {n_trips} non-negative values")
    imu = np.zeros(n_trips, dtype=bool) if imu_trips is None else np.asarray(imu_trips, bool)
    if imu.shape != (n_trips,):
        raise ValueError(f"imu_trips: expected {n_trips} booleans, got shape {imu.shape}")
    now = time.time() if now_s is None else float(now_s)
    if not math.isfinite(now):
        raise ValueError("now_s: must be finite")
    order = sort_order(t, offs, acc, lat, lon, rx, limit)
    if order is not None:
        t, lat, lon, rx, acc, limit = (a[order] for a in (t, lat, lon, rx, acc, limit))
    utc_offset = utc_offsets_s(t, offs, time_zone, now + params.max_future_s)
    p = params.kernel()
    edges = (np.asarray(params.heatmap_speed_edges_mps, dtype=np.float64),
             np.asarray(params.heatmap_accel_edges_mps2, dtype=np.float64))
    n_heat = (edges[0].shape[0] - 1) * (edges[1].shape[0] - 1)
    columns = (t, lat, lon, acc, rx, limit, utc_offset)
    feat, heat, events, n_events, capacity = _run_kernel(
        columns, offs, np.diff(offs) // _SAMPLES_PER_EVENT_SLOT + _MIN_EVENT_SLOTS, now, prior,
        p, edges, n_heat, parallel,
    )
    return _assemble(feat, heat, events, n_events, capacity,
                     lambda k: tuple(a[offs[k]:offs[k + 1]] for a in columns), now, prior, p,
                     edges, imu, extra_events, params)


def _assemble(
    feat: FloatArray, heat: FloatArray, events: _EventArrays, n_events: IntArray,
    capacity: IntArray, trip_columns: Callable[[int], tuple[FloatArray, ...]], now: float,
    prior: FloatArray, p: KernelParams, edges: tuple[FloatArray, FloatArray],
    imu: np.ndarray, extra_events: pd.DataFrame | None, params: GpsParams,
) -> FeatureBlocks:
    """The feature and event blocks from the batch kernel's output; ``trip_columns(k)``
    gives trip k's raw kernel columns to re-run a trip whose events overflowed."""
    n_trips = feat.shape[0]
    n_heat = heat.shape[1]
    parts = [events]
    # A trip with more events than slots (rare: an event every few samples) is re-run
    # alone with a provable bound: each of its seven detections finds at most one event
    # per sample.
    overflow = np.flatnonzero(n_events > capacity)
    if overflow.shape[0]:
        parts[0] = events.take(~np.isin(events.trip, overflow))
        for k in overflow:
            trip = trip_columns(int(k))
            n_k = trip[0].shape[0]
            f1, h1, ev1, _, _ = _run_kernel(
                trip, np.array([0, n_k], dtype=np.int64), np.array([7 * n_k + 1]), now,
                prior[k:k + 1], p, edges, n_heat, False,
            )
            feat[k], heat[k] = f1[0], h1[0]
            parts.append(ev1._replace(trip=np.full(ev1.trip.shape[0], k, dtype=np.int64)))
    kinds = list(EVENT_KINDS)
    if imu.any():
        imu_codes = [EVENT_KINDS.index(k) for k in IMU_KINDS]
        parts = [e.take(~(imu[e.trip] & np.isin(e.kind, imu_codes))) for e in parts]
    if extra_events is not None:
        extra = _extra_event_arrays(extra_events, n_trips, kinds)
        doubled = np.isin(extra.kind, [EVENT_KINDS.index(k) for k in IMU_KINDS]) & ~imu[extra.trip]
        if doubled.any():
            raise ValueError(
                f"extra_events: {kinds[extra.kind[doubled][0]]} events for trip "
                f"{extra.trip[doubled][0]}, which is not flagged in imu_trips (GPS events of "
                "that kind would be counted twice)"
            )
        parts.append(extra)
    kinds += [k for k in DEFAULT_EXTRA_KINDS if k not in kinds]
    ev = _EventArrays.concat(parts)
    ev = ev.take(np.lexsort((ev.kind, ev.values[:, EV_START_T], ev.trip)))
    columns_out: dict[str, Any] = {name: feat[:, c] for c, name in enumerate(KERNEL_COLUMNS)}
    roads = feat[:, [F_URBAN, F_RURAL, F_MOTORWAY]]
    classified = roads.sum(axis=1)
    classified = np.where(classified > 0.0, classified, np.nan)
    for r, road in enumerate(("urban", "rural", "motorway")):
        columns_out[f"{road}_share"] = roads[:, r] / classified
    columns_out.update(_event_columns(ev, n_trips, kinds, feat[:, F_DIST], feat[:, F_MOVING]))
    del columns_out["scored"]
    counts = ("trip", *_COUNT_COLUMNS, *(c for c in columns_out if c.startswith("n_")
                                          and c not in _COUNT_COLUMNS))
    columns_out["trip"] = np.arange(n_trips)
    floats = tuple(c for c in columns_out if c not in counts)
    return FeatureBlocks(
        counts, _stack([columns_out[c] for c in counts], n_trips, np.int64),
        floats, _stack([columns_out[c] for c in floats], n_trips, np.float64),
        tuple(heatmap_columns(params)), heat, feat[:, F_SCORED] > 0.5, ev, tuple(kinds))


class FeatureBlocks(NamedTuple):
    """The feature table as its blocks by dtype (counts, floats, heatmap seconds, scored;
    one row per trip) and the coded events: what :class:`TripFeatures` is built from, and
    what a caller of one trip reads without building frames (:meth:`row`)."""

    count_names: tuple[str, ...]
    counts: IntArray
    float_names: tuple[str, ...]
    floats: FloatArray
    heat_names: tuple[str, ...]
    heat: FloatArray
    scored: np.ndarray
    events: _EventArrays
    kinds: tuple[str, ...]

    def frames(self) -> TripFeatures:
        """The feature and event tables (``EVENT_COLUMNS``)."""
        # One block per dtype: building a frame column by column costs milliseconds.
        features = pd.concat([
            pd.DataFrame(self.counts, columns=_column_index(self.count_names)),
            pd.DataFrame(self.floats, columns=_column_index(self.float_names)),
            pd.DataFrame(self.heat, columns=_column_index(self.heat_names)),
            pd.DataFrame(self.scored[:, None], columns=_column_index(("scored",))),
        ], axis=1)
        ev = self.events
        events_out = pd.DataFrame({
            "trip": ev.trip,
            # Codes come from the kernel and _extra_event_arrays, in range by construction.
            "kind": pd.Categorical.from_codes(ev.kind, dtype=_categories(self.kinds, False),
                                              validate=False),
            "severity": pd.Categorical.from_codes(ev.severity,
                                                  dtype=_categories(SEVERITIES, True),
                                                  validate=False),
            **self._event_values(),
        })
        return TripFeatures(features, events_out)

    def row(self, k: int) -> dict[str, Any]:
        """Trip k's features as Python scalars, in the feature table's column order."""
        out = dict(zip(self.count_names, self.counts[k].tolist(), strict=True))
        out.update(zip(self.float_names, self.floats[k].tolist(), strict=True))
        out.update(zip(self.heat_names, self.heat[k].tolist(), strict=True))
        out["scored"] = bool(self.scored[k])
        return out

    def event_columns(self) -> dict[str, np.ndarray]:
        """The event table's columns as arrays, kind and severity as names."""
        ev = self.events
        return {"trip": ev.trip, "kind": np.asarray(self.kinds, dtype=object)[ev.kind],
                "severity": np.asarray(SEVERITIES, dtype=object)[ev.severity],
                **self._event_values()}

    def _event_values(self) -> dict[str, FloatArray]:
        v = self.events.values
        return {"start_t_s": v[:, EV_START_T], "end_t_s": v[:, EV_END_T],
                "duration_s": v[:, EV_END_T] - v[:, EV_START_T], "peak_value": v[:, EV_PEAK],
                "speed_mps": v[:, EV_SPEED], "lat_deg": v[:, EV_LAT], "lon_deg": v[:, EV_LON]}


class StreamTripFeatures(NamedTuple):
    """Result of :func:`stream_trip_features`: as :class:`TripFeatures`, plus the device
    ``stream`` each trip came from."""

    features: pd.DataFrame
    events: pd.DataFrame
    stream: IntArray


def stream_trip_features(
    t_s: Any, lat_deg: Any, lon_deg: Any, offsets: Any = None, *,
    speed_mps: Any = None, accuracy_m: Any = None, speed_limit_mps: Any = None,
    time_zone: str | Sequence[str] = "UTC", now_s: float | None = None,
    params: GpsParams = DEFAULT_PARAMS, parallel: bool = False,
) -> StreamTripFeatures:
    """Features and events of the trips in continuous device streams: one kernel pass
    cleans and segments each stream, a second scores its trips reading the kept fixes in
    place (no column copies between the steps, no second cleaning of clean trips).

    Inputs as in :func:`compute_trip_features`, except that ``offsets`` bounds device
    streams, which :func:`telematics.core.segment.segment_trips` cuts into trips, and
    ``time_zone`` is one zone or one per stream. The result is the one of
    :func:`telematics.core.clean.clean_gps`, then ``segment_trips`` on the cleaned
    streams, then ``compute_trip_features`` on the trips' fixes: trips are numbered
    stream by stream in time order, and ``stream[trip]`` says where each came from.
    """
    t, lat, lon, rx, acc, limit, offs = _gps_columns(t_s, lat_deg, lon_deg, speed_mps,
                                                     accuracy_m, speed_limit_mps, offsets)
    n = t.shape[0]
    now = time.time() if now_s is None else float(now_s)
    if not math.isfinite(now):
        raise ValueError("now_s: must be finite")
    # The tie keys of clean_gps, so that the same fix of equal times is kept.
    order = sort_order(t, offs, acc, lat, lon)
    if order is not None:
        t, lat, lon, rx, acc, limit = (a[order] for a in (t, lat, lon, rx, acc, limit))
    utc_offset = utc_offsets_s(t, offs, time_zone, now + params.max_future_s)
    p = params.kernel()
    n_streams = offs.shape[0] - 1
    rows = np.empty(n, dtype=np.int64)
    start_slot = np.empty(n, dtype=np.int64)
    stop_slot = np.empty(n, dtype=np.int64)
    trips_per_stream = np.empty(n_streams, dtype=np.int64)
    streams_kernel = _streams_parallel if parallel else _streams_serial
    with dynamic_schedule():
        streams_kernel(t, lat, lon, acc, offs, now, p, params.stop_radius_m,
                       params.stop_min_s, params.split_gap_s, params.stop_core_radius_m,
                       rows, start_slot, stop_slot, np.empty(n), trips_per_stream)
    stream = np.repeat(np.arange(n_streams, dtype=np.int64), trips_per_stream)
    trip_base = np.zeros(n_streams + 1, dtype=np.int64)
    np.cumsum(trips_per_stream, out=trip_base[1:])
    slot = offs[stream] + np.arange(stream.shape[0]) - trip_base[stream]
    start = offs[stream] + start_slot[slot]
    stop = offs[stream] + stop_slot[slot]
    trip_offsets = np.zeros(stream.shape[0] + 1, dtype=np.int64)
    np.cumsum(stop - start, out=trip_offsets[1:])
    n_trips = stream.shape[0]
    prior = np.zeros(n_trips)
    edges = (np.asarray(params.heatmap_speed_edges_mps, dtype=np.float64),
             np.asarray(params.heatmap_accel_edges_mps2, dtype=np.float64))
    n_heat = (edges[0].shape[0] - 1) * (edges[1].shape[0] - 1)
    columns = (t, lat, lon, acc, rx, limit, utc_offset)
    feat, heat, events, n_events, capacity = _run_kernel(
        columns, trip_offsets,
        np.diff(trip_offsets) // _SAMPLES_PER_EVENT_SLOT + _MIN_EVENT_SLOTS, now, prior, p,
        edges, n_heat, parallel, (rows, start, stop),
    )
    out = _assemble(feat, heat, events, n_events, capacity,
                    lambda k: tuple(a[rows[start[k]:stop[k]]] for a in columns), now, prior,
                    p, edges, np.zeros(n_trips, dtype=bool), None, params).frames()
    return StreamTripFeatures(out.features, out.events, stream)
