"""Per-fix kinematics of cleaned GPS tracks: step distance, reconciled speed, longitudinal
acceleration, jerk, heading, heading rate and lateral acceleration."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from telematics.core.checks import (
    FloatArray,
    IntArray,
    float_column,
    offsets_column,
    optional_float_column,
)
from telematics.core.clean import _is_strictly_increasing
from telematics.core.geo import (
    _ANCHOR_SPAN_DEG,
    _DEG,
    _atan2,
    _bearing_deg,
    _radii_anchor,
    _radii_near,
    _step_en,
    _wrap_rad,
)
from telematics.core.jit import serial
from telematics.core.params import DEFAULT_PARAMS, GpsParams, KernelParams


@serial
def _path_step_m(rx0: float, rx1: float, dt: float, chord_m: float, p: KernelParams) -> float:
    """The path length of one step: from the receiver's Doppler speeds at both ends when
    both are valid (a step that is a gap only by its implied speed, a position jump the
    cleaning kept, is short in time: the Doppler speeds still measure it, the chord
    cannot), else the chord."""
    if (dt <= p.gap_s and rx0 >= 0.0 and rx0 <= p.max_implied_speed_mps and rx1 >= 0.0
            and rx1 <= p.max_implied_speed_mps):
        if rx0 < p.standstill_speed_mps:
            rx0 = 0.0
        if rx1 < p.standstill_speed_mps:
            rx1 = 0.0
        return 0.5 * (rx0 + rx1) * dt
    return chord_m


@serial
def _position_speed_mps(i: int, n: int, t_s: FloatArray, dist_m: FloatArray,
                        gap_before: np.ndarray) -> float:
    """Speed at fix i from the steps on either side that are not gaps; NaN without one."""
    total = 0.0
    span = 0.0
    if i > 0 and not gap_before[i]:
        total += dist_m[i]
        span += t_s[i] - t_s[i - 1]
    if i + 1 < n and not gap_before[i + 1]:
        total += dist_m[i + 1]
        span += t_s[i + 1] - t_s[i]
    return total / span if span > 0.0 else math.nan


@serial
def _kinematics_trip(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, rx_speed_mps: FloatArray,
    p: KernelParams,
    dist_m: FloatArray, path_m: FloatArray, gap_before: np.ndarray, pos_speed_mps: FloatArray,
    speed_mps: FloatArray, accel_mps2: FloatArray, jerk_mps3: FloatArray,
    heading_deg: FloatArray, heading_rate_dps: FloatArray, lat_accel_mps2: FloatArray,
) -> None:
    """Fill the per-fix outputs for one cleaned trip (time strictly increasing).

    Conventions (see docs/FEATURES.md): ``dist_m[i]`` and ``gap_before[i]`` describe the
    step from fix i-1 to fix i (a step is a gap when it lasts more than ``gap_s`` or needs
    more than ``max_implied_speed_mps``; its chord still counts as distance).
    ``path_m[i]`` is the distance driven over that step: the trapezoid of the receiver's
    speeds at both ends where both are plausible and the step lasts at most ``gap_s``
    (Doppler speed accumulates neither position jitter nor a position jump; speeds
    below ``standstill_speed_mps`` count as 0), else the geodesic chord ``dist_m[i]``.
    ``accel_mps2[i]``, ``jerk_mps3[i]`` and ``heading_deg[i]`` hold over the step from i
    to i+1; ``heading_rate_dps[i]`` and ``lat_accel_mps2[i]`` are the turn at fix i
    (positive lateral acceleration points left, ISO 8855). NaN where a value would need
    a gap, a missing neighbour or a heading below ``min_heading_speed_mps``.
    """
    n = t_s.shape[0]
    if n == 0:
        return
    anchor = _radii_anchor(lat_deg[0])
    m_prev, nc_prev = _radii_near(lat_deg[0], anchor)
    dist_m[0] = 0.0
    path_m[0] = 0.0
    gap_before[0] = True
    heading_deg[n - 1] = math.nan
    for i in range(1, n):
        if abs(lat_deg[i] - anchor[0]) > _ANCHOR_SPAN_DEG:
            anchor = _radii_anchor(lat_deg[i])
        m_i, nc_i = _radii_near(lat_deg[i], anchor)
        east, north = _step_en(lat_deg[i - 1], lon_deg[i - 1], m_prev, nc_prev,
                               lat_deg[i], lon_deg[i], m_i, nc_i)
        d = math.sqrt(east * east + north * north)
        dt = t_s[i] - t_s[i - 1]
        dist_m[i] = d
        gap = dt > p.gap_s or d > p.max_implied_speed_mps * dt
        gap_before[i] = gap
        if gap or d < p.min_heading_speed_mps * dt:
            heading_deg[i - 1] = math.nan
        else:
            heading_deg[i - 1] = _bearing_deg(east, north)
        m_prev, nc_prev = m_i, nc_i
        path_m[i] = _path_step_m(rx_speed_mps[i - 1], rx_speed_mps[i], dt, d, p)
    for i in range(n):
        pos_speed_mps[i] = _position_speed_mps(i, n, t_s, dist_m, gap_before)
        rx = rx_speed_mps[i]
        if rx >= 0.0 and rx <= p.max_implied_speed_mps:
            speed_mps[i] = rx
        else:
            speed_mps[i] = pos_speed_mps[i]
    for i in range(n):
        if i + 1 < n and not gap_before[i + 1]:
            accel_mps2[i] = (speed_mps[i + 1] - speed_mps[i]) / (t_s[i + 1] - t_s[i])
        else:
            accel_mps2[i] = math.nan
    for i in range(n):
        if i + 2 < n and not gap_before[i + 1] and not gap_before[i + 2]:
            jerk_mps3[i] = (accel_mps2[i + 1] - accel_mps2[i]) / (0.5 * (t_s[i + 2] - t_s[i]))
        else:
            jerk_mps3[i] = math.nan
    heading_rate_dps[0] = math.nan
    lat_accel_mps2[0] = math.nan
    heading_rate_dps[n - 1] = math.nan
    lat_accel_mps2[n - 1] = math.nan
    for i in range(1, n - 1):
        turn = _wrap_rad((heading_deg[i] - heading_deg[i - 1]) * _DEG)
        rate = turn / (0.5 * (t_s[i + 1] - t_s[i - 1]))
        heading_rate_dps[i] = rate / _DEG
        lat_accel_mps2[i] = -speed_mps[i] * rate


@serial
def _fix_speed(
    i: int, before_ok: bool, before_m: float, before_s: float, after_ok: bool,
    after_m: float, after_s: float, rx_speed_mps: FloatArray, p: KernelParams,
    pos_speed_mps: FloatArray, speed_mps: FloatArray,
) -> None:
    """Position speed and speed of fix i from the non-gap steps before and after it."""
    total = 0.0
    span = 0.0
    if before_ok:
        total += before_m
        span += before_s
    if after_ok:
        total += after_m
        span += after_s
    pos = total / span if span > 0.0 else math.nan
    pos_speed_mps[i] = pos
    rx = rx_speed_mps[i]
    speed_mps[i] = rx if rx >= 0.0 and rx <= p.max_implied_speed_mps else pos


# Below this ratio of cross to dot product (a turn of 7.1 degrees) the arctangent's own
# series, to x^11, is within 2e-13 rad: cheaper than the general polynomial and its octant
# reduction, and nearly every fix of a drive turns less than that.
_SMALL_TURN_RATIO = 0.125


@serial
def _turn_rad(cross: float, dot: float) -> float:
    """The angle between two step vectors from their cross and dot products (atan2)."""
    if dot > 0.0 and abs(cross) < _SMALL_TURN_RATIO * dot:
        r = cross / dot
        z = r * r
        return r * (1.0 + z * (-1.0 / 3.0 + z * (0.2 + z * (-1.0 / 7.0 + z * (
            1.0 / 9.0 + z * (-1.0 / 11.0))))))
    return _atan2(cross, dot)


@serial
def _trip_motion(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, rx_speed_mps: FloatArray,
    p: KernelParams, lat_floor_mps2: float,
    dist_m: FloatArray, path_m: FloatArray, gap_before: np.ndarray, pos_speed_mps: FloatArray,
    speed_mps: FloatArray, accel_mps2: FloatArray, jerk_mps3: FloatArray,
    heading_rate_dps: FloatArray, lat_accel_mps2: FloatArray,
    east_m: FloatArray, north_m: FloatArray, heading_ok: np.ndarray,
) -> None:
    """:func:`_kinematics_trip` for the feature pipeline, which needs no headings.

    Same outputs (see there) but for two things. The turn at fix i comes straight from
    its two step vectors (``atan2(cross, dot)``, no bearing per step). And where a bound
    proves ``|lat_accel_mps2[i]| < lat_floor_mps2`` (``|atan x| <= |x|``), no arctangent
    is taken at all: both ``lat_accel_mps2[i]`` and ``heading_rate_dps[i]`` are set to
    0.0, a placeholder below the floor. ``east_m``, ``north_m`` and ``heading_ok`` are
    scratch of at least the trip's length.
    """
    n = t_s.shape[0]
    if n == 0:
        return
    anchor = _radii_anchor(lat_deg[0])
    m_prev, nc_prev = _radii_near(lat_deg[0], anchor)
    dist_m[0] = 0.0
    path_m[0] = 0.0
    gap_before[0] = True
    heading_ok[0] = False
    # The previous step, for the speed at the fix between it and this one.
    prev_d = 0.0
    prev_dt = 0.0
    prev_ok = False
    for i in range(1, n):
        if abs(lat_deg[i] - anchor[0]) > _ANCHOR_SPAN_DEG:
            anchor = _radii_anchor(lat_deg[i])
        m_i, nc_i = _radii_near(lat_deg[i], anchor)
        east, north = _step_en(lat_deg[i - 1], lon_deg[i - 1], m_prev, nc_prev,
                               lat_deg[i], lon_deg[i], m_i, nc_i)
        m_prev, nc_prev = m_i, nc_i
        d = math.sqrt(east * east + north * north)
        dt = t_s[i] - t_s[i - 1]
        dist_m[i] = d
        east_m[i] = east
        north_m[i] = north
        gap = dt > p.gap_s or d > p.max_implied_speed_mps * dt
        gap_before[i] = gap
        heading_ok[i] = not gap and d >= p.min_heading_speed_mps * dt
        path_m[i] = _path_step_m(rx_speed_mps[i - 1], rx_speed_mps[i], dt, d, p)
        # Speed at fix i - 1 needs the steps on both sides of it: speeds run one fix
        # behind the steps (summed in the order _position_speed_mps sums them). In this
        # loop rather than a pass of its own, which costs several times more.
        _fix_speed(i - 1, prev_ok, prev_d, prev_dt, not gap, d, dt, rx_speed_mps, p,
                   pos_speed_mps, speed_mps)
        prev_d, prev_dt, prev_ok = d, dt, not gap
    _fix_speed(n - 1, prev_ok, prev_d, prev_dt, False, 0.0, 0.0, rx_speed_mps, p,
               pos_speed_mps, speed_mps)
    # Acceleration (i - 1) and jerk (i - 2) run behind the speeds.
    for i in range(1, n):
        if gap_before[i]:
            accel_mps2[i - 1] = math.nan
        else:
            accel_mps2[i - 1] = (speed_mps[i] - speed_mps[i - 1]) / (t_s[i] - t_s[i - 1])
        if i >= 2:
            if gap_before[i - 1] or gap_before[i]:
                jerk_mps3[i - 2] = math.nan
            else:
                jerk_mps3[i - 2] = (accel_mps2[i - 1] - accel_mps2[i - 2]) / (
                    0.5 * (t_s[i] - t_s[i - 2]))
    accel_mps2[n - 1] = math.nan
    jerk_mps3[n - 1] = math.nan
    if n >= 2:
        jerk_mps3[n - 2] = math.nan
    heading_rate_dps[0] = math.nan
    lat_accel_mps2[0] = math.nan
    heading_rate_dps[n - 1] = math.nan
    lat_accel_mps2[n - 1] = math.nan
    # A bound just under the floor, so that values within rounding of it take the exact path.
    floor = lat_floor_mps2 * (1.0 - 1e-6)
    for i in range(1, n - 1):
        if not (heading_ok[i] and heading_ok[i + 1]):
            heading_rate_dps[i] = math.nan
            lat_accel_mps2[i] = math.nan
            continue
        e0 = east_m[i]
        n0 = north_m[i]
        e1 = east_m[i + 1]
        n1 = north_m[i + 1]
        cross = n0 * e1 - e0 * n1
        dot = n0 * n1 + e0 * e1
        half_span = 0.5 * (t_s[i + 1] - t_s[i - 1])
        if dot > 0.0 and abs(speed_mps[i]) * abs(cross) < floor * dot * half_span:
            heading_rate_dps[i] = 0.0
            lat_accel_mps2[i] = 0.0
            continue
        rate = _turn_rad(cross, dot) / half_span
        heading_rate_dps[i] = rate / _DEG
        lat_accel_mps2[i] = -speed_mps[i] * rate


@serial
def _kinematics_kernel(
    t_s: FloatArray, lat_deg: FloatArray, lon_deg: FloatArray, rx_speed_mps: FloatArray,
    offsets: IntArray, p: KernelParams,
    dist_m: FloatArray, path_m: FloatArray, gap_before: np.ndarray, pos_speed_mps: FloatArray,
    speed_mps: FloatArray, accel_mps2: FloatArray, jerk_mps3: FloatArray,
    heading_deg: FloatArray, heading_rate_dps: FloatArray, lat_accel_mps2: FloatArray,
) -> None:
    for k in range(offsets.shape[0] - 1):
        s = offsets[k]
        e = offsets[k + 1]
        _kinematics_trip(t_s[s:e], lat_deg[s:e], lon_deg[s:e], rx_speed_mps[s:e], p,
                         dist_m[s:e], path_m[s:e], gap_before[s:e], pos_speed_mps[s:e],
                         speed_mps[s:e],
                         accel_mps2[s:e], jerk_mps3[s:e], heading_deg[s:e],
                         heading_rate_dps[s:e], lat_accel_mps2[s:e])


class Kinematics(NamedTuple):
    """Per-fix kinematics; conventions as in :func:`compute_kinematics`."""

    dist_m: FloatArray
    path_m: FloatArray
    gap_before: np.ndarray
    pos_speed_mps: FloatArray
    speed_mps: FloatArray
    accel_mps2: FloatArray
    jerk_mps3: FloatArray
    heading_deg: FloatArray
    heading_rate_dps: FloatArray
    lat_accel_mps2: FloatArray


def compute_kinematics(
    t_s: Any, lat_deg: Any, lon_deg: Any, speed_mps: Any = None, offsets: Any = None,
    *, params: GpsParams = DEFAULT_PARAMS,
) -> Kinematics:
    """Kinematics of cleaned trips (the output of :func:`telematics.core.clean.clean_gps`).

    ``dist_m[i]``/``gap_before[i]``: the step from fix i-1 to i (the first fix of a trip
    starts with a gap); ``path_m[i]``: the distance driven over it, from the receiver's
    speeds where both ends have one, else ``dist_m[i]``. ``speed_mps``: the receiver's speed where it reported a plausible
    one, else ``pos_speed_mps``, the mean speed over the adjacent non-gap steps.
    ``accel_mps2``, ``jerk_mps3`` and ``heading_deg`` hold over the step from i to i+1;
    ``heading_rate_dps`` and ``lat_accel_mps2`` (positive = left) are the turn at fix i.
    """
    t = float_column("t_s", t_s, finite=True)
    n = t.shape[0]
    lat = float_column("lat_deg", lat_deg, n, finite=True)
    lon = float_column("lon_deg", lon_deg, n, finite=True)
    rx = optional_float_column("speed_mps", speed_mps, n)
    offs = offsets_column(offsets, n)
    if not _is_strictly_increasing(t, offs):
        raise ValueError("t_s: must strictly increase within each trip (run clean_gps first)")
    out = Kinematics(
        np.empty(n), np.empty(n), np.empty(n, dtype=np.bool_), *(np.empty(n) for _ in range(7))
    )
    _kinematics_kernel(t, lat, lon, rx, offs, params.kernel(), *out)
    return out
