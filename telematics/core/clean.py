"""GPS cleaning (DESIGN section 6, after Traccar's FilterHandler): sorting, de-duplication,
fix filters and gap marking."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numba
import numpy as np

from telematics.core.checks import (
    FloatArray,
    IntArray,
    float_column,
    offsets_column,
    optional_float_column,
)
from telematics.core.geo import _ANCHOR_SPAN_DEG, _radii_anchor, _radii_near, _step_en
from telematics.core.jit import dynamic_schedule, serial
from telematics.core.jit import parallel as parallel_jit
from telematics.core.params import DEFAULT_PARAMS, GpsParams, KernelParams


@serial
def _is_strictly_increasing(t_s: FloatArray, offsets: IntArray) -> bool:
    """True when time strictly increases inside every trip (the common, no-sort case)."""
    # Branch-free within a trip, so the comparison loop vectorises.
    for k in range(offsets.shape[0] - 1):
        increasing = True
        for i in range(offsets[k] + 1, offsets[k + 1]):
            increasing &= t_s[i] > t_s[i - 1]
        if not increasing:
            return False
    return True


@serial
def _clean_trip(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
    now_s: float, p: KernelParams, keep_out: IntArray,
) -> int:
    """Write the local indices of the fixes that pass every filter; return their count.

    Input is one trip sorted by time. A fix is dropped when its position is missing,
    invalid or exactly (0, 0), its accuracy is worse than ``max_accuracy_m``, it lies more
    than ``max_future_s`` after ``now_s``, its time does not increase, or reaching it from
    the last kept fix needs more than ``max_implied_speed_mps``. When that many
    ``jump_reanchor_fixes`` consecutive rejected fixes agree with each other, the earlier
    anchor was the outlier: the track re-anchors on them, and a kept run shorter than
    that before the jump is discarded as the outlier it was.
    """
    m = 0
    run_start = 0
    streak = 0
    last_t = -math.inf
    last_lat = 0.0
    last_lon = 0.0
    last_mr = 0.0
    last_nc = 0.0
    rej_t = 0.0
    rej_lat = 0.0
    rej_lon = 0.0
    rej_mr = 0.0
    rej_nc = 0.0
    t_max = now_s + p.max_future_s
    anchor = _radii_anchor(0.0)
    for i in range(t_s.shape[0]):
        la = lat_deg[i]
        lo = lon_deg[i]
        if not (abs(la) <= 90.0 and abs(lo) <= 180.0):
            continue
        if la == 0.0 and lo == 0.0:
            continue
        if accuracy_m[i] > p.max_accuracy_m:
            continue
        t = t_s[i]
        if t > t_max or not t > last_t:
            continue
        if abs(la - anchor[0]) > _ANCHOR_SPAN_DEG:
            anchor = _radii_anchor(la)
        mr, nc = _radii_near(la, anchor)
        if m > 0:
            east, north = _step_en(last_lat, last_lon, last_mr, last_nc, la, lo, mr, nc)
            if math.sqrt(east * east + north * north) > p.max_implied_speed_mps * (t - last_t):
                if streak > 0:
                    east, north = _step_en(rej_lat, rej_lon, rej_mr, rej_nc, la, lo, mr, nc)
                    agrees = math.sqrt(east * east + north * north) <= (
                        p.max_implied_speed_mps * (t - rej_t)
                    )
                    streak = streak + 1 if agrees else 1
                else:
                    streak = 1
                rej_t, rej_lat, rej_lon, rej_mr, rej_nc = t, la, lo, mr, nc
                if streak < p.jump_reanchor_fixes:
                    continue
                if m - run_start < p.jump_reanchor_fixes:
                    m = run_start
                run_start = m
        streak = 0
        keep_out[m] = i
        m += 1
        last_t, last_lat, last_lon, last_mr, last_nc = t, la, lo, mr, nc
    return m


def _clean_slots(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, accuracy_m: FloatArray,
    offsets: IntArray, now_s: float, p: KernelParams,
    slot_index: IntArray, slot_gap: np.ndarray, n_kept: IntArray,
) -> None:
    """Per trip k: kept absolute indices and gap flags into the trip's own slots
    ``offsets[k]:`` and their count into ``n_kept[k]``."""
    for k in numba.prange(offsets.shape[0] - 1):
        s = offsets[k]
        e = offsets[k + 1]
        m = _clean_trip(t_s[s:e], lat_deg[s:e], lon_deg[s:e], accuracy_m[s:e], now_s, p,
                        slot_index[s:e])
        for j in range(m):
            i = slot_index[s + j] + s
            slot_index[s + j] = i
            slot_gap[s + j] = j > 0 and t_s[i] - t_s[slot_index[s + j - 1]] > p.gap_s
        n_kept[k] = m


def _compact(
    slot_index: IntArray, slot_gap: np.ndarray, offsets: IntArray, new_offsets: IntArray,
    index_out: IntArray, gap_out: np.ndarray,
) -> None:
    """Move each trip's kept slots to ``new_offsets[k]:new_offsets[k + 1]``."""
    for k in numba.prange(offsets.shape[0] - 1):
        s = offsets[k]
        o = new_offsets[k]
        for j in range(new_offsets[k + 1] - o):
            index_out[o + j] = slot_index[s + j]
            gap_out[o + j] = slot_gap[s + j]


_clean_slots_serial = serial(_clean_slots)
_clean_slots_parallel = parallel_jit(_clean_slots)
_compact_serial = serial(_compact)
_compact_parallel = parallel_jit(_compact)


def sort_order(
    t_s: FloatArray, offsets: IntArray, *tie_keys: FloatArray
) -> IntArray | None:
    """Permutation sorting each trip by time, or None when it already strictly increases.

    Samples with equal times are ordered by ``tie_keys`` (first key first; NaN last) so
    that the one cleaning keeps does not depend on the order the uploads arrived in.
    """
    if _is_strictly_increasing(t_s, offsets):
        return None
    trip = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
    keys = (*reversed(tie_keys), t_s, trip)
    return np.lexsort(keys).astype(np.int64)


class CleanedGps(NamedTuple):
    """Result of :func:`clean_gps`.

    ``sample_index`` selects the kept fixes from the caller's arrays, trip by trip in
    time order; ``offsets`` are the trip boundaries in ``sample_index``; ``gap_before[j]``
    marks a kept fix more than ``gap_s`` after the previous kept fix of its trip
    (nothing is computed across such a gap).
    """

    sample_index: IntArray
    offsets: IntArray
    gap_before: np.ndarray


def clean_gps(
    t_s: Any, lat_deg: Any, lon_deg: Any, accuracy_m: Any = None, offsets: Any = None,
    *, now_s: float, params: GpsParams = DEFAULT_PARAMS, parallel: bool = False,
) -> CleanedGps:
    """Sort, de-duplicate and filter GPS fixes of one or many trips.

    ``t_s`` (float seconds since the epoch, finite), ``lat_deg`` and ``lon_deg`` (NaN for
    a dropout) and optional ``accuracy_m`` (NaN when unknown) have equal lengths; trips
    are ``offsets[n_trips + 1]`` (default: one trip). ``now_s`` is the server time used
    for the far-future filter. Among fixes with equal times the most accurate is kept.
    ``parallel`` spreads trips over numba's threads (same result).
    """
    t = float_column("t_s", t_s, finite=True)
    n = t.shape[0]
    lat = float_column("lat_deg", lat_deg, n)
    lon = float_column("lon_deg", lon_deg, n)
    acc = optional_float_column("accuracy_m", accuracy_m, n)
    offs = offsets_column(offsets, n)
    if not math.isfinite(now_s):
        raise ValueError("now_s: must be finite")
    order = sort_order(t, offs, acc, lat, lon)
    if order is not None:
        t, lat, lon, acc = t[order], lat[order], lon[order], acc[order]
    slot_index = np.empty(n, dtype=np.int64)
    slot_gap = np.empty(n, dtype=np.bool_)
    n_kept = np.empty(offs.shape[0] - 1, dtype=np.int64)
    clean_slots = _clean_slots_parallel if parallel else _clean_slots_serial
    with dynamic_schedule():
        clean_slots(t, lat, lon, acc, offs, float(now_s), params.kernel(), slot_index,
                    slot_gap, n_kept)
    new_offsets = np.zeros(offs.shape[0], dtype=np.int64)
    np.cumsum(n_kept, out=new_offsets[1:])
    index = np.empty(new_offsets[-1], dtype=np.int64)
    gap_before = np.empty(new_offsets[-1], dtype=np.bool_)
    compact = _compact_parallel if parallel else _compact_serial
    with dynamic_schedule():
        compact(slot_index, slot_gap, offs, new_offsets, index, gap_before)
    return CleanedGps(index if order is None else order[index], new_offsets, gap_before)
