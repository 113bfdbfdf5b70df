"""Slow, obviously correct reference of telematics.core.imu, one trip at a time.

Same definitions as the kernels, written for clarity: numpy per window, explicit
neighbourhoods for the moving mean, run-length events, no shifted sums, no window
skipping and no two-pointer tricks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from telematics.core.imu import (
    EVENT_ACCELERATION,
    EVENT_BRAKING,
    EVENT_CORNERING,
    EVENT_PHONE_HANDLING,
    ImuParams,
)


@dataclass
class NaiveTrip:
    long_accel_mps2: np.ndarray
    lat_accel_mps2: np.ndarray
    vert_accel_mps2: np.ndarray
    handling: np.ndarray
    mountings: int
    window_speed_mps: np.ndarray  # GPS speed of each sample's window
    events: list[tuple[int, int, int, int, int]]  # kind, severity, start, end, peak (local)
    peaks: list[float]


def _windows(t: np.ndarray, p: ImuParams) -> list[tuple[int, int]]:
    out = []
    i = 0
    n = t.size
    while i < n:
        j = i + 1
        while j < n and t[j] - t[j - 1] <= p.gap_s and t[j] - t[i] < p.window_s:
            j += 1
        out.append((i, j))
        i = j
    return out


def _gps_at(tm: float, gt: np.ndarray, gv: np.ndarray, gap_s: float) -> tuple[float, float]:
    """(speed, longitudinal acceleration) from the GPS fixes at time tm."""
    speed = np.nan
    j = int(np.searchsorted(gt, tm, side="right")) - 1
    if 0 <= j < gt.size:
        if j + 1 < gt.size:
            dt = gt[j + 1] - gt[j]
            if dt <= gap_s:
                speed = gv[j] + (gv[j + 1] - gv[j]) * (tm - gt[j]) / dt
        elif tm == gt[j]:
            speed = gv[j]
    accel = np.nan
    if gt.size >= 3:
        dt = np.diff(gt)
        mids = gt[:-1] + 0.5 * dt
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where((dt > 0) & (dt <= gap_s), np.diff(gv) / dt, np.nan)
        k = min(int(np.searchsorted(mids, tm, side="right")) - 1, mids.size - 2)
        if (
            k >= 0
            and mids[k] <= tm <= mids[k + 1]
            and np.isfinite(acc[k])
            and np.isfinite(acc[k + 1])
        ):
            accel = acc[k] + (acc[k + 1] - acc[k]) * (tm - mids[k]) / (mids[k + 1] - mids[k])
    return speed, accel


def naive_trip(
    t: np.ndarray,
    acc: np.ndarray,  # (n, 3)
    gyro: np.ndarray | None,  # (n, 3)
    gps_t: np.ndarray,
    gps_v: np.ndarray,
    hands_free: np.ndarray | None,
    p: ImuParams,
) -> NaiveTrip:
    n = t.size
    valid = np.all(np.isfinite(acc), axis=1)
    wins = _windows(t, p)
    nw = len(wins)
    mean = np.full((nw, 3), np.nan)
    var = np.full(nw, np.nan)
    gyr = np.full(nw, np.nan)
    speed = np.full(nw, np.nan)
    gacc = np.full(nw, np.nan)
    first = acc[valid][0] if valid.any() else np.zeros(3)
    up = first / np.linalg.norm(first) if np.linalg.norm(first) > 0 else np.zeros(3)
    for w, (i0, i1) in enumerate(wins):
        a = acc[i0:i1][valid[i0:i1]]
        if a.shape[0]:
            mean[w] = a.mean(axis=0)
            var[w] = max(float(np.sum(a.var(axis=0))), 0.0)
        if gyro is not None:
            g = gyro[i0:i1]
            e = np.sum(g * g, axis=1) - (g @ up) ** 2
            e = e[np.isfinite(e)]
            if e.size:
                gyr[w] = e.mean()
        if (
            a.shape[0]
            and var[w] <= p.quiet_std_mps2**2
            and abs(np.linalg.norm(mean[w]) - p.gravity_mps2) <= p.quiet_gravity_tol_mps2
        ):
            up = mean[w] / np.linalg.norm(mean[w])  # the last quiet window's gravity
        speed[w], gacc[w] = _gps_at(0.5 * (t[i0] + t[i1 - 1]), gps_t, gps_v, p.gps_gap_s)

    # Mountings.
    cos_thr = np.cos(np.radians(p.reorient_angle_deg))
    flags = np.zeros(nw, dtype=int)  # 1 quiet, 2 gravity, 4 handling
    seg = np.zeros(nw, dtype=int)
    pose = np.zeros(nw, dtype=bool)  # handling because the phone left the mounting's pose
    cur = 0
    ref = np.zeros(3)
    cand_start, cand, last_ref, cand_from = -1, np.zeros(3), -1, 0
    moved = False  # shaken or tilted since last quiet in a mounting's pose

    def cosang(u: np.ndarray, v: np.ndarray) -> float:
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    for w in range(nw):
        f = 0
        has_gyr = np.isfinite(gyr[w])
        if np.isfinite(var[w]):
            off_pose = (
                moved
                and p.off_pose_angle_deg > 0
                and ref.any()
                and mean[w] @ ref / np.linalg.norm(ref)
                < np.cos(np.radians(p.off_pose_angle_deg)) * p.gravity_mps2
            )
            tilting = not has_gyr or gyr[w] > p.quiet_gyro_radps**2
            shaken = var[w] > p.handling_std_mps2**2 and tilting
            if shaken or (has_gyr and gyr[w] > p.handling_gyro_radps**2):
                f = 4
                moved = True
            elif (
                var[w] <= p.quiet_std_mps2**2
                and abs(np.linalg.norm(mean[w]) - p.gravity_mps2) <= p.quiet_gravity_tol_mps2
                and (not has_gyr or gyr[w] <= p.quiet_gyro_radps**2)
                and not abs(gacc[w]) > p.quiet_gps_accel_mps2
            ):
                f = 1
                m = mean[w]
                if not ref.any() or cosang(m, ref) >= cos_thr:
                    f |= 2
                    ref = ref + m
                    last_ref = w
                    cand_start = -1
                    moved = False
                else:
                    if off_pose:
                        f |= 4
                        pose[w] = True
                    if cand_start < 0 or cosang(m, cand) < cos_thr:
                        cand_start, cand, cand_from = w, np.zeros(3), last_ref + 1
                    cand = cand + m
                    if t[wins[w][1] - 1] - t[wins[cand_start][0]] >= p.reorient_confirm_s:
                        flags[cand_from:cand_start] |= 4
                        cur += 1
                        seg[cand_start:w] = cur
                        # Off the old pose, at rest in the new one.
                        flags[cand_start:w][pose[cand_start:w]] &= ~4
                        pose[cand_start:w] = False
                        flags[cand_start:w] |= np.where(flags[cand_start:w] & 1, 2, 0)
                        f = 3
                        pose[w] = False
                        ref, last_ref, cand_start, moved = cand, w, -1, False
            elif off_pose:
                f = 4
                pose[w] = True
        flags[w] = f
        seg[w] = cur
    for s in range(1, cur):
        ws = np.flatnonzero(seg == s)
        if ws.size and t[wins[ws[-1]][1] - 1] - t[wins[ws[0]][0]] < p.hold_max_s:
            flags[ws] |= 4
            pose[ws] = True
    near = np.zeros(nw, dtype=bool)
    near[1:] |= pose[:-1]
    near[:-1] |= pose[1:]
    flags[near] |= 4

    long_ = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    vert = np.full(n, np.nan)
    handled = np.zeros(n, dtype=bool)
    wspeed = np.full(n, np.nan)
    up = np.full((n, 3), np.nan)  # each sample's mounting's up direction
    for s in range(cur + 1):
        ws = np.flatnonzero(seg == s)
        steady = [w for w in ws if np.isfinite(var[w]) and not flags[w] & 4]
        grav_w = [w for w in ws if flags[w] & 2]
        if grav_w:
            g = mean[grav_w].mean(axis=0)
        elif steady:
            counts = np.array([valid[wins[w][0] : wins[w][1]].sum() for w in steady])
            g = (mean[steady] * counts[:, None]).sum(axis=0) / counts.sum()
        else:
            g = np.full(3, np.nan)
        gmag = np.linalg.norm(g)
        u = g / gmag
        fwd = np.full(3, np.nan)
        yaw_w = [w for w in steady if np.isfinite(gacc[w])]
        if yaw_w:
            counts = np.array([valid[wins[w][0] : wins[w][1]].sum() for w in yaw_w], dtype=float)
            dur = sum(
                (
                    t[wins[w][1]]
                    if wins[w][1] < n and t[wins[w][1]] - t[wins[w][1] - 1] <= p.gap_s
                    else t[wins[w][1] - 1]
                )
                - t[wins[w][0]]
                for w in yaw_w
            )
            wts = counts / counts.sum()
            m = mean[yaw_w]
            ga = gacc[yaw_w]
            cov = ((m - wts @ m) * (wts * (ga - wts @ ga))[:, None]).sum(axis=0)
            var_g = float(wts @ (ga - wts @ ga) ** 2)
            h = cov - (cov @ u) * u
            if (
                dur >= p.yaw_min_gps_s
                and np.isfinite(u).all()
                and var_g >= p.yaw_min_gps_accel_std_mps2**2
                and np.linalg.norm(h) >= p.yaw_min_slope * var_g
            ):
                fwd = h / np.linalg.norm(h)
        left = np.cross(u, fwd)
        for w in ws:
            i0, i1 = wins[w]
            wspeed[i0:i1] = speed[w]
            up[i0:i1] = u
            if flags[w] & 4:
                handled[i0:i1] = True
                continue
            long_[i0:i1] = acc[i0:i1] @ fwd
            lat[i0:i1] = acc[i0:i1] @ left
            vert[i0:i1] = acc[i0:i1] @ u - gmag

    events, peaks = _naive_events(t, long_, lat, handled, hands_free, wspeed, p)
    # Yaw rate: the gyro about the mounting's up, else lateral over the GPS speed; only
    # where the sample has a vehicle frame.
    if gyro is not None:
        yaw = np.einsum("ij,ij->i", gyro, up)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            yaw = np.where(wspeed >= p.turn_min_speed_mps, lat / wspeed, np.nan)
    yaw = np.where(np.isfinite(lat), yaw, np.nan)
    kept = [q for q, e in enumerate(events)
            if e[0] != EVENT_CORNERING
            or _naive_turn_deg(t, yaw, e[4], p) > p.corner_min_heading_change_deg]
    events = [events[q] for q in kept]
    peaks = [peaks[q] for q in kept]
    return NaiveTrip(long_, lat, vert, handled, cur + 1 if n else 0, wspeed, events, peaks)


def _naive_turn_deg(t: np.ndarray, yaw: np.ndarray, k: int, p: ImuParams) -> float:
    """Heading change through sample k: yaw rate times the time to the next sample,
    summed over the samples around k with k's sign and at least the minimum turn rate,
    stopping at a gap."""
    floor = np.radians(p.turn_min_yaw_rate_dps)
    if not abs(yaw[k]) >= floor:
        return 0.0
    sign = np.sign(yaw[k])
    steps = np.diff(t)
    linked = steps <= p.gap_s  # sample i is joined to sample i + 1

    def turning(i: int) -> bool:
        return bool(yaw[i] * sign >= floor)

    stretch = [k]
    i = k - 1
    while i >= 0 and linked[i] and turning(i):
        stretch.append(i)
        i -= 1
    i = k + 1
    while i < t.size and linked[i - 1] and turning(i):
        stretch.append(i)
        i += 1
    # Each sample holds until the next one, if joined to it.
    total = sum(yaw[i] * steps[i] for i in stretch if i < steps.size and linked[i])
    return float(np.degrees(abs(total)))


def _naive_events(t, long_, lat, handled, hands_free, wspeed, p):
    n = t.size
    h = 0.5 * p.smooth_s
    block = np.concatenate(([0], np.cumsum(np.diff(t) > p.gap_s))) if n else np.zeros(0, int)
    y_long = np.full(n, np.nan)
    y_lat = np.full(n, np.nan)
    for i in range(n):
        if not np.isfinite(long_[i]):
            continue
        near = (block == block[i]) & (t >= t[i] - h) & (t <= t[i] + h) & np.isfinite(long_)
        y_long[i] = long_[near].mean()
        if wspeed[i] > p.corner_min_speed_mps:
            y_lat[i] = abs(lat[near].mean())
    free = np.zeros(n, bool) if hands_free is None else hands_free
    y_hand = np.where(handled & ~free, wspeed, np.nan)
    cover = np.zeros(n)
    if n > 1:
        dt = np.diff(t)
        cover[:-1] = np.where(dt <= p.gap_s, dt, 0.0)
    channels = [
        (
            y_long,
            EVENT_ACCELERATION,
            p.accel_moderate_mps2,
            p.accel_harsh_mps2,
            p.accel_band_high_mps2,
            p.accel_band_severe_mps2,
            p.harsh_min_duration_s,
            p.harsh_merge_s,
            1.0,
            True,
        ),
        (
            -y_long,
            EVENT_BRAKING,
            p.brake_moderate_mps2,
            p.brake_harsh_mps2,
            p.brake_band_high_mps2,
            p.brake_band_severe_mps2,
            p.harsh_min_duration_s,
            p.harsh_merge_s,
            -1.0,
            True,
        ),
        (
            y_lat,
            EVENT_CORNERING,
            p.corner_moderate_mps2,
            p.corner_lateral_mps2,
            p.corner_band_high_mps2,
            p.corner_band_severe_mps2,
            p.corner_min_duration_s,
            p.harsh_merge_s,
            1.0,
            True,
        ),
        (
            y_hand,
            EVENT_PHONE_HANDLING,
            p.handling_min_speed_mps,
            p.handling_min_speed_mps,
            np.inf,
            np.inf,
            p.handling_min_duration_s,
            p.handling_merge_s,
            np.nan,
            False,
        ),
    ]
    events = []
    peaks = []
    for y, kind, mod, harsh, high, severe, min_s, merge_s, sign, emit_mod in channels:
        above = y >= mod
        for b in np.unique(block):
            idx = np.flatnonzero(block == b)
            runs = []
            k = 0
            while k < idx.size:
                if not above[idx[k]]:
                    k += 1
                    continue
                e = k
                while e + 1 < idx.size and above[idx[e + 1]]:
                    e += 1
                r = idx[k : e + 1]
                dur = cover[r].sum()
                if dur >= min_s:
                    runs.append(
                        (
                            r[0],
                            r[-1],
                            cover[r][y[r] >= harsh].sum() >= min_s,
                            r[int(np.argmax(y[r]))],
                        )
                    )
                k = e + 1
            merged = []
            for r in runs:
                if merged and t[r[0]] - (t[merged[-1][1]] + cover[merged[-1][1]]) <= merge_s:
                    s0, _, hz, pk = merged[-1]
                    pk = r[3] if y[r[3]] > y[pk] else pk
                    merged[-1] = (s0, r[1], hz or r[2], pk)
                else:
                    merged.append(r)
            for s0, e0, hz, pk in merged:
                if not hz and not emit_mod:
                    continue
                sev = 0
                if hz:
                    sev = 3 if y[pk] >= severe else 2 if y[pk] >= high else 1
                events.append((kind, sev, int(s0), int(e0), int(pk)))
                peaks.append(sign * y[pk])
    order = sorted(range(len(events)), key=lambda q: (events[q][0], events[q][2]))
    return [events[q] for q in order], [peaks[q] for q in order]
