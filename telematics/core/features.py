"""Per-trip features from raw GPS trips in one fused pass per trip: clean, kinematics,
events and features, serially or with a parallel loop over trips."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
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
from telematics.core.kinematics import _kinematics_trip
from telematics.core.params import DEFAULT_PARAMS, GpsParams, KernelParams
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
def _bin_index(x: float, edges: FloatArray, guess: int) -> int:
    """Index of the bin [edges[b], edges[b+1]) holding x, or -1 outside or NaN.

    Consecutive samples mostly share a bin, so the search starts at ``guess``.
    """
    last = edges.shape[0] - 1
    if not (edges[0] <= x < edges[last]):
        return -1
    b = min(max(guess, 0), last - 1)
    while x < edges[b]:
        b -= 1
    while x >= edges[b + 1]:
        b += 1
    return b


@serial
def _trip_features(
    t_s: FloatArray, chord_m: FloatArray, dist_m: FloatArray, gap_before: np.ndarray,
    speed_mps: FloatArray,
    pos_speed_mps: FloatArray, rx_speed_mps: FloatArray, accel_mps2: FloatArray,
    jerk_mps3: FloatArray, accuracy_m: FloatArray, speed_limit_mps: FloatArray,
    utc_offset_s: FloatArray, n_raw: int, p: KernelParams,
    speed_edges_mps: FloatArray, accel_edges_mps2: FloatArray,
    feat: FloatArray, heat: FloatArray,
) -> None:
    """Fill one trip's kernel feature row (``KERNEL_COLUMNS``) and heatmap row (seconds).

    ``dist_m`` is the driven distance per step (kinematics' ``path_m``), ``chord_m`` the
    geodesic step between fixes (kinematics' ``dist_m``).
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
    # stays rural; two pointers keep it linear.
    context = np.empty(m)
    half = 0.5 * p.context_window_s
    lo = 0
    hi = 0
    total = 0.0
    count = 0
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
    sb = 0
    ab = 0
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
        sb = _bin_index(speed_mps[i - 1], speed_edges_mps, sb)
        ab = _bin_index(accel_mps2[i - 1], accel_edges_mps2, ab)
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


@serial
def _trip_pipeline(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
    rx_speed_mps: FloatArray, speed_limit_mps: FloatArray, utc_offset_s: FloatArray,
    now_s: float, prior_driving_s: float, p: KernelParams,
    speed_edges_mps: FloatArray, accel_edges_mps2: FloatArray,
    feat: FloatArray, heat: FloatArray, ev_kind: IntArray, ev_sev: IntArray, ev_f: FloatArray,
) -> int:
    """Clean, kinematics, events and features of one raw trip; return its event count."""
    keep = np.empty(t_s.shape[0], dtype=np.int64)
    m = _clean_trip(t_s, lat_deg, lon_deg, accuracy_m, now_s, p, keep)
    # Received fixes count distinct times, so a re-sent upload does not lower kept_share.
    n_raw = 0
    for i in range(t_s.shape[0]):
        if i == 0 or t_s[i] != t_s[i - 1]:
            n_raw += 1
    # One scratch block per trip instead of one allocation per column.
    scratch = np.empty((16, m))
    t, lat, lon, acc, rx, limit, offset = (scratch[0], scratch[1], scratch[2], scratch[3],
                                           scratch[4], scratch[5], scratch[6])
    for j in range(m):
        i = keep[j]
        t[j] = t_s[i]
        lat[j] = lat_deg[i]
        lon[j] = lon_deg[i]
        acc[j] = accuracy_m[i]
        rx[j] = rx_speed_mps[i]
        limit[j] = speed_limit_mps[i]
        offset[j] = utc_offset_s[i]
    chord, dist, pos_speed, speed, accel = scratch[7], scratch[8], scratch[9], scratch[10], scratch[11]
    jerk, heading, heading_rate, lat_accel = scratch[12], scratch[13], scratch[14], scratch[15]
    gap = np.empty(m, dtype=np.bool_)
    _kinematics_trip(t, lat, lon, rx, p, chord, dist, gap, pos_speed, speed, accel, jerk,
                     heading, heading_rate, lat_accel)
    n_events = _gps_trip_events(t, lat, lon, speed, accel, lat_accel, heading_rate, limit,
                                prior_driving_s, p, ev_kind, ev_sev, ev_f,
                                feat[F_DRIVING_END:F_DRIVING_END + 1])
    _trip_features(t, chord, dist, gap, speed, pos_speed, rx, accel, jerk, acc, limit, offset,
                   n_raw, p, speed_edges_mps, accel_edges_mps2, feat, heat)
    return n_events


def _features_batch(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
    rx_speed_mps: FloatArray, speed_limit_mps: FloatArray, utc_offset_s: FloatArray,
    offsets: IntArray, ev_offsets: IntArray, now_s: float, prior_driving_s: FloatArray,
    p: KernelParams, speed_edges_mps: FloatArray, accel_edges_mps2: FloatArray,
    feat: FloatArray, heat: FloatArray, ev_kind: IntArray, ev_sev: IntArray, ev_f: FloatArray,
    n_events: IntArray,
) -> None:
    """Run :func:`_trip_pipeline` per trip; trip k owns ``feat[k]``, ``heat[k]``,
    ``n_events[k]`` and event slots ``ev_offsets[k]:ev_offsets[k + 1]``."""
    for k in numba.prange(offsets.shape[0] - 1):
        s = offsets[k]
        e = offsets[k + 1]
        es = ev_offsets[k]
        ee = ev_offsets[k + 1]
        n_events[k] = _trip_pipeline(
            t_s[s:e], lat_deg[s:e], lon_deg[s:e], accuracy_m[s:e], rx_speed_mps[s:e],
            speed_limit_mps[s:e], utc_offset_s[s:e], now_s, prior_driving_s[k], p,
            speed_edges_mps, accel_edges_mps2, feat[k], heat[k], ev_kind[es:ee],
            ev_sev[es:ee], ev_f[es:ee],
        )


_features_serial = serial(_features_batch)
_features_parallel = parallel_jit(_features_batch)


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


def _run_kernel(
    columns: tuple[FloatArray, ...], offsets: IntArray, capacity: IntArray, now_s: float,
    prior: FloatArray, p: KernelParams, edges: tuple[FloatArray, FloatArray], n_heat: int,
    use_parallel: bool,
) -> tuple[FloatArray, FloatArray, _EventArrays, IntArray, IntArray]:
    """Run the batch kernel; return features, heatmap, the events that fit their slots,
    each trip's true event count and its slot count."""
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
    kernel: Any = _features_parallel if use_parallel else _features_serial
    with dynamic_schedule():
        kernel(*columns, offsets, ev_offsets, now_s, prior, p, edges[0], edges[1], feat, heat,
               ev_kind, ev_sev, ev_f, n_events)
    rank = np.arange(n_slots) - np.repeat(ev_offsets[:-1], capacity)
    sel = rank < np.repeat(np.minimum(n_events, capacity), capacity)
    trip = np.repeat(np.arange(n_trips, dtype=np.int64), capacity)
    events = _EventArrays(trip[sel], ev_kind[sel], ev_sev[sel], ev_f[sel])
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


def _stack(columns: list[Any], n_rows: int, dtype: type) -> np.ndarray:
    out: np.ndarray = np.empty((n_rows, len(columns)), dtype=dtype)
    for c, values in enumerate(columns):
        out[:, c] = values
    return out


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
    t = float_column("t_s", t_s, finite=True)
    n = t.shape[0]
    lat = float_column("lat_deg", lat_deg, n)
    lon = float_column("lon_deg", lon_deg, n)
    rx = optional_float_column("speed_mps", speed_mps, n)
    acc = optional_float_column("accuracy_m", accuracy_m, n)
    limit = optional_float_column("speed_limit_mps", speed_limit_mps, n)
    offs = offsets_column(offsets, n)
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
        columns, offs, np.diff(offs) + 4, now, prior, p, edges, n_heat, parallel
    )
    parts = [events]
    # A trip with more events than slots (rare: an event every few samples) is re-run
    # alone with a provable bound: each of its seven detections finds at most one event
    # per sample.
    overflow = np.flatnonzero(n_events > capacity)
    if overflow.shape[0]:
        parts[0] = events.take(~np.isin(events.trip, overflow))
        for k in overflow:
            s, e = offs[k], offs[k + 1]
            f1, h1, ev1, _, _ = _run_kernel(
                tuple(a[s:e] for a in columns), np.array([0, e - s], dtype=np.int64),
                np.array([7 * (e - s) + 1]), now, prior[k:k + 1], p, edges, n_heat, False,
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
    counts = ["trip", *_COUNT_COLUMNS, *(c for c in columns_out if c.startswith("n_")
                                          and c not in _COUNT_COLUMNS)]
    columns_out["trip"] = np.arange(n_trips)
    # One block per dtype: building a frame column by column costs milliseconds per call.
    features = pd.concat([
        pd.DataFrame(_stack([columns_out[c] for c in counts], n_trips, np.int64),
                     columns=_column_index(tuple(counts))),
        pd.DataFrame(_stack([v for c, v in columns_out.items() if c not in counts], n_trips,
                            np.float64),
                     columns=_column_index(tuple(c for c in columns_out if c not in counts))),
        pd.DataFrame(heat, columns=_column_index(tuple(heatmap_columns(params)))),
        pd.DataFrame({"scored": feat[:, F_SCORED] > 0.5}),
    ], axis=1)
    events_out = pd.DataFrame({
        "trip": ev.trip,
        "kind": pd.Categorical.from_codes(ev.kind, categories=pd.Index(kinds)),
        "severity": pd.Categorical.from_codes(ev.severity, categories=pd.Index(SEVERITIES),
                                              ordered=True),
        "start_t_s": ev.values[:, EV_START_T],
        "end_t_s": ev.values[:, EV_END_T],
        "duration_s": ev.values[:, EV_END_T] - ev.values[:, EV_START_T],
        "peak_value": ev.values[:, EV_PEAK],
        "speed_mps": ev.values[:, EV_SPEED],
        "lat_deg": ev.values[:, EV_LAT],
        "lon_deg": ev.values[:, EV_LON],
    })
    return TripFeatures(features, events_out)
