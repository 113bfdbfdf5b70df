"""Slow, obviously correct reference implementations of the GPS core's stages."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from telematics.core.params import GpsParams

A = 6378137.0
F = 1 / 298.257223563
B = A * (1 - F)


def vincenty_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Vincenty's (1975) inverse formula on WGS84: the geodesic distance in metres."""
    if lat1 == lat2 and lon1 == lon2:
        return 0.0
    u1 = math.atan((1 - F) * math.tan(math.radians(lat1)))
    u2 = math.atan((1 - F) * math.tan(math.radians(lat2)))
    big_l = math.radians(lon2 - lon1)
    lam = big_l
    for _ in range(200):
        sin_lam, cos_lam = math.sin(lam), math.cos(lam)
        sin_sigma = math.hypot(math.cos(u2) * sin_lam,
                               math.cos(u1) * math.sin(u2) - math.sin(u1) * math.cos(u2) * cos_lam)
        cos_sigma = math.sin(u1) * math.sin(u2) + math.cos(u1) * math.cos(u2) * cos_lam
        sigma = math.atan2(sin_sigma, cos_sigma)
        sin_alpha = math.cos(u1) * math.cos(u2) * sin_lam / sin_sigma
        cos2_alpha = 1 - sin_alpha**2
        cos_2sm = cos_sigma - 2 * math.sin(u1) * math.sin(u2) / cos2_alpha if cos2_alpha else 0.0
        c = F / 16 * cos2_alpha * (4 + F * (4 - 3 * cos2_alpha))
        lam_prev = lam
        lam = big_l + (1 - c) * F * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1 + 2 * cos_2sm**2)))
        if abs(lam - lam_prev) < 1e-13:
            break
    u_sq = cos2_alpha * (A**2 - B**2) / B**2
    big_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    big_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    d_sigma = big_b * sin_sigma * (cos_2sm + big_b / 4 * (
        cos_sigma * (-1 + 2 * cos_2sm**2)
        - big_b / 6 * cos_2sm * (-3 + 4 * sin_sigma**2) * (-3 + 4 * cos_2sm**2)))
    return B * big_a * (sigma - d_sigma)


def step_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Reference step distance: Vincenty, NaN when a position is missing."""
    if not all(math.isfinite(x) for x in (lat1, lon1, lat2, lon2)):
        return math.nan
    return vincenty_m(lat1, lon1, lat2, lon2)


def clean(t, lat, lon, acc, now_s: float, p: GpsParams) -> list[int]:
    """Indices kept by the cleaning rules for one trip, after a stable sort by
    (time, accuracy, lat, lon); returned as indices into the sorted order."""
    kept: list[int] = []
    streak: list[int] = []
    run_start = 0
    for i in range(len(t)):
        if not (abs(lat[i]) <= 90 and abs(lon[i]) <= 180):
            continue
        if lat[i] == 0 and lon[i] == 0:
            continue
        if acc[i] > p.max_accuracy_m or t[i] > now_s + p.max_future_s:
            continue
        if kept and t[i] <= t[kept[-1]]:
            continue
        if kept:
            j = kept[-1]
            speed = step_m(lat[j], lon[j], lat[i], lon[i]) / (t[i] - t[j])
            if speed > p.max_implied_speed_mps:
                if streak:
                    r = streak[-1]
                    ok = step_m(lat[r], lon[r], lat[i], lon[i]) / (t[i] - t[r])
                    streak = [*streak, i] if ok <= p.max_implied_speed_mps else [i]
                else:
                    streak = [i]
                if len(streak) < p.jump_reanchor_fixes:
                    continue
                if len(kept) - run_start < p.jump_reanchor_fixes:
                    del kept[run_start:]
                run_start = len(kept)
        streak = []
        kept.append(i)
    return kept


def kinematics(t, lat, lon, rx, p: GpsParams) -> dict[str, np.ndarray]:
    """Per-fix kinematics of one cleaned trip with plain numpy and Vincenty distances."""
    n = len(t)
    dist = np.zeros(n)
    gap = np.ones(n, dtype=bool)
    heading = np.full(n, np.nan)
    for i in range(1, n):
        dist[i] = vincenty_m(lat[i - 1], lon[i - 1], lat[i], lon[i])
        dt = t[i] - t[i - 1]
        gap[i] = dt > p.gap_s or dist[i] > p.max_implied_speed_mps * dt
        if not gap[i] and dist[i] >= p.min_heading_speed_mps * dt:
            y = math.radians(lat[i] - lat[i - 1]) * 6367000.0
            x = math.radians(lon[i] - lon[i - 1]) * 6367000.0 * math.cos(
                math.radians(0.5 * (lat[i] + lat[i - 1])))
            heading[i - 1] = math.degrees(math.atan2(x, y)) % 360
    pos = np.full(n, np.nan)
    for i in range(n):
        parts = [(dist[j], t[j] - t[j - 1]) for j in (i, i + 1) if 0 < j < n and not gap[j]]
        if parts:
            pos[i] = sum(d for d, _ in parts) / sum(dt for _, dt in parts)
    rx = np.asarray(rx, dtype=float)
    plausible = (rx >= 0) & (rx <= p.max_implied_speed_mps)
    speed = np.where(plausible, rx, pos)
    path = dist.copy()
    doppler = np.where(rx < p.standstill_speed_mps, 0.0, rx)
    for i in range(1, n):
        if t[i] - t[i - 1] <= p.gap_s and plausible[i - 1] and plausible[i]:
            path[i] = (doppler[i - 1] + doppler[i]) / 2 * (t[i] - t[i - 1])
    accel = np.full(n, np.nan)
    for i in range(n - 1):
        if not gap[i + 1]:
            accel[i] = (speed[i + 1] - speed[i]) / (t[i + 1] - t[i])
    lat_acc = np.full(n, np.nan)
    for i in range(1, n - 1):
        turn = (heading[i] - heading[i - 1] + 180) % 360 - 180
        lat_acc[i] = -speed[i] * math.radians(turn) / ((t[i + 1] - t[i - 1]) / 2)
    return {"dist_m": dist, "path_m": path, "gap_before": gap, "speed_mps": speed, "accel_mps2": accel,
            "heading_deg": heading, "lat_accel_mps2": lat_acc, "pos_speed_mps": pos}


def threshold_runs(t, value, threshold, direction, min_duration_s, merge_gap_s, max_gap_s):
    """(start, end, peak) index triples of threshold events, by explicit interval lists."""
    t = list(t)
    n = len(t)

    def inside(i: int) -> bool:
        v = value[i]
        return bool(v >= threshold) if direction > 0 else bool(v <= threshold)

    def hold(j: int) -> float:
        if j + 1 < n and t[j + 1] - t[j] <= max_gap_s:
            return t[j + 1] - t[j]
        if j >= 1 and t[j] - t[j - 1] <= max_gap_s:
            return t[j] - t[j - 1]
        return 0.0

    runs = []
    i = 0
    while i < n:
        if not inside(i):
            i += 1
            continue
        j = i
        while j + 1 < n and inside(j + 1) and t[j + 1] - t[j] <= max_gap_s:
            j += 1
        if t[j] + hold(j) - t[i] >= min_duration_s - 1e-9:
            runs.append([i, j])
        i = j + 1
    events: list[list[int]] = []
    for run in runs:
        if events:
            prev = events[-1]
            between = [t[q] - t[q - 1] for q in range(prev[1] + 1, run[0] + 1)]
            if t[run[0]] - (t[prev[1]] + hold(prev[1])) < merge_gap_s and max(between) <= max_gap_s:
                prev[1] = run[1]
                continue
        events.append(list(run))
    out = []
    for s, e in events:
        seg = [value[q] if inside(q) else np.nan for q in range(s, e + 1)]
        seg_arr = np.asarray(seg, dtype=float) * direction
        out.append((s, e, s + int(np.nanargmax(seg_arr))))
    return out


def local_hour_weekday(t_s: float, zone: str) -> tuple[float, int]:
    """Local wall-clock hour of day and weekday (Monday 0) via zoneinfo."""
    local = datetime.fromtimestamp(t_s, tz=UTC).astimezone(ZoneInfo(zone))
    hour = local.hour + local.minute / 60 + (local.second + local.microsecond / 1e6) / 3600
    return hour, local.weekday()


def in_band(hour: float, start: float, end: float) -> bool:
    return start <= hour < end if start <= end else (hour >= start or hour < end)


def trip_features(t, lat, lon, rx, zone: str, p: GpsParams) -> dict[str, float]:
    """Non-event features of one cleaned trip, step by step in plain Python."""
    k = kinematics(t, lat, lon, rx, p)
    out = {name: 0.0 for name in (
        "distance_m", "moving_s", "idle_s", "gap_time_s", "gap_distance_m", "night_distance_m",
        "night_s", "rush_distance_m", "rush_s")}
    out["duration_s"] = float(t[-1] - t[0]) if len(t) else 0.0
    for i in range(1, len(t)):
        dt = t[i] - t[i - 1]
        d = k["path_m"][i]
        out["distance_m"] += d
        hour, weekday = local_hour_weekday(t[i - 1] + dt / 2, zone)
        if in_band(hour, p.night_start_h, p.night_end_h):
            out["night_distance_m"] += d
            out["night_s"] += dt
        rush = in_band(hour, p.rush_morning_start_h, p.rush_morning_end_h) or in_band(
            hour, p.rush_evening_start_h, p.rush_evening_end_h)
        if weekday < 5 and rush:
            out["rush_distance_m"] += d
            out["rush_s"] += dt
        if k["gap_before"][i]:
            out["gap_time_s"] += dt
            out["gap_distance_m"] += d
            continue
        v = (k["speed_mps"][i - 1] + k["speed_mps"][i]) / 2
        if not math.isfinite(v):
            v = d / dt
        if v >= p.moving_speed_mps:
            out["moving_s"] += dt
        else:
            out["idle_s"] += dt
    return out


def weighted_median(values, weights) -> float:
    pairs = sorted(zip(values, weights, strict=True), key=lambda vw: vw[0])
    total = sum(weights)
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= total / 2:
            return float(v)
    return float(pairs[-1][0])


def segment(t, lat, lon, p: GpsParams) -> list[tuple[int, int]]:
    """Trips [start, stop) of one cleaned stream, by the stop rule applied literally."""
    n = len(t)

    def near(i: int, la: float, lo: float, r: float) -> bool:
        return vincenty_m(lat[i], lon[i], la, lo) <= r

    trips = []
    cur = 0
    i = 0
    while i < n:
        j = i
        while (j + 1 < n and t[j + 1] - t[j] <= p.split_gap_s
               and near(j + 1, lat[i], lon[i], p.stop_radius_m)):
            j += 1
        if t[j] - t[i] >= p.stop_min_s:
            hold = [t[q + 1] - t[q] for q in range(i, j)] + [0.0]
            c_lat, c_lon = weighted_median(lat[i:j + 1], hold), weighted_median(lon[i:j + 1], hold)
            core = [q for q in range(i, j + 1) if near(q, c_lat, c_lon, p.stop_core_radius_m)]
            arrive = core[0] if core else j
            depart = core[-1] if core else j
            end, nxt, i = arrive + 1, depart, j + 1
        elif i + 1 < n and t[i + 1] - t[i] > p.split_gap_s:
            end, nxt, i = i + 1, i + 1, i + 1
        elif i + 1 == n:
            end, nxt, i = n, n, n
        else:
            i += 1
            continue
        if any(not near(q, lat[cur], lon[cur], p.stop_radius_m) for q in range(cur, end)):
            trips.append((cur, end))
        cur = nxt
    return trips


E2 = F * (2 - F)


def local_step_en(lat1: float, lon1: float, lat2: float, lon2: float) -> tuple[float, float]:
    """(east, north) metres from fix 1 to fix 2 on WGS84's local radii of curvature at the
    step's mid-latitude (meridional M, prime vertical N cos(lat)); longitude wraps."""
    mid = math.radians(0.5 * (lat1 + lat2))
    w = 1 - E2 * math.sin(mid) ** 2
    m = A * (1 - E2) / w**1.5
    nc = A * math.cos(mid) / math.sqrt(w)
    dlon = (lon2 - lon1 + 180.0) % 360.0 - 180.0
    return math.radians(dlon) * nc, math.radians(lat2 - lat1) * m


def corner_lateral(t, lat, lon, rx, p: GpsParams) -> dict[str, np.ndarray]:
    """Per fix of one cleaned trip: ``speed_mps``, ``turn_deg`` (heading change from the
    step into fix i to the step out of it, positive clockwise) and ``lateral_mps2`` (the
    two-turn lateral acceleration of fix i: speed x heading change over the turns at fixes
    i and i+1, per time between the middles of the step into i and the step out of i+1,
    positive to the left). NaN where a step is a gap or too slow for a heading."""
    n = len(t)
    dist = np.zeros(n)
    no_gap = np.zeros(n, dtype=bool)  # the step into fix i
    course: list[float | None] = [None] * n  # course of the step out of fix i, radians
    for i in range(1, n):
        east, north = local_step_en(lat[i - 1], lon[i - 1], lat[i], lon[i])
        dt = t[i] - t[i - 1]
        dist[i] = math.hypot(east, north)
        no_gap[i] = dt <= p.gap_s and dist[i] <= p.max_implied_speed_mps * dt
        if no_gap[i] and dist[i] >= p.min_heading_speed_mps * dt:
            course[i - 1] = math.atan2(east, north)
    speed = np.full(n, np.nan)
    for i in range(n):
        if 0 <= rx[i] <= p.max_implied_speed_mps:
            speed[i] = rx[i]
            continue
        steps = [j for j in (i, i + 1) if 0 < j < n and no_gap[j]]
        if steps:
            speed[i] = sum(dist[j] for j in steps) / sum(t[j] - t[j - 1] for j in steps)
    turn = np.full(n, np.nan)
    for i in range(1, n - 1):
        before, after = course[i - 1], course[i]
        if before is not None and after is not None:
            turn[i] = math.degrees((after - before + math.pi) % (2 * math.pi) - math.pi)
    lateral = np.full(n, np.nan)
    for i in range(1, n - 2):
        span_s = 0.5 * (t[i + 1] + t[i + 2]) - 0.5 * (t[i - 1] + t[i])
        heading_change = math.radians(turn[i] + turn[i + 1])
        lateral[i] = -0.5 * (speed[i] + speed[i + 1]) * heading_change / span_s
    return {"speed_mps": speed, "turn_deg": turn, "lateral_mps2": lateral}


def gps_corner_events(t, lat, lon, rx, accuracy_m, p: GpsParams):
    """Cornering events of one cleaned trip as (start, end_t_s, peak, peak_value, severity)
    by the documented rule, step by step; start and peak are fix indices."""
    n = len(t)
    k = corner_lateral(t, lat, lon, rx, p)
    speed, turn, lateral = k["speed_mps"], k["turn_deg"], k["lateral_mps2"]
    size = np.abs(lateral)
    half = p.corner_lateral_mps2 / 2

    def hold_s(j: int) -> float:
        """How long fix j's lateral holds: until the next fix, else as long as the last step."""
        if j + 1 < n and t[j + 1] - t[j] <= p.gap_s:
            return t[j + 1] - t[j]
        if j >= 1 and t[j] - t[j - 1] <= p.gap_s:
            return t[j] - t[j - 1]
        return 0.0

    # A run too short to count is dropped before runs merge, so none of its fixes can be
    # the peak of the event it lies inside (the kernel's reading; threshold_runs takes the
    # peak over the whole merged span).
    counted = size.copy()
    for start, end, _ in threshold_runs(t, size, p.corner_lateral_mps2, 1, 0.0, 0.0, p.gap_s):
        if t[end] + hold_s(end) - t[start] < p.harsh_min_duration_s - 1e-9:
            counted[start:end + 1] = np.nan
    out = []
    for start, end, peak in threshold_runs(t, counted, p.corner_lateral_mps2, 1,
                                           p.harsh_min_duration_s, p.harsh_merge_s, p.gap_s):
        if not speed[peak] > p.corner_min_speed_mps:
            continue
        lo, hi = start, end
        while lo > 0 and size[lo - 1] >= half:
            lo -= 1
        while hi + 1 < n and size[hi + 1] >= half:
            hi += 1
        # The laterals of fixes lo..hi measure the turns at fixes lo..hi+1; an unknown
        # turn leaves the heading change unknown, which is not more than the minimum.
        heading_change = sum(turn[i] for i in range(lo, hi + 2))
        if not abs(heading_change) > p.corner_min_heading_change_deg:
            continue
        fixes = {j for i in range(lo, hi + 2) for j in (i - 1, i, i + 1)}
        if any(accuracy_m[j] > p.corner_max_accuracy_m for j in fixes):
            continue
        a = size[peak]
        severity = ("severe" if a >= p.corner_band_severe_mps2
                    else "high" if a >= p.corner_band_high_mps2 else "medium")
        out.append((start, t[end] + hold_s(end), peak, lateral[peak], severity))
    return out
