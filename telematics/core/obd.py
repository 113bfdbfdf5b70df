"""OBD-II dongle feeds: trips by ignition or motion, distance from odometer and speed,
and reconciliation with GPS distance.

A dongle sends one continuous feed; trips are ignition-on runs where the feed reports
ignition, else runs of motion (speed > 0) that no stop of ``stop_min_s`` interrupts. The
odometer has a coarse resolution (0.1 km): the distance between its first and last tick
in a trip is exact to the resolution, so the trip distance is that plus the speed-
integrated distance before the first and after the last tick. Speed (integer km/h) is
integrated with the trapezoid rule, never across a gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from telematics.core.jit import serial

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

KMH_TO_MPS = 1.0 / 3.6


@dataclass(frozen=True)
class ObdParams:
    """Thresholds of OBD trip finding and distance (DESIGN section 6 where it has them)."""

    stop_min_s: float = 180.0  # motion trips: a stop this long (or no data) ends a trip
    split_gap_s: float = 3600.0  # ignition trips: no data this long splits a trip
    gap_s: float = 5.0  # speed is not integrated across a longer gap
    odometer_resolution_km: float = 0.1
    max_speed_mps: float = 70.0  # odometer steps implying more are glitches

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{f.name}: must be a finite positive number, got {value!r}")


DEFAULT_OBD_PARAMS = ObdParams()


@dataclass(frozen=True)
class ObdTrips:
    """Trips of OBD feeds, one entry per trip, in feed and time order.

    ``start_index``/``end_index`` are flat sample indices (end exclusive).
    ``odometer_dist_m`` is tick-anchored (NaN without two odometer ticks in the trip),
    ``odometer_raw_m`` the sum of plausible odometer increases (quantised to the
    resolution; NaN without readings), ``speed_dist_m`` the integrated speed and
    ``dist_m`` the best of them (odometer, else speed).
    """

    feed: IntArray
    start_index: IntArray
    end_index: IntArray
    start_t_s: FloatArray
    end_t_s: FloatArray
    by_ignition: BoolArray
    odometer_dist_m: FloatArray
    odometer_raw_m: FloatArray
    speed_dist_m: FloatArray
    dist_m: FloatArray


@dataclass(frozen=True)
class ObdGpsReconciliation:
    """Per OBD trip: GPS distance over the trip's time span (NaN without GPS steps) and
    the relative discrepancy (obd / gps - 1) of the odometer and speed distances."""

    gps_dist_m: FloatArray
    odometer_rel_error: FloatArray
    speed_rel_error: FloatArray
    dist_rel_error: FloatArray


@serial
def _find_trips(
    t_s,
    speed_kmh,
    ignition,
    offsets,
    stop_min_s,
    split_gap_s,
    gap_s,
    trip_feed,
    trip_start,
    trip_end,
    trip_ign,
):
    """Trips of every feed into caller-allocated arrays (capacity: one per sample).

    Ignition feeds (any known ignition value): runs of ignition on, an unknown value
    holding the last known state, split at data gaps over split_gap_s. Motion feeds:
    from the last standstill sample before moving (within gap_s) to the first one after
    the last motion, split where no motion lasts stop_min_s. Returns the trip count."""
    n_trips = 0
    for feed in range(offsets.shape[0] - 1):
        a = offsets[feed]
        b = offsets[feed + 1]
        by_ignition = False
        for i in range(a, b):
            if not math.isnan(ignition[i]):
                by_ignition = True
                break
        if by_ignition:
            on = False
            start = a
            for i in range(a, b):
                state = on if math.isnan(ignition[i]) else ignition[i] > 0.5
                if on and (not state or t_s[i] - t_s[i - 1] > split_gap_s):
                    trip_feed[n_trips] = feed
                    trip_start[n_trips] = start
                    trip_end[n_trips] = i
                    trip_ign[n_trips] = 1
                    n_trips += 1
                    on = False
                if state and not on:
                    on = True
                    start = i
            if on:
                trip_feed[n_trips] = feed
                trip_start[n_trips] = start
                trip_end[n_trips] = b
                trip_ign[n_trips] = 1
                n_trips += 1
            continue
        last_move = -1
        start = a
        for i in range(a, b):
            if not speed_kmh[i] > 0.0:
                continue
            if last_move >= 0 and t_s[i] - t_s[last_move] >= stop_min_s:
                end = last_move + 1
                if end < b and t_s[end] - t_s[last_move] <= gap_s:
                    end += 1
                trip_feed[n_trips] = feed
                trip_start[n_trips] = start
                trip_end[n_trips] = end
                trip_ign[n_trips] = 0
                n_trips += 1
                last_move = -1
            if last_move < 0:
                start = i
                if i > a and speed_kmh[i - 1] == 0.0 and t_s[i] - t_s[i - 1] <= gap_s:
                    start = i - 1
            last_move = i
        if last_move >= 0:
            end = last_move + 1
            if end < b and t_s[end] - t_s[last_move] <= gap_s:
                end += 1
            trip_feed[n_trips] = feed
            trip_start[n_trips] = start
            trip_end[n_trips] = end
            trip_ign[n_trips] = 0
            n_trips += 1
    return n_trips


@serial
def _speed_distance(t_s, speed_kmh, a, b, gap_s):
    """Trapezoid distance of samples a..b-1 (m), skipping gaps and unknown speeds."""
    dist = 0.0
    for i in range(a + 1, b):
        dt = t_s[i] - t_s[i - 1]
        v0 = speed_kmh[i - 1]
        v1 = speed_kmh[i]
        if dt <= gap_s and not math.isnan(v0 + v1):
            dist += 0.5 * (v0 + v1) * KMH_TO_MPS * dt
    return dist


@serial
def _trip_distances(
    t_s,
    speed_kmh,
    odometer_km,
    trip_start,
    trip_end,
    n_trips,
    gap_s,
    resolution_km,
    max_speed_mps,
    odo_out,
    raw_out,
    speed_out,
):
    """Odometer (tick-anchored and raw) and speed distances of every trip (m).

    Odometer steps are counted when they are non-negative and no larger than the
    maximum speed allows (plus one resolution step); a reset or glitch is skipped."""
    for k in range(n_trips):
        a = trip_start[k]
        b = trip_end[k]
        speed_out[k] = _speed_distance(t_s, speed_kmh, a, b, gap_s)
        first_tick = -1
        last_tick = -1
        ticked_km = 0.0  # odometer increase between the first and the last tick
        counted_km = 0.0  # all plausible increases
        prev = -1
        for i in range(a, b):
            if math.isnan(odometer_km[i]):
                continue
            if prev >= 0:
                step_km = odometer_km[i] - odometer_km[prev]
                limit_km = max_speed_mps * (t_s[i] - t_s[prev]) / 1000.0 + resolution_km
                if 0.0 < step_km <= limit_km:
                    counted_km += step_km
                    if first_tick < 0:
                        first_tick = i
                    else:
                        ticked_km += step_km
                    last_tick = i
            prev = i
        raw_out[k] = counted_km * 1000.0 if prev >= 0 else math.nan
        if first_tick >= 0 and last_tick > first_tick:
            odo_out[k] = (
                ticked_km * 1000.0
                + _speed_distance(t_s, speed_kmh, a, first_tick + 1, gap_s)
                + _speed_distance(t_s, speed_kmh, last_tick, b, gap_s)
            )
        else:
            odo_out[k] = math.nan


@serial
def _gps_distance(trip_feed, start_t, end_t, gps_t_s, gps_dist_m, gps_offsets, out):
    """Sum of GPS steps (from fix i-1 to fix i) lying inside each trip's time span; trips
    are in feed and time order, so one pointer per feed walks the fixes."""
    j = 0
    feed = -1
    for k in range(trip_feed.shape[0]):
        b = gps_offsets[trip_feed[k] + 1]
        if trip_feed[k] != feed:
            feed = trip_feed[k]
            j = gps_offsets[feed]
        while j < b and gps_t_s[j] < start_t[k]:
            j += 1
        total = 0.0
        steps = 0
        i = j + 1
        while i < b and gps_t_s[i] <= end_t[k]:
            d = gps_dist_m[i]
            if not math.isnan(d):
                total += d
                steps += 1
            i += 1
        out[k] = total if steps > 0 else math.nan


def _column(name: str, values: npt.ArrayLike, n: int | None = None) -> FloatArray:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: length {arr.shape[0]} differs from {n}")
    if np.isinf(arr).any():
        raise ValueError(f"{name}: must be finite or NaN (unknown)")
    return arr


def _offsets(name: str, values: npt.ArrayLike | None, n: int) -> IntArray:
    if values is None:
        return np.array([0, n], dtype=np.int64)
    raw = np.asarray(values)
    if raw.ndim != 1 or raw.shape[0] < 1 or not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"{name}: must be a one-dimensional integer array of n_feeds + 1")
    off = np.ascontiguousarray(raw, dtype=np.int64)
    if off[0] != 0 or off[-1] != n or (np.diff(off) < 0).any():
        raise ValueError(f"{name}: must start at 0, be non-decreasing and end at {n}")
    return off


def _sorted_times(name: str, values: npt.ArrayLike, offsets: IntArray) -> FloatArray:
    t = _column(name, values)
    if t.shape[0] != offsets[-1] or np.isnan(t).any():
        raise ValueError(f"{name}: must be finite, one per sample")
    inside = np.ones(max(t.shape[0] - 1, 0), dtype=np.bool_)
    starts = offsets[1:-1]
    inside[starts[(starts > 0) & (starts < t.shape[0])] - 1] = False
    if (np.diff(t)[inside] < 0.0).any():
        raise ValueError(f"{name}: must be non-decreasing within each feed")
    return t


def find_obd_trips(
    t_s: npt.ArrayLike,
    speed_kmh: npt.ArrayLike,
    offsets: npt.ArrayLike | None = None,
    *,
    ignition: npt.ArrayLike | None = None,
    odometer_km: npt.ArrayLike | None = None,
    params: ObdParams = DEFAULT_OBD_PARAMS,
) -> ObdTrips:
    """Trips and their distances in OBD feeds.

    Flat per-sample columns with feeds at ``offsets[n_feeds + 1]`` (default: one feed):
    ``t_s`` sorted within each feed (duplicates allowed), ``speed_kmh`` (NaN unknown),
    ``ignition`` 1 on / 0 off / NaN unknown (a feed without any known value is cut by
    motion) and ``odometer_km`` (NaN unknown).
    """
    t0 = np.asarray(t_s)
    if t0.ndim != 1:
        raise ValueError("t_s: must be one-dimensional")
    n = t0.shape[0]
    off = _offsets("offsets", offsets, n)
    t = _sorted_times("t_s", t0, off)
    speed = _column("speed_kmh", speed_kmh, n)
    if (speed < 0.0).any():
        raise ValueError("speed_kmh: must be non-negative")
    ign = np.full(n, np.nan) if ignition is None else _column("ignition", ignition, n)
    if not np.isin(ign[~np.isnan(ign)], (0.0, 1.0)).all():
        raise ValueError("ignition: must be 1 (on), 0 (off) or NaN (unknown)")
    odo = np.full(n, np.nan) if odometer_km is None else _column("odometer_km", odometer_km, n)
    feed = np.empty(n, dtype=np.int64)
    start = np.empty(n, dtype=np.int64)
    end = np.empty(n, dtype=np.int64)
    by_ign = np.empty(n, dtype=np.uint8)
    m = _find_trips(
        t,
        speed,
        ign,
        off,
        params.stop_min_s,
        params.split_gap_s,
        params.gap_s,
        feed,
        start,
        end,
        by_ign,
    )
    feed, start, end, by_ign = feed[:m].copy(), start[:m].copy(), end[:m].copy(), by_ign[:m]
    odo_m = np.empty(m)
    raw_m = np.empty(m)
    speed_m = np.empty(m)
    _trip_distances(
        t,
        speed,
        odo,
        start,
        end,
        m,
        params.gap_s,
        params.odometer_resolution_km,
        params.max_speed_mps,
        odo_m,
        raw_m,
        speed_m,
    )
    return ObdTrips(
        feed=feed,
        start_index=start,
        end_index=end,
        start_t_s=t[start] if m else np.empty(0),
        end_t_s=t[end - 1] if m else np.empty(0),
        by_ignition=by_ign.astype(np.bool_),
        odometer_dist_m=odo_m,
        odometer_raw_m=raw_m,
        speed_dist_m=speed_m,
        dist_m=np.where(np.isnan(odo_m), speed_m, odo_m),
    )


def reconcile_with_gps(
    trips: ObdTrips,
    gps_t_s: npt.ArrayLike,
    gps_dist_m: npt.ArrayLike,
    gps_offsets: npt.ArrayLike | None = None,
) -> ObdGpsReconciliation:
    """Compare each OBD trip's distances with the GPS distance over the same time span.

    ``gps_dist_m[i]`` is the GPS step from fix i-1 to fix i (kinematics' ``dist_m``; NaN
    or a gap step is left out by the caller setting it NaN); the GPS fixes of feed f are
    ``gps_offsets[f]:gps_offsets[f + 1]`` (default: one feed), sorted by time.
    """
    g0 = np.asarray(gps_t_s)
    if g0.ndim != 1:
        raise ValueError("gps_t_s: must be one-dimensional")
    m = g0.shape[0]
    goff = _offsets("gps_offsets", gps_offsets, m)
    gt = _sorted_times("gps_t_s", g0, goff)
    gd = _column("gps_dist_m", gps_dist_m, m)
    n_feeds = goff.shape[0] - 1
    if trips.feed.size and trips.feed.max() >= n_feeds:
        raise ValueError(
            f"gps_offsets: has {n_feeds} feeds, trips refer to feed {trips.feed.max()}"
        )
    gps_m = np.empty(trips.feed.shape[0])
    _gps_distance(trips.feed, trips.start_t_s, trips.end_t_s, gt, gd, goff, gps_m)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = gps_m > 0.0
        denom = np.where(ok, gps_m, np.nan)
        return ObdGpsReconciliation(
            gps_dist_m=gps_m,
            odometer_rel_error=trips.odometer_dist_m / denom - 1.0,
            speed_rel_error=trips.speed_dist_m / denom - 1.0,
            dist_rel_error=trips.dist_m / denom - 1.0,
        )
