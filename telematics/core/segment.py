"""Trip segmentation of continuous GPS streams: stops by radius and duration, splits at
long gaps, and the scoring rule for short trips (DESIGN section 6: Traccar, Zendrive)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numba
import numpy as np

from telematics.core.checks import FloatArray, IntArray, float_column, offsets_column
from telematics.core.clean import _is_strictly_increasing
from telematics.core.geo import (
    _ANCHOR_SPAN_DEG,
    _local_radii,
    _radii_anchor,
    _radii_near,
    _step_en,
)
from telematics.core.jit import dynamic_schedule, serial
from telematics.core.jit import parallel as parallel_jit
from telematics.core.params import DEFAULT_PARAMS, GpsParams


@serial
def _within(lat_deg: FloatArray, lon_deg: FloatArray, m_r: FloatArray, nc_r: FloatArray,
            i: int, j: int, radius_m: float) -> bool:
    east, north = _step_en(lat_deg[i], lon_deg[i], m_r[i], nc_r[i],
                           lat_deg[j], lon_deg[j], m_r[j], nc_r[j])
    return east * east + north * north <= radius_m * radius_m


@serial
def _weighted_median(values: FloatArray, weights: FloatArray) -> float:
    """Lower weighted median: the first value in sorted order reaching half the weight."""
    order = np.argsort(values)
    half = 0.5 * weights.sum()
    acc = 0.0
    for q in order:
        acc += weights[q]
        if acc >= half:
            return values[q]
    return values[order[-1]]


@serial
def _near(lat_deg: FloatArray, lon_deg: FloatArray, m_r: FloatArray, nc_r: FloatArray, i: int,
          c_lat: float, c_lon: float, c_m: float, c_nc: float, radius_m: float) -> bool:
    east, north = _step_en(lat_deg[i], lon_deg[i], m_r[i], nc_r[i], c_lat, c_lon, c_m, c_nc)
    return east * east + north * north <= radius_m * radius_m


@serial
def _segment_stream(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray,
    stop_radius_m: float, stop_min_s: float, split_gap_s: float, core_radius_m: float,
    with_distance: bool, start_out: IntArray, stop_out: IntArray, dist_out: FloatArray,
) -> int:
    """Cut one cleaned stream into trips; return their count.

    A stop starts at fix i when every fix up to at least ``stop_min_s`` later stays within
    ``stop_radius_m`` of fix i (no step longer than ``split_gap_s`` inside); it lasts while
    fixes stay in that radius. Its parked core is where fixes lie within
    ``core_radius_m`` of the stop's time-weighted median position (each fix
    weighs the time to the next, so a stop bridged by a phone-off gap is centred on
    where the car stood). A trip runs from the last core fix of
    one stop to the first core fix of the next, and a step longer than ``split_gap_s``
    ends it. Fragments whose fixes all lie within the stop radius of their first fix are
    part of a stop, not trips. Trip q is ``[start_out[q], stop_out[q])`` with path length
    ``dist_out[q]`` (NaN unless ``with_distance``: a caller scoring the trips measures
    them itself).
    """
    n = t_s.shape[0]
    m_r = np.empty(n)
    nc_r = np.empty(n)
    anchor = _radii_anchor(lat_deg[0]) if n > 0 else _radii_anchor(0.0)
    for i in range(n):
        if abs(lat_deg[i] - anchor[0]) > _ANCHOR_SPAN_DEG:
            anchor = _radii_anchor(lat_deg[i])
        m_r[i], nc_r[i] = _radii_near(lat_deg[i], anchor)
    count = 0
    cur = 0
    k = 0
    i = 0
    while i < n:
        # Cheap necessary condition first: the fix stop_min_s later must be in the radius.
        while k < n and t_s[k] < t_s[i] + stop_min_s:
            k += 1
        is_stop = k < n and _within(lat_deg, lon_deg, m_r, nc_r, i, k, stop_radius_m)
        if is_stop:
            j = i
            while j + 1 < n and t_s[j + 1] - t_s[j] <= split_gap_s and _within(
                lat_deg, lon_deg, m_r, nc_r, i, j + 1, stop_radius_m
            ):
                j += 1
            is_stop = t_s[j] - t_s[i] >= stop_min_s
        if is_stop:
            # The stop circle is entered up to a radius before the car parks: trips end
            # at the first fix near the stop's centre and resume at the last one, so the
            # approach and the departure stay in the trips' distance.
            hold = np.empty(j - i + 1)
            for q in range(i, j + 1):
                hold[q - i] = t_s[q + 1] - t_s[q] if q < j else 0.0
            c_lat = _weighted_median(lat_deg[i:j + 1], hold)
            c_lon = _weighted_median(lon_deg[i:j + 1], hold)
            c_m, c_nc = _local_radii(c_lat)
            arrive = i
            while arrive < j and not _near(lat_deg, lon_deg, m_r, nc_r, arrive, c_lat, c_lon,
                                           c_m, c_nc, core_radius_m):
                arrive += 1
            depart = j
            while depart > arrive and not _near(lat_deg, lon_deg, m_r, nc_r, depart, c_lat,
                                                c_lon, c_m, c_nc, core_radius_m):
                depart -= 1
            end = arrive + 1
            next_cur = depart
            i = j + 1
        elif i + 1 < n and t_s[i + 1] - t_s[i] > split_gap_s:
            end = i + 1
            next_cur = i + 1
            i += 1
        elif i + 1 == n:
            end = n
            next_cur = n
            i = n
        else:
            i += 1
            continue
        moved = False
        dist = 0.0 if with_distance else math.nan
        for q in range(cur + 1, end):
            if with_distance:
                east, north = _step_en(lat_deg[q - 1], lon_deg[q - 1], m_r[q - 1],
                                       nc_r[q - 1], lat_deg[q], lon_deg[q], m_r[q], nc_r[q])
                dist += math.sqrt(east * east + north * north)
            if not moved:
                moved = not _within(lat_deg, lon_deg, m_r, nc_r, cur, q, stop_radius_m)
                if moved and not with_distance:
                    break
        if moved:
            start_out[count] = cur
            stop_out[count] = end
            dist_out[count] = dist
            count += 1
        cur = next_cur
    return count


def _segment_slots(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, offsets: IntArray,
    stop_radius_m: float, stop_min_s: float, split_gap_s: float, core_radius_m: float,
    start_slot: IntArray, stop_slot: IntArray, dist_slot: FloatArray,
    n_trips: IntArray, n_samples: IntArray,
) -> None:
    """Per stream k: its trips (absolute ``[start, stop)`` and path length) in the
    stream's own slots ``offsets[k]:`` (a trip has 2+ fixes, so they fit), their count
    and their total fix count."""
    for k in numba.prange(offsets.shape[0] - 1):
        s = offsets[k]
        e = offsets[k + 1]
        c = _segment_stream(t_s[s:e], lat_deg[s:e], lon_deg[s:e], stop_radius_m, stop_min_s,
                            split_gap_s, core_radius_m, True, start_slot[s:e], stop_slot[s:e],
                            dist_slot[s:e])
        total = 0
        for q in range(s, s + c):
            start_slot[q] += s
            stop_slot[q] += s
            total += stop_slot[q] - start_slot[q]
        n_trips[k] = c
        n_samples[k] = total


def _segment_compact(
    start_slot: IntArray, stop_slot: IntArray, dist_slot: FloatArray, offsets: IntArray,
    trip_base: IntArray, sample_base: IntArray,
    start_out: IntArray, stop_out: IntArray, dist_out: FloatArray, stream_out: IntArray,
    sample_index_out: IntArray,
) -> None:
    """Gather the streams' trips into trip order and list their fixes."""
    for k in numba.prange(offsets.shape[0] - 1):
        pos = sample_base[k]
        for c in range(trip_base[k + 1] - trip_base[k]):
            q = trip_base[k] + c
            slot = offsets[k] + c
            start_out[q] = start_slot[slot]
            stop_out[q] = stop_slot[slot]
            dist_out[q] = dist_slot[slot]
            stream_out[q] = k
            for i in range(start_slot[slot], stop_slot[slot]):
                sample_index_out[pos] = i
                pos += 1


_segment_slots_serial = serial(_segment_slots)
_segment_slots_parallel = parallel_jit(_segment_slots)
_segment_compact_serial = serial(_segment_compact)
_segment_compact_parallel = parallel_jit(_segment_compact)


class Segments(NamedTuple):
    """Trips found by :func:`segment_trips`.

    ``sample_index`` selects each trip's fixes from the stream arrays (trip by trip, stops
    left out) and ``offsets[n_trips + 1]`` bounds the trips in it, ready for
    :func:`telematics.core.features.compute_trip_features`. Per trip: the ``stream`` it
    came from, its path length ``distance_m``, ``duration_s``, and ``scored`` (long
    enough by distance and duration to be scored).
    """

    sample_index: IntArray
    offsets: IntArray
    stream: IntArray
    distance_m: FloatArray
    duration_s: FloatArray
    scored: np.ndarray


def segment_trips(
    t_s: Any, lat_deg: Any, lon_deg: Any, offsets: Any = None, *,
    params: GpsParams = DEFAULT_PARAMS, parallel: bool = False,
) -> Segments:
    """Cut cleaned continuous GPS streams (``offsets`` per device stream) into trips.

    Input is the output of :func:`telematics.core.clean.clean_gps`: times strictly
    increasing within each stream, finite positions. Defaults: a stop is at least
    ``stop_min_s`` = 180 s within ``stop_radius_m`` = 200 m (parked within
    ``stop_core_radius_m`` = 10 m of its centre), a gap over ``split_gap_s`` =
    3,600 s splits, and trips under 500 m or 300 s are not scored. ``parallel`` spreads
    streams over numba's threads (same result).
    """
    t = float_column("t_s", t_s, finite=True)
    n = t.shape[0]
    lat = float_column("lat_deg", lat_deg, n, finite=True)
    lon = float_column("lon_deg", lon_deg, n, finite=True)
    offs = offsets_column(offsets, n)
    if not _is_strictly_increasing(t, offs):
        raise ValueError("t_s: must strictly increase within each stream (run clean_gps first)")
    n_streams = offs.shape[0] - 1
    start_slot = np.empty(n, dtype=np.int64)
    stop_slot = np.empty(n, dtype=np.int64)
    dist_slot = np.empty(n)
    trips_per_stream = np.empty(n_streams, dtype=np.int64)
    samples_per_stream = np.empty(n_streams, dtype=np.int64)
    slots = _segment_slots_parallel if parallel else _segment_slots_serial
    with dynamic_schedule():
        slots(t, lat, lon, offs, params.stop_radius_m, params.stop_min_s, params.split_gap_s,
              params.stop_core_radius_m, start_slot, stop_slot, dist_slot, trips_per_stream,
              samples_per_stream)
    trip_base = np.zeros(n_streams + 1, dtype=np.int64)
    np.cumsum(trips_per_stream, out=trip_base[1:])
    sample_base = np.zeros(n_streams + 1, dtype=np.int64)
    np.cumsum(samples_per_stream, out=sample_base[1:])
    n_trips = int(trip_base[-1])
    start = np.empty(n_trips, dtype=np.int64)
    stop = np.empty(n_trips, dtype=np.int64)
    dist = np.empty(n_trips)
    stream = np.empty(n_trips, dtype=np.int64)
    sample_index = np.empty(sample_base[-1], dtype=np.int64)
    compact = _segment_compact_parallel if parallel else _segment_compact_serial
    with dynamic_schedule():
        compact(start_slot, stop_slot, dist_slot, offs, trip_base, sample_base, start, stop,
                dist, stream, sample_index)
    trip_offsets = np.zeros(n_trips + 1, dtype=np.int64)
    np.cumsum(stop - start, out=trip_offsets[1:])
    duration = t[stop - 1] - t[start]
    scored = (dist >= params.min_trip_distance_m) & (duration >= params.min_trip_duration_s)
    return Segments(sample_index, trip_offsets, stream, dist, duration, scored)
