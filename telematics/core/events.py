"""Event detection: a generic threshold-run detector over any (time, value) series, and
the GPS events built on it (harsh braking, acceleration and cornering, speeding, fatigue)."""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import numpy as np

from telematics.core.checks import FloatArray, IntArray, float_column, offsets_column
from telematics.core.clean import _is_strictly_increasing
from telematics.core.geo import _DEG
from telematics.core.jit import serial
from telematics.core.params import KernelParams

EVENT_KINDS: tuple[str, ...] = ("braking", "acceleration", "cornering", "speeding", "fatigue")
SEVERITIES: tuple[str, ...] = ("moderate", "medium", "high", "severe")
KIND_BRAKING, KIND_ACCELERATION, KIND_CORNERING, KIND_SPEEDING, KIND_FATIGUE = range(5)
SEV_MODERATE, SEV_MEDIUM, SEV_HIGH, SEV_SEVERE = range(4)
# Columns of the float event record written by the kernels.
EV_START_T, EV_END_T, EV_PEAK, EV_SPEED, EV_LAT, EV_LON = range(6)
N_EV_FLOAT = 6


@serial
def _hold_s(t_s: FloatArray, j: int, max_gap_s: float) -> float:
    """How long sample j's value holds: until the next sample, else as long as the last step."""
    n = t_s.shape[0]
    if j + 1 < n and t_s[j + 1] - t_s[j] <= max_gap_s:
        return t_s[j + 1] - t_s[j]
    if j >= 1 and t_s[j] - t_s[j - 1] <= max_gap_s:
        return t_s[j] - t_s[j - 1]
    return 0.0


@serial
def _detect_runs(
    t_s: FloatArray, value: FloatArray, threshold: float, direction: int,
    min_duration_s: float, merge_gap_s: float, max_gap_s: float,
    start_out: IntArray, end_out: IntArray, peak_out: IntArray, end_t_out: FloatArray,
) -> int:
    """Threshold events in one time-sorted series; return how many there are.

    A sample is *in* when ``value >= threshold`` (``direction`` +1) or ``value <=
    threshold`` (-1); NaN is never in. A run is a stretch of consecutive in-samples with
    no step longer than ``max_gap_s``; each sample holds its value until the next (see
    ``_hold_s``), so a run lasts from its first sample's time to its last sample's time
    plus that hold. Runs shorter than ``min_duration_s`` are dropped; a run starting less
    than ``merge_gap_s`` after the previous kept one ends, with no gap in between, extends
    it. Event e is written as local indices ``start_out[e]``, ``end_out[e]`` (last
    in-sample), ``peak_out[e]`` (most extreme value) and ``end_t_out[e]``; events beyond
    the outputs' capacity are counted but not written, so a caller can retry bigger.
    """
    n = t_s.shape[0]
    cap = start_out.shape[0]
    count = 0
    have = False
    ev_start = 0
    ev_end = 0
    ev_peak = 0
    ev_end_t = 0.0
    # Negation is exact, so ``sign * v >= level`` is ``v <= threshold`` for direction -1
    # (and false for NaN): one branch-free comparison in the loop most samples leave at once.
    sign = 1.0 if direction > 0 else -1.0
    level = sign * threshold
    i = 0
    while i < n:
        # Most samples are out: skip them eight at a time with a branch-free test.
        while i + 8 <= n:
            hit = False
            for j in range(i, i + 8):
                hit |= sign * value[j] >= level
            if hit:
                break
            i += 8
        if i >= n:
            break
        if not sign * value[i] >= level:
            i += 1
            continue
        run_start = i
        peak = i
        j = i
        while j + 1 < n and t_s[j + 1] - t_s[j] <= max_gap_s:
            w = value[j + 1]
            if not sign * w >= level:
                break
            j += 1
            if (w - value[peak]) * direction > 0.0:
                peak = j
        run_end_t = t_s[j] + _hold_s(t_s, j, max_gap_s)
        i = j + 1
        if run_end_t - t_s[run_start] < min_duration_s - 1e-9:
            continue
        merge = have and t_s[run_start] - ev_end_t < merge_gap_s
        if merge:
            for q in range(ev_end + 1, run_start + 1):
                if t_s[q] - t_s[q - 1] > max_gap_s:
                    merge = False
                    break
        if merge:
            ev_end = j
            ev_end_t = run_end_t
            if (value[peak] - value[ev_peak]) * direction > 0.0:
                ev_peak = peak
            continue
        if have:
            if count < cap:
                start_out[count] = ev_start
                end_out[count] = ev_end
                peak_out[count] = ev_peak
                end_t_out[count] = ev_end_t
            count += 1
        have = True
        ev_start, ev_end, ev_peak, ev_end_t = run_start, j, peak, run_end_t
    if have:
        if count < cap:
            start_out[count] = ev_start
            end_out[count] = ev_end
            peak_out[count] = ev_peak
            end_t_out[count] = ev_end_t
        count += 1
    return count


@serial
def _threshold_events_kernel(
    t_s: FloatArray, value: FloatArray, offsets: IntArray, threshold: float, direction: int,
    min_duration_s: float, merge_gap_s: float, max_gap_s: float,
    start_out: IntArray, end_out: IntArray, peak_out: IntArray, end_t_out: FloatArray,
    n_out: IntArray,
) -> None:
    """Per trip k, events go to the outputs' slice ``offsets[k]:`` (an event needs a sample)."""
    for k in range(offsets.shape[0] - 1):
        s = offsets[k]
        e = offsets[k + 1]
        c = _detect_runs(t_s[s:e], value[s:e], threshold, direction, min_duration_s,
                         merge_gap_s, max_gap_s, start_out[s:e], end_out[s:e], peak_out[s:e],
                         end_t_out[s:e])
        for q in range(c):
            start_out[s + q] += s
            end_out[s + q] += s
            peak_out[s + q] += s
        n_out[k] = c


class ThresholdEvents(NamedTuple):
    """Events of :func:`detect_threshold_events`, one entry per event in time order."""

    trip: IntArray
    start_idx: IntArray
    end_idx: IntArray
    peak_idx: IntArray
    start_t_s: FloatArray
    end_t_s: FloatArray
    peak_value: FloatArray


def detect_threshold_events(
    t_s: Any, value: Any, offsets: Any = None, *, threshold: float,
    direction: Literal["above", "below"], min_duration_s: float, merge_gap_s: float,
    max_gap_s: float,
) -> ThresholdEvents:
    """Find stretches where ``value`` crosses ``threshold`` for long enough, per trip.

    Works on any sampled series: GPS longitudinal acceleration at 1 Hz, vehicle-frame IMU
    acceleration at 25 Hz, speed over a limit.

    Parameters
    ----------
    t_s : float64 seconds, strictly increasing within each trip, finite.
    value : float64 series of the same length; NaN (a dropout) is never an event sample.
    offsets : int64 ``offsets[n_trips + 1]`` trip boundaries (default: one trip).
    threshold : events are where ``value >= threshold`` (``direction="above"``) or
        ``value <= threshold`` (``"below"``, e.g. -3.2 m/s^2 for harsh braking).
    min_duration_s : minimum duration of a run; each sample holds its value until the
        next one, so one 1 Hz sample lasts 1 s and fifteen 25 Hz samples 0.6 s.
    merge_gap_s : runs closer than this (end to start) merge into one event.
    max_gap_s : a step longer than this breaks runs and forbids merging across it.

    Returns
    -------
    ThresholdEvents with, per event, its trip number, global sample indices of its first,
    last and peak sample, its start and end times and its peak value.
    """
    t = float_column("t_s", t_s, finite=True)
    n = t.shape[0]
    val = float_column("value", value, n)
    offs = offsets_column(offsets, n)
    if direction not in ("above", "below"):
        raise ValueError(f"direction: expected 'above' or 'below', got {direction!r}")
    for name, x in (("threshold", threshold), ("min_duration_s", min_duration_s),
                    ("merge_gap_s", merge_gap_s), ("max_gap_s", max_gap_s)):
        if not math.isfinite(x) or (name != "threshold" and x < 0):
            raise ValueError(f"{name}: must be finite{'' if name == 'threshold' else ' and >= 0'}")
    if not _is_strictly_increasing(t, offs):
        raise ValueError("t_s: must strictly increase within each trip")
    start = np.empty(n, dtype=np.int64)
    end = np.empty(n, dtype=np.int64)
    peak = np.empty(n, dtype=np.int64)
    end_t = np.empty(n)
    counts = np.empty(offs.shape[0] - 1, dtype=np.int64)
    _threshold_events_kernel(t, val, offs, float(threshold), 1 if direction == "above" else -1,
                             float(min_duration_s), float(merge_gap_s), float(max_gap_s),
                             start, end, peak, end_t, counts)
    trip_len = np.diff(offs)
    rank = np.arange(n) - np.repeat(offs[:-1], trip_len)
    sel = rank < np.repeat(counts, trip_len)
    trip = np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)
    return ThresholdEvents(trip, start[sel], end[sel], peak[sel], t[start[sel]], end_t[sel],
                           val[peak[sel]])


@serial
def _severity(peak_abs: float, high: float, severe: float) -> int:
    """Severity code of a harsh event from its peak magnitude; medium is the floor."""
    if peak_abs >= severe:
        return SEV_SEVERE
    if peak_abs >= high:
        return SEV_HIGH
    return SEV_MEDIUM


@serial
def _emit(
    q: int, kind: int, severity: int, start: int, end_t: float, peak: int, peak_value: float,
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, speed_mps: FloatArray,
    ev_kind: IntArray, ev_sev: IntArray, ev_f: FloatArray,
) -> int:
    """Write event q if it fits; speed is taken at the start, the position at the peak."""
    if q < ev_kind.shape[0]:
        ev_kind[q] = kind
        ev_sev[q] = severity
        ev_f[q, EV_START_T] = t_s[start]
        ev_f[q, EV_END_T] = end_t
        ev_f[q, EV_PEAK] = peak_value
        ev_f[q, EV_SPEED] = speed_mps[start]
        ev_f[q, EV_LAT] = lat_deg[peak]
        ev_f[q, EV_LON] = lon_deg[peak]
    return q + 1


@serial
def _gps_trip_events(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, speed_mps: FloatArray,
    accel_mps2: FloatArray, heading_rate_dps: FloatArray, accuracy_m: FloatArray,
    speed_limit_mps: FloatArray, prior_driving_s: float, p: KernelParams,
    ev_kind: IntArray, ev_sev: IntArray, ev_f: FloatArray, driving_end_out: FloatArray,
    ints: IntArray, floats: FloatArray,
) -> int:
    """All GPS events of one cleaned trip with its kinematics; return the event count.

    Events are written while they fit in ``ev_kind``'s length (see ``_detect_runs``).
    ``prior_driving_s`` is the driving time without a break carried in from earlier trips;
    ``driving_end_out[0]`` receives the driving time without a break at the trip's end.
    ``ints[6, >= n]`` and ``floats`` are scratch, reused across trips by the
    caller (``floats[4, >= n]``). ``heading_rate_dps`` must be exact at every fix (NaN
    where there is no turn); ``accuracy_m`` is the fixes' reported accuracy (NaN unknown).
    """
    n = t_s.shape[0]
    driving_end_out[0] = prior_driving_s
    if n == 0:
        return 0
    a_start, a_end, a_peak, b_start, b_end, b_peak = (ints[0, :n], ints[1, :n], ints[2, :n],
                                                      ints[3, :n], ints[4, :n], ints[5, :n])
    a_end_t, b_end_t, series, lat2 = floats[0, :n], floats[1, :n], floats[2, :n], floats[3, :n]
    q = 0
    # Harsh and moderate braking, then acceleration: a moderate event overlapping a harsh
    # one of its kind is the same manoeuvre and is reported once, as the harsh one.
    for kind in (KIND_BRAKING, KIND_ACCELERATION):
        if kind == KIND_BRAKING:
            sign = -1
            harsh, moderate = -p.brake_harsh_mps2, -p.brake_moderate_mps2
            high, severe = p.brake_band_high_mps2, p.brake_band_severe_mps2
        else:
            sign = 1
            harsh, moderate = p.accel_harsh_mps2, p.accel_moderate_mps2
            high, severe = p.accel_band_high_mps2, p.accel_band_severe_mps2
        na = _detect_runs(t_s, accel_mps2, harsh, sign, p.harsh_min_duration_s, p.harsh_merge_s,
                          p.gap_s, a_start, a_end, a_peak, a_end_t)
        nb = _detect_runs(t_s, accel_mps2, moderate, sign, p.harsh_min_duration_s,
                          p.harsh_merge_s, p.gap_s, b_start, b_end, b_peak, b_end_t)
        for e in range(na):
            peak = accel_mps2[a_peak[e]]
            q = _emit(q, kind, _severity(abs(peak), high, severe), a_start[e], a_end_t[e],
                      a_peak[e], peak, t_s, lat_deg, lon_deg, speed_mps, ev_kind, ev_sev, ev_f)
        h = 0
        for e in range(nb):
            start_t = t_s[b_start[e]]
            while h < na and a_end_t[h] <= start_t:
                h += 1
            if h < na and t_s[a_start[h]] < b_end_t[e]:
                continue
            q = _emit(q, kind, SEV_MODERATE, b_start[e], b_end_t[e], b_peak[e],
                      accel_mps2[b_peak[e]], t_s, lat_deg, lon_deg, speed_mps,
                      ev_kind, ev_sev, ev_f)
    # Cornering: lateral acceleration over two consecutive turns (from the step into fix
    # i to the step out of fix i + 1, over the time between those steps' middles). One
    # turn at 1 Hz carries about 1.2 m/s^2 of noise from the fixes' own error, enough to
    # lift a 2 m/s^2 junction turn over the threshold; over two turns a white position
    # error enters twice with opposite signs and the noise halves, while a real corner's
    # lateral acceleration lasts the 2 s or more of its arc. Confirmed by a real change of
    # heading over the manoeuvre (the run widened to where this lateral stays above half
    # the threshold) and by speed, so GPS jitter while crawling is not a corner.
    for i in range(n):
        series[i] = math.nan
        lat2[i] = math.nan
    for i in range(1, n - 2):
        r0 = heading_rate_dps[i]
        r1 = heading_rate_dps[i + 1]
        if r0 == r0 and r1 == r1:
            hs0 = 0.5 * (t_s[i + 1] - t_s[i - 1])
            hs1 = 0.5 * (t_s[i + 2] - t_s[i])
            rate = (r0 * hs0 + r1 * hs1) / (hs0 + hs1) * _DEG
            lat2[i] = -0.5 * (speed_mps[i] + speed_mps[i + 1]) * rate
            series[i] = abs(lat2[i])
    na = _detect_runs(t_s, series, p.corner_lateral_mps2, 1, p.harsh_min_duration_s,
                      p.harsh_merge_s, p.gap_s, a_start, a_end, a_peak, a_end_t)
    half = 0.5 * p.corner_lateral_mps2
    for e in range(na):
        if not speed_mps[a_peak[e]] > p.corner_min_speed_mps:
            continue
        lo = a_start[e]
        while lo > 1 and series[lo - 1] >= half:
            lo -= 1
        hi = a_end[e]
        while hi < n - 3 and series[hi + 1] >= half:
            hi += 1
        # The window's two-turn laterals span the turns at fixes lo to hi + 1.
        turn_deg = 0.0
        for i in range(lo, hi + 2):
            turn_deg += heading_rate_dps[i] * 0.5 * (t_s[i + 1] - t_s[i - 1])
        # A corner needs a known turn of more than the minimum: a NaN sum (a step too
        # slow for a heading inside the window) is no turn.
        if not abs(turn_deg) > p.corner_min_heading_change_deg:
            continue
        # Those turns use the fixes lo - 1 to hi + 2.
        vague = False
        for i in range(lo - 1, hi + 3):
            if accuracy_m[i] > p.corner_max_accuracy_m:
                vague = True
        if vague:
            continue
        peak = series[a_peak[e]]
        q = _emit(q, KIND_CORNERING, _severity(peak, p.corner_band_high_mps2,
                                               p.corner_band_severe_mps2),
                  a_start[e], a_end_t[e], a_peak[e], lat2[a_peak[e]], t_s, lat_deg,
                  lon_deg, speed_mps, ev_kind, ev_sev, ev_f)
    # Speeding: speed over the trigger, which is the posted limit plus the tolerance
    # where the feed carries a limit and the absolute fallback elsewhere.
    for i in range(n):
        limit = speed_limit_mps[i]
        if limit > 0.0:
            series[i] = speed_mps[i] - (limit + p.speeding_tolerance_mps)
        else:
            series[i] = speed_mps[i] - p.speeding_fallback_limit_mps
    na = _detect_runs(t_s, series, 0.0, 1, p.speeding_min_duration_s, p.speeding_merge_s,
                      p.gap_s, a_start, a_end, a_peak, a_end_t)
    for e in range(na):
        peak = series[a_peak[e]]
        q = _emit(q, KIND_SPEEDING, _severity(peak, p.speeding_band_high_mps,
                                              p.speeding_band_severe_mps),
                  a_start[e], a_end_t[e], a_peak[e], peak, t_s, lat_deg, lon_deg, speed_mps,
                  ev_kind, ev_sev, ev_f)
    # Fatigue: driving time accumulates over moving steps and resets after a break
    # (standing still or no data) of at least fatigue_break_s.
    driving = prior_driving_s
    stopped = 0.0
    stop_start = 0
    ev_start = -1
    for i in range(1, n):
        dt = t_s[i] - t_s[i - 1]
        v = 0.5 * (speed_mps[i - 1] + speed_mps[i])
        if dt > p.gap_s or not v >= p.moving_speed_mps:
            if stopped == 0.0:
                stop_start = i - 1
            stopped += dt
            if stopped >= p.fatigue_break_s:
                if ev_start >= 0:
                    q = _emit(q, KIND_FATIGUE, SEV_HIGH, ev_start, t_s[stop_start], stop_start,
                              driving, t_s, lat_deg, lon_deg, speed_mps, ev_kind, ev_sev, ev_f)
                    ev_start = -1
                driving = 0.0
        else:
            stopped = 0.0
            driving += dt
            if driving > p.fatigue_driving_s and ev_start < 0:
                ev_start = i
    if ev_start >= 0:
        end = stop_start if stopped > 0.0 else n - 1
        q = _emit(q, KIND_FATIGUE, SEV_HIGH, ev_start, t_s[end], end, driving, t_s, lat_deg,
                  lon_deg, speed_mps, ev_kind, ev_sev, ev_f)
    driving_end_out[0] = driving
    return q
