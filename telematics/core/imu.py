"""Phone IMU to vehicle frame (gravity, yaw, phone handling) and IMU driving events.

Per trip the phone's accelerometer (and gyroscope when present) is split into short
windows. Quiet windows (low variance, magnitude close to g, little rotation) give the
gravity direction, hence roll and pitch. The yaw is the closed-form least-squares angle
that aligns horizontal acceleration with the GPS-derived longitudinal acceleration: the
forward axis is the horizontal part of cov(acc, a_gps), so its sign comes from the
correlation and no angle (nor any trigonometry) is ever computed. Phone handling is a
stretch where the gravity direction moves by more than a threshold (confirmed by a few
quiet windows in the new pose) or where the phone tilts fast or shakes (while tilting,
when a gyroscope can tell: the car shakes the phone's horizontal axes in a hard turn, it
does not tilt it); the rotation is re-estimated for every stable mounting after it.

Events (moderate and harsh braking, acceleration and cornering, phone handling while
moving) come from threshold runs of the vehicle-frame acceleration smoothed over half a
second; a cornering event also needs a turn of more than 30 deg through its peak (the
gyroscope's yaw rate, else lateral acceleration over GPS speed, integrated). Work: two
passes over the samples (window sums; rotation), passes over the 25x fewer windows, and
the event detector only on windows where some sample reaches a moderate threshold (and
their neighbours), the few percent of a normal drive.

Vehicle frame (ISO 8855): x forward, y left, z up; vertical acceleration excludes gravity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from telematics.core.events import SEVERITIES
from telematics.core.jit import serial
from telematics.core.params import DEFAULT_PARAMS as _GPS
from telematics.core.params import KMH

EVENT_BRAKING = 0
EVENT_ACCELERATION = 1
EVENT_CORNERING = 2
EVENT_PHONE_HANDLING = 3
EVENT_KIND_NAMES = ("braking", "acceleration", "cornering", "phone_handling")

# Severity codes as in telematics.core.events.SEVERITIES: moderate (below the harsh
# threshold), then the harsh bands medium, high and severe.
SEVERITY_MODERATE = SEVERITIES.index("moderate")
SEVERITY_MEDIUM = SEVERITIES.index("medium")
SEVERITY_HIGH = SEVERITIES.index("high")
SEVERITY_SEVERE = SEVERITIES.index("severe")

STANDARD_GRAVITY_MPS2 = 9.80665

# Window record columns (float64 scratch, one row per window).
_W_N = 0  # valid accelerometer samples
_W_MX = 1  # mean of d = acc - (trip's first valid sample), x y z
_W_MY = 2
_W_MZ = 3
_W_VAR = 4  # total variance (trace of the covariance) of acc in the window
_W_GYR = 5  # mean square gyro rate perpendicular to gravity, NaN without gyro
_W_T0 = 6  # time of the first sample
_W_T1 = 7  # time of the last sample
_W_DUR = 8  # seconds until the next window, or the window's span before a gap
_W_GPS_ACC = 9  # GPS longitudinal acceleration at the window's mid-time (NaN unknown)
_W_GPS_SPEED = 10  # GPS speed at the window's mid-time (NaN unknown)
_W_UX = 11  # the window's mounting's up direction in the phone frame (NaN unresolved)
_W_UY = 12
_W_UZ = 13
_W_COLS = 14

# Input errors found by the first pass (negative window counts).
_BAD_TIME = -1
_BAD_ACC = -2
_BAD_GYRO = -3
_BAD_FIELDS = {
    _BAD_TIME: "imu_t_s: must be finite and non-decreasing within each trip",
    _BAD_ACC: "acc_x_mps2/acc_y_mps2/acc_z_mps2: must be finite or NaN (a dropout), found inf",
    _BAD_GYRO: "gyr_x_radps/gyr_y_radps/gyr_z_radps: must be finite or NaN, found inf",
}

# Window flag bits.
_F_QUIET = 1
_F_GRAVITY = 2  # quiet and consistent with its mounting: used for that mounting's gravity
_F_HANDLING = 4
_F_POSE = 16  # handling because the phone left its mounting's pose
_F_HOT = 8  # some |long| or |lat| reaches an event threshold, or handled: events look here

# Per-trip summary columns.
_T_MOUNTINGS = 0
_T_ORIENTED = 1  # samples with a resolved vehicle frame
_T_COLS = 2


@dataclass(frozen=True)
class ImuParams:
    """Thresholds of IMU orientation, handling detection and IMU events.

    Event thresholds default to the GPS core's (DESIGN section 6) so that one manoeuvre
    gives the same event from either sensor. Values without a published source are
    project choices, documented in ``docs/FEATURES.md``.
    """

    window_s: float = 1.0
    gap_s: float = 0.5
    gps_gap_s: float = _GPS.gap_s
    gravity_mps2: float = STANDARD_GRAVITY_MPS2
    # Quiet window: the phone at rest in its mount and the car not accelerating much
    # (GPS longitudinal acceleration, where known, small).
    quiet_std_mps2: float = 0.5
    quiet_gravity_tol_mps2: float = 0.5
    quiet_gyro_radps: float = 0.25
    quiet_gps_accel_mps2: float = 0.5
    # Handling: fast tilting, shaking (with a gyro: shaking while tilting faster than a
    # quiet phone), or a lasting change of the gravity direction.
    handling_std_mps2: float = 2.0
    handling_gyro_radps: float = 0.6
    reorient_angle_deg: float = 20.0
    reorient_confirm_s: float = 3.0
    # A pose kept for less than this between two re-orientations was in the hand (the
    # phone was picked up and put down, back in its mount or elsewhere), not a mounting.
    # 0 disables.
    hold_max_s: float = 60.0
    # Off the pose: after a moving window (shaking or fast tilting) and until the phone
    # is quiet in its mounting's pose again, a window whose mean acceleration along the
    # mounting's gravity falls below g cos(angle) is handling. Vehicle acceleration is
    # horizontal and leaves that component at g; a phone tilted away from its mount
    # lowers it (and would leak gravity into the horizontal axes: g sin 15 deg =
    # 2.5 m/s^2). Only after a move: road bumps and vertical vibration lower the
    # component too (the real logger drives, 1 Hz, do so on 40 % of their windows), but
    # a phone leaves its mount only by moving. 0 disables.
    off_pose_angle_deg: float = 15.0
    # Yaw from GPS: enough coverage, excitation and a plausible regression slope of
    # acceleration along the found axis on GPS acceleration (1 ideally), else unresolved.
    yaw_min_gps_s: float = 20.0
    yaw_min_gps_accel_std_mps2: float = 0.2
    yaw_min_slope: float = 0.3
    # Events.
    smooth_s: float = 0.5
    brake_harsh_mps2: float = _GPS.brake_harsh_mps2
    brake_moderate_mps2: float = _GPS.brake_moderate_mps2
    brake_band_high_mps2: float = _GPS.brake_band_high_mps2
    brake_band_severe_mps2: float = _GPS.brake_band_severe_mps2
    accel_harsh_mps2: float = _GPS.accel_harsh_mps2
    accel_moderate_mps2: float = _GPS.accel_moderate_mps2
    accel_band_high_mps2: float = _GPS.accel_band_high_mps2
    accel_band_severe_mps2: float = _GPS.accel_band_severe_mps2
    corner_lateral_mps2: float = _GPS.corner_lateral_mps2
    corner_moderate_mps2: float = 2.5
    corner_band_high_mps2: float = _GPS.corner_band_high_mps2
    corner_band_severe_mps2: float = _GPS.corner_band_severe_mps2
    corner_min_speed_mps: float = _GPS.corner_min_speed_mps
    # A cornering event is a turn: the heading changes by more than this over the stretch
    # around its peak where the yaw rate keeps its sign (DESIGN section 6, Zendrive). The
    # yaw rate is the gyroscope's rate about the vertical, or without a gyroscope the
    # lateral acceleration over the GPS speed.
    corner_min_heading_change_deg: float = _GPS.corner_min_heading_change_deg
    # The turn's stretch ends where the yaw rate drops below this (project choice: a
    # harsh corner turns at 0.1 rad/s or more, and a gyro's uncorrected bias of about
    # 0.01 rad/s must not add up along a straight road), and the lateral acceleration
    # gives no yaw rate below this speed.
    turn_min_yaw_rate_dps: float = 2.0
    turn_min_speed_mps: float = _GPS.moving_speed_mps
    harsh_min_duration_s: float = _GPS.harsh_min_duration_s
    # DESIGN gives cornering no duration (a turn of > 30 deg is itself the persistence):
    # a quick turn out of a junction holds 3.6 m/s^2 for less than the 0.6 s of braking.
    corner_min_duration_s: float = 0.3
    harsh_merge_s: float = _GPS.harsh_merge_s
    handling_min_duration_s: float = 3.0
    handling_min_speed_mps: float = 18.0 * KMH
    handling_merge_s: float = 3.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{f.name}: must be a finite non-negative number, got {value!r}")
        for name in ("window_s", "gap_s", "gravity_mps2"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name}: must be positive")
        for name in ("reorient_angle_deg", "off_pose_angle_deg"):
            if getattr(self, name) >= 180.0:
                raise ValueError(f"{name}: must be below 180")
        for moderate, harsh in (
            ("brake_moderate_mps2", "brake_harsh_mps2"),
            ("accel_moderate_mps2", "accel_harsh_mps2"),
            ("corner_moderate_mps2", "corner_lateral_mps2"),
        ):
            if getattr(self, moderate) > getattr(self, harsh):
                raise ValueError(f"{moderate}: must not exceed {harsh}")

    def kernel(self) -> ImuKernelParams:
        """The thresholds the kernels read, as a float tuple (angles as cosines, squares
        of standard deviations); event channels are built by ``_channels``."""
        return ImuKernelParams(
            window_s=self.window_s,
            gap_s=self.gap_s,
            gps_gap_s=self.gps_gap_s,
            gravity_mps2=self.gravity_mps2,
            quiet_var_mps2sq=self.quiet_std_mps2**2,
            quiet_gravity_tol_mps2=self.quiet_gravity_tol_mps2,
            quiet_gyro_sq=self.quiet_gyro_radps**2,
            quiet_gps_accel_mps2=self.quiet_gps_accel_mps2,
            handling_var_mps2sq=self.handling_std_mps2**2,
            handling_gyro_sq=self.handling_gyro_radps**2,
            reorient_cos=math.cos(math.radians(self.reorient_angle_deg)),
            reorient_confirm_s=self.reorient_confirm_s,
            hold_max_s=self.hold_max_s,
            off_pose_cos=math.cos(math.radians(self.off_pose_angle_deg)),
            yaw_min_gps_s=self.yaw_min_gps_s,
            yaw_min_gps_var=self.yaw_min_gps_accel_std_mps2**2,
            yaw_min_slope=self.yaw_min_slope,
            smooth_half_s=0.5 * self.smooth_s,
            brake_moderate_mps2=self.brake_moderate_mps2,
            accel_moderate_mps2=self.accel_moderate_mps2,
            corner_moderate_mps2=self.corner_moderate_mps2,
            corner_min_speed_mps=self.corner_min_speed_mps,
            corner_min_turn_rad=math.radians(self.corner_min_heading_change_deg),
            turn_min_yaw_radps=math.radians(self.turn_min_yaw_rate_dps),
            turn_min_speed_mps=self.turn_min_speed_mps,
        )


class ImuKernelParams(NamedTuple):
    """Flat float view of :class:`ImuParams` handed to numba kernels."""

    window_s: float
    gap_s: float
    gps_gap_s: float
    gravity_mps2: float
    quiet_var_mps2sq: float
    quiet_gravity_tol_mps2: float
    quiet_gyro_sq: float
    quiet_gps_accel_mps2: float
    handling_var_mps2sq: float
    handling_gyro_sq: float
    reorient_cos: float
    reorient_confirm_s: float
    hold_max_s: float
    off_pose_cos: float
    yaw_min_gps_s: float
    yaw_min_gps_var: float
    yaw_min_slope: float
    smooth_half_s: float
    brake_moderate_mps2: float
    accel_moderate_mps2: float
    corner_moderate_mps2: float
    corner_min_speed_mps: float
    corner_min_turn_rad: float
    turn_min_yaw_radps: float
    turn_min_speed_mps: float


DEFAULT_IMU_PARAMS = ImuParams()


# ---------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------


@serial
def _finite(x):
    """x is neither NaN nor +-inf. Not math.isfinite: under the reassoc + nsz fast-math
    flags numba's math.isfinite(a - b) is folded to True even for NaN."""
    return not math.isnan(x) and abs(x) != math.inf


@serial
def _is_window(t_s, i0, i1, gap_s, window_s):
    """Whether the window cut from sample i0 ends at i1: every step in t_s[i0:i1] is
    within [0, gap_s], its last sample within window_s of the first (then all are: times
    do not decrease), and sample i1, if any, does not continue it. Counts the good steps
    rather than stopping at a bad one, so that the check vectorises."""
    seg = t_s[i0:i1]
    good = 0
    for q in range(1, i1 - i0):
        step = seg[q] - seg[q - 1]
        good += (step >= 0.0) & (step <= gap_s)
    if good != i1 - i0 - 1 or not seg[i1 - i0 - 1] - seg[0] < window_s:
        return False
    if i1 == t_s.shape[0]:
        return True
    return not (0.0 <= t_s[i1] - t_s[i1 - 1] <= gap_s and t_s[i1] - seg[0] < window_s)


@serial
def _window_stats(t_s, ax, ay, az, gx, gy, gz, cx, cy, cz, p, win, win_start):
    """Pass 1 over samples: cut windows (never across a gap), per-window mean, variance
    and tilt rate. Sums are of d = acc - (cx, cy, cz) so that variances do not cancel;
    the inner loops have no branches and NaN samples only cost a second, checked loop.
    Returns the number of windows, or _BAD_TIME (a time not finite or before its
    predecessor), _BAD_ACC or _BAD_GYRO (+-inf): validation rides on this pass."""
    n = t_s.shape[0]
    has_gyro = gx.shape[0] == n
    norm = math.sqrt(cx * cx + cy * cy + cz * cz)
    # Gravity direction splitting the gyro rate into spin (about gravity: turning, which
    # is driving) and tilt (phone handling): the last quiet window's mean acceleration. Not
    # any window's: a hard launch into a turn tilts the mean acceleration by 40 deg and
    # would leak the turn's yaw rate into tilt.
    ux = cx / norm if norm > 0.0 else 0.0
    uy = cy / norm if norm > 0.0 else 0.0
    uz = cz / norm if norm > 0.0 else 0.0
    gap_s = p.gap_s
    window_s = p.window_s
    if n > 0 and not (_finite(t_s[0]) and _finite(t_s[n - 1])):
        return _BAD_TIME
    nw = 0
    i = 0
    span = 0  # samples in the previous window: at a steady rate the next one has as many
    while i < n:
        i0 = i
        t0 = t_s[i]
        i = i0 + span
        if not (span > 0 and i <= n and _is_window(t_s, i0, i, gap_s, window_s)):
            i = i0 + 1
            while i < n and 0.0 <= t_s[i] - t_s[i - 1] <= gap_s and t_s[i] - t0 < window_s:
                i += 1
            span = i - i0
        if i < n and not t_s[i] >= t_s[i - 1]:
            return _BAD_TIME
        # Loops over the window's slices index from 0: numba's negative-index
        # wrap-around on an index it cannot prove non-negative turns vector loads into
        # gathers.
        seg_x = ax[i0:i]
        seg_y = ay[i0:i]
        seg_z = az[i0:i]
        sx = 0.0
        sy = 0.0
        sz = 0.0
        sdd = 0.0
        dropouts = 0
        for q in range(i - i0):
            dx = seg_x[q] - cx
            dy = seg_y[q] - cy
            dz = seg_z[q] - cz
            sx += dx
            sy += dy
            sz += dz
            sdd += dx * dx + dy * dy + dz * dz
            dropouts += math.isnan(dx + dy + dz)
        cnt = float(i - i0)
        if dropouts == 0 and abs(sdd) == math.inf:
            return _BAD_ACC
        if dropouts > 0:
            cnt = 0.0
            sx = 0.0
            sy = 0.0
            sz = 0.0
            sdd = 0.0
            for q in range(i - i0):
                dx = seg_x[q] - cx
                dy = seg_y[q] - cy
                dz = seg_z[q] - cz
                if abs(dx) == math.inf or abs(dy) == math.inf or abs(dz) == math.inf:
                    return _BAD_ACC
                if _finite(dx) and _finite(dy) and _finite(dz):
                    cnt += 1.0
                    sx += dx
                    sy += dy
                    sz += dz
                    sdd += dx * dx + dy * dy + dz * dz
        gyr = math.nan
        if has_gyro:
            seg_gx = gx[i0:i]
            seg_gy = gy[i0:i]
            seg_gz = gz[i0:i]
            sw = 0.0
            for q in range(i - i0):
                wx = seg_gx[q]
                wy = seg_gy[q]
                wz = seg_gz[q]
                wu = wx * ux + wy * uy + wz * uz
                sw += wx * wx + wy * wy + wz * wz - wu * wu
            cw = float(i - i0)
            if not _finite(sw):
                sw = 0.0
                cw = 0.0
                for q in range(i - i0):
                    wx = seg_gx[q]
                    wy = seg_gy[q]
                    wz = seg_gz[q]
                    if abs(wx) == math.inf or abs(wy) == math.inf or abs(wz) == math.inf:
                        return _BAD_GYRO
                    wu = wx * ux + wy * uy + wz * uz
                    e = wx * wx + wy * wy + wz * wz - wu * wu
                    if _finite(e):
                        sw += e
                        cw += 1.0
            if cw > 0.0:
                gyr = sw / cw
        win_start[nw] = i0
        win[nw, _W_N] = cnt
        win[nw, _W_GYR] = gyr
        win[nw, _W_T0] = t0
        win[nw, _W_T1] = t_s[i - 1]
        if i < n and t_s[i] - t_s[i - 1] <= gap_s:
            win[nw, _W_DUR] = t_s[i] - t0
        else:
            win[nw, _W_DUR] = t_s[i - 1] - t0
        if cnt > 0.0:
            mx = sx / cnt
            my = sy / cnt
            mz = sz / cnt
            win[nw, _W_MX] = mx
            win[nw, _W_MY] = my
            win[nw, _W_MZ] = mz
            var = max(sdd / cnt - (mx * mx + my * my + mz * mz), 0.0)
            win[nw, _W_VAR] = var
            gxm = cx + mx
            gym = cy + my
            gzm = cz + mz
            norm = math.sqrt(gxm * gxm + gym * gym + gzm * gzm)
            if var <= p.quiet_var_mps2sq and abs(norm - p.gravity_mps2) <= p.quiet_gravity_tol_mps2:
                ux = gxm / norm
                uy = gym / norm
                uz = gzm / norm
        else:
            win[nw, _W_MX] = math.nan
            win[nw, _W_MY] = math.nan
            win[nw, _W_MZ] = math.nan
            win[nw, _W_VAR] = math.nan
        nw += 1
    win_start[nw] = n
    return nw


@serial
def _window_gps(win, nw, gps_t_s, gps_speed_mps, gps_gap_s):
    """GPS speed and longitudinal acceleration at each window's mid-time.

    The acceleration is the speed difference of consecutive fixes placed at their
    mid-time, interpolated linearly; nothing is interpolated across a GPS gap."""
    m = gps_t_s.shape[0]
    j = 0  # gps_t_s[j] <= tm < gps_t_s[j + 1]
    k = 0  # mid(k) <= tm < mid(k + 1), mid(k) between fixes k and k + 1
    for w in range(nw):
        tm = 0.5 * (win[w, _W_T0] + win[w, _W_T1])
        while j + 1 < m and gps_t_s[j + 1] <= tm:
            j += 1
        v = math.nan
        if m > 0 and gps_t_s[j] <= tm:
            if j + 1 < m:
                dt = gps_t_s[j + 1] - gps_t_s[j]
                if dt <= gps_gap_s:
                    frac = (tm - gps_t_s[j]) / dt
                    v = gps_speed_mps[j] + (gps_speed_mps[j + 1] - gps_speed_mps[j]) * frac
            elif tm == gps_t_s[j]:
                v = gps_speed_mps[j]
        win[w, _W_GPS_SPEED] = v
        while k + 2 < m and 0.5 * (gps_t_s[k + 1] + gps_t_s[k + 2]) <= tm:
            k += 1
        g = math.nan
        if k + 2 < m:
            dta = gps_t_s[k + 1] - gps_t_s[k]
            dtb = gps_t_s[k + 2] - gps_t_s[k + 1]
            ta = gps_t_s[k] + 0.5 * dta
            tb = ta + 0.5 * (dta + dtb)
            if ta <= tm <= tb and 0.0 < dta <= gps_gap_s and 0.0 < dtb <= gps_gap_s:
                a0 = (gps_speed_mps[k + 1] - gps_speed_mps[k]) / dta
                a1 = (gps_speed_mps[k + 2] - gps_speed_mps[k + 1]) / dtb
                g = a0 + (a1 - a0) * ((tm - ta) / (tb - ta))
        win[w, _W_GPS_ACC] = g


@serial
def _mountings(win, nw, cx, cy, cz, p, win_flag, win_seg):
    """Pass over windows: quiet and handling flags, split into stable mountings.

    A quiet window whose direction differs from its mounting's gravity by more than the
    re-orientation angle opens a candidate pose; once quiet windows spanning the confirm
    time agree with it, a new mounting starts there and the windows between the last
    window of the old pose and the candidate are phone handling. After a moving window
    (shaking or fast tilting) and until the phone is quiet in its mounting's pose again
    or a new mounting is confirmed, a window tilted off that pose is handling too: the
    phone is in the hand. Returns #mountings.
    """
    g0 = p.gravity_mps2
    seg = 0
    rx = 0.0  # sum of the current mounting's quiet mean accelerations
    ry = 0.0
    rz = 0.0
    cand_start = -1
    cand_x = 0.0
    cand_y = 0.0
    cand_z = 0.0
    last_ref = -1
    cand_flag_from = 0
    moved = False  # a moving window since the phone was last quiet in a mounting's pose
    for w in range(nw):
        flag = 0
        var = win[w, _W_VAR]
        gyr = win[w, _W_GYR]
        has_gyr = _finite(gyr)
        if win[w, _W_N] > 0.0:
            mx = cx + win[w, _W_MX]
            my = cy + win[w, _W_MY]
            mz = cz + win[w, _W_MZ]
            rn = math.sqrt(rx * rx + ry * ry + rz * rz)
            off_pose = (moved and p.off_pose_cos < 1.0 and rn > 0.0
                        and mx * rx + my * ry + mz * rz < p.off_pose_cos * g0 * rn)
            # Shaking is handling only if the phone also tilts when there is a gyro to
            # tell: a hard launch into a turn swings the horizontal acceleration by
            # 8 m/s^2 within a window, but the car does not tilt the phone.
            shaken = var > p.handling_var_mps2sq and (not has_gyr or gyr > p.quiet_gyro_sq)
            if shaken or (has_gyr and gyr > p.handling_gyro_sq):
                flag = _F_HANDLING
                moved = True
            else:
                mag = math.sqrt(mx * mx + my * my + mz * mz)
                gps_acc = win[w, _W_GPS_ACC]
                if (
                    var <= p.quiet_var_mps2sq
                    and abs(mag - g0) <= p.quiet_gravity_tol_mps2
                    and (not has_gyr or gyr <= p.quiet_gyro_sq)
                    and not abs(gps_acc) > p.quiet_gps_accel_mps2
                ):
                    flag = _F_QUIET
                    if rn == 0.0 or (mx * rx + my * ry + mz * rz) >= p.reorient_cos * mag * rn:
                        flag |= _F_GRAVITY
                        rx += mx
                        ry += my
                        rz += mz
                        last_ref = w
                        cand_start = -1
                        moved = False
                    else:
                        if off_pose:
                            flag |= _F_HANDLING | _F_POSE
                        cn = math.sqrt(cand_x * cand_x + cand_y * cand_y + cand_z * cand_z)
                        if cand_start < 0 or (
                            mx * cand_x + my * cand_y + mz * cand_z < p.reorient_cos * mag * cn
                        ):
                            cand_start = w
                            cand_x = 0.0
                            cand_y = 0.0
                            cand_z = 0.0
                            cand_flag_from = last_ref + 1
                        cand_x += mx
                        cand_y += my
                        cand_z += mz
                        if win[w, _W_T1] - win[cand_start, _W_T0] >= p.reorient_confirm_s:
                            for v in range(cand_flag_from, cand_start):
                                win_flag[v] |= _F_HANDLING
                            seg += 1
                            # The candidate's windows were off the old pose; in the new
                            # mounting they are at rest.
                            for v in range(cand_start, w):
                                win_seg[v] = seg
                                if win_flag[v] & _F_POSE:
                                    win_flag[v] &= ~(_F_HANDLING | _F_POSE)
                                if win_flag[v] & _F_QUIET:
                                    win_flag[v] |= _F_GRAVITY
                            flag = _F_QUIET | _F_GRAVITY
                            rx = cand_x
                            ry = cand_y
                            rz = cand_z
                            last_ref = w
                            cand_start = -1
                            moved = False
                elif off_pose:
                    flag = _F_HANDLING | _F_POSE
        win_flag[w] = flag
        win_seg[w] = seg
    # A pose between two re-orientations that lasted less than hold_max_s was held.
    first = 0
    while first < nw:
        last = first
        while last + 1 < nw and win_seg[last + 1] == win_seg[first]:
            last += 1
        s = win_seg[first]
        if 0 < s < seg and win[last, _W_T1] - win[first, _W_T0] < p.hold_max_s:
            for v in range(first, last + 1):
                win_flag[v] |= _F_HANDLING | _F_POSE
        first = last + 1
    # A pick-up or put-down rarely aligns with the windows: the windows on either side of
    # a pose change hold part of the rotation (gravity leaking into the vehicle axes) too.
    prev = 0
    for w in range(nw):
        here = win_flag[w] & _F_POSE
        if here == 0 and (prev != 0 or (w + 1 < nw and win_flag[w + 1] & _F_POSE)):
            win_flag[w] |= _F_HANDLING
        prev = here
    return seg + 1


@serial
def _rotate(
    ax,
    ay,
    az,
    win,
    win_start,
    nw,
    cx,
    cy,
    cz,
    p,
    win_flag,
    win_seg,
    long_out,
    lat_out,
    vert_out,
    handling_out,
):
    """Pass 2 over samples: per mounting, gravity and yaw from the window records, then
    every sample into the vehicle frame, flagging windows where an event can start.
    Returns the samples with a resolved frame.

    Yaw: with m_w the windows' mean acceleration and g_w their GPS acceleration, the
    forward axis is the horizontal part of cov_w(m, g) (weighted by samples); accepted
    when the GPS acceleration varies and the regression slope of acceleration along that
    axis on the GPS acceleration is plausible (1 ideally)."""
    oriented = 0
    w = 0
    while w < nw:
        seg = win_seg[w]
        w_end = w
        while w_end < nw and win_seg[w_end] == seg:
            w_end += 1
        # Gravity: quiet windows of this mounting, else every steady one.
        gsx = 0.0
        gsy = 0.0
        gsz = 0.0
        gn = 0.0
        for v in range(w, w_end):
            if win_flag[v] & _F_GRAVITY:
                gsx += win[v, _W_MX]
                gsy += win[v, _W_MY]
                gsz += win[v, _W_MZ]
                gn += 1.0
        if gn == 0.0:
            for v in range(w, w_end):
                c = win[v, _W_N]
                if c > 0.0 and not win_flag[v] & _F_HANDLING:
                    gsx += win[v, _W_MX] * c
                    gsy += win[v, _W_MY] * c
                    gsz += win[v, _W_MZ] * c
                    gn += c
        ux = math.nan
        uy = math.nan
        uz = math.nan
        gmag = math.nan
        if gn > 0.0:
            mx = cx + gsx / gn
            my = cy + gsy / gn
            mz = cz + gsz / gn
            gmag = math.sqrt(mx * mx + my * my + mz * mz)
            if gmag > 0.0:
                ux = mx / gmag
                uy = my / gmag
                uz = mz / gmag
        # Yaw from the windows' covariance with the GPS acceleration.
        sn = 0.0
        gps_s = 0.0
        sg = 0.0
        sgg = 0.0
        smx = 0.0
        smy = 0.0
        smz = 0.0
        smgx = 0.0
        smgy = 0.0
        smgz = 0.0
        for v in range(w, w_end):
            g = win[v, _W_GPS_ACC]
            c = win[v, _W_N]
            if win_flag[v] & _F_HANDLING or c == 0.0 or not _finite(g):
                continue
            sn += c
            gps_s += win[v, _W_DUR]
            sg += c * g
            sgg += c * g * g
            smx += c * win[v, _W_MX]
            smy += c * win[v, _W_MY]
            smz += c * win[v, _W_MZ]
            smgx += c * win[v, _W_MX] * g
            smgy += c * win[v, _W_MY] * g
            smgz += c * win[v, _W_MZ] * g
        fx = math.nan
        fy = math.nan
        fz = math.nan
        if sn > 0.0 and gps_s >= p.yaw_min_gps_s and _finite(ux):
            mg = sg / sn
            var_g = sgg / sn - mg * mg
            kx = smgx / sn - smx / sn * mg
            ky = smgy / sn - smy / sn * mg
            kz = smgz / sn - smz / sn * mg
            ku = kx * ux + ky * uy + kz * uz
            hx = kx - ku * ux
            hy = ky - ku * uy
            hz = kz - ku * uz
            hn = math.sqrt(hx * hx + hy * hy + hz * hz)
            if hn > 0.0 and var_g >= p.yaw_min_gps_var and hn >= p.yaw_min_slope * var_g:
                fx = hx / hn
                fy = hy / hn
                fz = hz / hn
        # Left = up x forward.
        lx = uy * fz - uz * fy
        ly = uz * fx - ux * fz
        lz = ux * fy - uy * fx
        hot_long = min(p.accel_moderate_mps2, p.brake_moderate_mps2)
        hot_lat = p.corner_moderate_mps2
        # A zero threshold makes every window hot, even one of NaN samples only.
        all_hot = hot_long <= 0.0 or hot_lat <= 0.0
        for v in range(w, w_end):
            i0 = win_start[v]
            i1 = win_start[v + 1]
            win[v, _W_UX] = ux
            win[v, _W_UY] = uy
            win[v, _W_UZ] = uz
            # Slices indexed from 0 (see _window_stats): the loops vectorise.
            seg_long = long_out[i0:i1]
            seg_lat = lat_out[i0:i1]
            seg_vert = vert_out[i0:i1]
            seg_hand = handling_out[i0:i1]
            if win_flag[v] & _F_HANDLING:
                for q in range(i1 - i0):
                    seg_long[q] = math.nan
                    seg_lat[q] = math.nan
                    seg_vert[q] = math.nan
                    seg_hand[q] = 1
                win_flag[v] |= _F_HOT
                continue
            seg_x = ax[i0:i1]
            seg_y = ay[i0:i1]
            seg_z = az[i0:i1]
            # Samples reaching a threshold, counted: NaN compares false, and a count
            # vectorises where a running maximum would not.
            hot = 0
            for q in range(i1 - i0):
                x = seg_x[q]
                y = seg_y[q]
                z = seg_z[q]
                lo = x * fx + y * fy + z * fz
                la = x * lx + y * ly + z * lz
                seg_long[q] = lo
                seg_lat[q] = la
                seg_vert[q] = x * ux + y * uy + z * uz - gmag
                seg_hand[q] = 0
                hot += (abs(lo) >= hot_long) | (abs(la) >= hot_lat)
            if all_hot or hot > 0:
                win_flag[v] |= _F_HOT
            if _finite(fx):
                oriented += i1 - i0
        w = w_end
    return oriented


# Channel state columns (one row of float64 scratch per threshold-event detector).
_S_RUN = 0
_S_RUN_START = 1
_S_RUN_LAST = 2
_S_RUN_DUR = 3
_S_RUN_HARSH_DUR = 4
_S_RUN_PEAK = 5
_S_RUN_PEAK_I = 6
_S_RUN_END_T = 7
_S_PEND = 8
_S_PEND_START = 9
_S_PEND_LAST = 10
_S_PEND_END_T = 11
_S_PEND_PEAK = 12
_S_PEND_PEAK_I = 13
_S_PEND_HARSH = 14
_S_COLS = 15

# Channel constants (one row per detector): moderate and harsh thresholds, severity
# bands, minimum duration, merge time, sign of the reported peak, event kind, and
# whether moderate events are reported.
_C_MOD = 0
_C_HARSH = 1
_C_HIGH = 2
_C_SEVERE = 3
_C_MIN_S = 4
_C_MERGE_S = 5
_C_SIGN = 6
_C_KIND = 7
_C_EMIT_MODERATE = 8
_C_COLS = 9

# Channels, in the order the event pass feeds them.
_CH_ACCEL = 0
_CH_BRAKE = 1
_CH_CORNER = 2
_CH_HANDLING = 3
_N_CH = 4

# Event record columns (int64 output, one row per event slot).
_E_KIND = 0
_E_START = 1
_E_END = 2
_E_PEAK = 3
_E_SEVERITY = 4
_E_COLS = 5


@serial
def _flush(st, c, ch, base, ev_int, ev_peak, pos):
    """Write channel c's pending (merged) event if it qualifies; returns the next slot."""
    if st[c, _S_PEND] == 0.0:
        return pos
    st[c, _S_PEND] = 0.0
    harsh = st[c, _S_PEND_HARSH] > 0.0
    if not harsh and ch[c, _C_EMIT_MODERATE] == 0.0:
        return pos
    peak = st[c, _S_PEND_PEAK]
    sev = SEVERITY_MODERATE
    if harsh:
        sev = SEVERITY_MEDIUM
        if peak >= ch[c, _C_SEVERE]:
            sev = SEVERITY_SEVERE
        elif peak >= ch[c, _C_HIGH]:
            sev = SEVERITY_HIGH
    ev_int[pos, _E_KIND] = np.int64(ch[c, _C_KIND])
    ev_int[pos, _E_START] = base + np.int64(st[c, _S_PEND_START])
    ev_int[pos, _E_END] = base + np.int64(st[c, _S_PEND_LAST])
    ev_int[pos, _E_PEAK] = base + np.int64(st[c, _S_PEND_PEAK_I])
    ev_int[pos, _E_SEVERITY] = sev
    ev_peak[pos] = ch[c, _C_SIGN] * peak
    return pos + 1


@serial
def _close_run(st, c, t_s, ch, base, ev_int, ev_peak, pos):
    """End channel c's run: a long enough run joins the pending event (closer than the
    merge time) or flushes it and becomes the pending event."""
    st[c, _S_RUN] = 0.0
    min_s = ch[c, _C_MIN_S]
    if st[c, _S_RUN_DUR] < min_s:
        return pos
    harsh = 1.0 if st[c, _S_RUN_HARSH_DUR] >= min_s else 0.0
    run_start_t = t_s[np.int64(st[c, _S_RUN_START])]
    if st[c, _S_PEND] > 0.0 and run_start_t - st[c, _S_PEND_END_T] <= ch[c, _C_MERGE_S]:
        st[c, _S_PEND_LAST] = st[c, _S_RUN_LAST]
        st[c, _S_PEND_END_T] = st[c, _S_RUN_END_T]
        if st[c, _S_RUN_PEAK] > st[c, _S_PEND_PEAK]:
            st[c, _S_PEND_PEAK] = st[c, _S_RUN_PEAK]
            st[c, _S_PEND_PEAK_I] = st[c, _S_RUN_PEAK_I]
        st[c, _S_PEND_HARSH] = max(st[c, _S_PEND_HARSH], harsh)
        return pos
    pos = _flush(st, c, ch, base, ev_int, ev_peak, pos)
    st[c, _S_PEND] = 1.0
    st[c, _S_PEND_START] = st[c, _S_RUN_START]
    st[c, _S_PEND_LAST] = st[c, _S_RUN_LAST]
    st[c, _S_PEND_END_T] = st[c, _S_RUN_END_T]
    st[c, _S_PEND_PEAK] = st[c, _S_RUN_PEAK]
    st[c, _S_PEND_PEAK_I] = st[c, _S_RUN_PEAK_I]
    st[c, _S_PEND_HARSH] = harsh
    return pos


@serial
def _step(st, c, i, y, t_i, cover_s, t_s, ch, base, ev_int, ev_peak, pos):
    """Feed one sample to channel c (y NaN: not eligible); returns the next slot. A
    sample counts for the time until the next one (0 before a gap)."""
    if y >= ch[c, _C_MOD]:
        if st[c, _S_RUN] == 0.0:
            st[c, _S_RUN] = 1.0
            st[c, _S_RUN_START] = i
            st[c, _S_RUN_DUR] = 0.0
            st[c, _S_RUN_HARSH_DUR] = 0.0
            st[c, _S_RUN_PEAK] = -math.inf
        st[c, _S_RUN_LAST] = i
        st[c, _S_RUN_END_T] = t_i + cover_s
        st[c, _S_RUN_DUR] += cover_s
        if y >= ch[c, _C_HARSH]:
            st[c, _S_RUN_HARSH_DUR] += cover_s
        if y > st[c, _S_RUN_PEAK]:
            st[c, _S_RUN_PEAK] = y
            st[c, _S_RUN_PEAK_I] = i
        return pos
    if st[c, _S_RUN] > 0.0:
        return _close_run(st, c, t_s, ch, base, ev_int, ev_peak, pos)
    return pos


@serial
def _finish(st, t_s, ch, base, ev_int, ev_peak, pos):
    """Close every channel's run and flush its pending event (gap or end of trip)."""
    for c in range(_N_CH):
        if st[c, _S_RUN] > 0.0:
            pos = _close_run(st, c, t_s, ch, base, ev_int, ev_peak, pos)
        pos = _flush(st, c, ch, base, ev_int, ev_peak, pos)
    return pos


@serial
def _yaw_radps(i, w, lat_mps2, gx, gy, gz, win, p):
    """Yaw rate (rad/s, positive to the left) at sample i of window w: the gyroscope's
    rate about the mounting's up direction, else the lateral acceleration over the GPS
    speed; NaN where the sample has no vehicle frame (handled, a dropout, no yaw)."""
    la = lat_mps2[i]
    if math.isnan(la):
        return math.nan
    if gx.shape[0] > 0:
        return gx[i] * win[w, _W_UX] + gy[i] * win[w, _W_UY] + gz[i] * win[w, _W_UZ]
    v = win[w, _W_GPS_SPEED]
    if v >= p.turn_min_speed_mps:
        return la / v
    return math.nan


@serial
def _turn_rad(k, t_s, lat_mps2, gx, gy, gz, win, win_start, nw, p):
    """Heading change (rad, unsigned) of the turn through sample k: the yaw rate
    integrated (each sample holding until the next) over the stretch around k where it
    keeps k's sign and reaches the minimum turn rate, never across a gap."""
    lo = 0
    hi = nw
    while hi - lo > 1:  # the window holding k: win_start[lo] <= k < win_start[lo + 1]
        mid = (lo + hi) // 2
        if win_start[mid] <= k:
            lo = mid
        else:
            hi = mid
    n = t_s.shape[0]
    gap_s = p.gap_s
    min_rate = p.turn_min_yaw_radps
    r = _yaw_radps(k, lo, lat_mps2, gx, gy, gz, win, p)
    if not abs(r) >= min_rate:
        return 0.0
    sign = 1.0 if r > 0.0 else -1.0
    total = 0.0
    i = k
    w = lo
    while i + 1 < n and t_s[i + 1] - t_s[i] <= gap_s:
        r = _yaw_radps(i, w, lat_mps2, gx, gy, gz, win, p) * sign
        if not r >= min_rate:
            break
        total += r * (t_s[i + 1] - t_s[i])
        i += 1
        if i >= win_start[w + 1]:
            w += 1
    i = k - 1
    w = lo
    while i >= 0 and t_s[i + 1] - t_s[i] <= gap_s:
        if i < win_start[w]:
            w -= 1
        r = _yaw_radps(i, w, lat_mps2, gx, gy, gz, win, p) * sign
        if not r >= min_rate:
            break
        total += r * (t_s[i + 1] - t_s[i])
        i -= 1
    return total


@serial
def _keep_turns(t_s, lat_mps2, gx, gy, gz, win, win_start, nw, p, base, first, pos, ev_int,
                ev_peak):
    """Drop the trip's cornering events (slots first:pos) whose peak is in no turn of
    more than the minimum heading change, closing up the slots; returns the next slot."""
    out = first
    for e in range(first, pos):
        if ev_int[e, _E_KIND] == EVENT_CORNERING:
            k = ev_int[e, _E_PEAK] - base
            if not _turn_rad(k, t_s, lat_mps2, gx, gy, gz, win, win_start, nw, p) > (
                p.corner_min_turn_rad
            ):
                continue
        if out < e:
            for c in range(_E_COLS):
                ev_int[out, c] = ev_int[e, c]
            ev_peak[out] = ev_peak[e]
        out += 1
    return out


@serial
def _trip_events(
    t_s,
    long_mps2,
    lat_mps2,
    gx,
    gy,
    gz,
    hands_free,
    win,
    win_start,
    win_flag,
    nw,
    p,
    ch,
    st,
    base,
    ev_int,
    ev_peak,
    pos,
):
    """The four channels over a trip: acceleration (+long), braking (-long), cornering
    (|lat| above the speed threshold, in a turn: see _keep_turns) and phone handling
    (speed while handled and not hands-free); acceleration is smoothed by a centred
    moving mean of +-smooth_half_s that never crosses a gap. Only windows within reach
    of the smoothing from a hot window are visited: elsewhere no signal reaches a
    threshold, so the result is the same as visiting every sample. gx, gy, gz are the
    trip's gyroscope or empty. Returns the next event slot."""
    first = pos
    n = t_s.shape[0]
    for c in range(_N_CH):
        st[c, _S_RUN] = 0.0
        st[c, _S_PEND] = 0.0
    half_s = p.smooth_half_s
    gap_s = p.gap_s
    reach = math.ceil(half_s / p.window_s)
    min_corner_speed = p.corner_min_speed_mps
    mod_accel = ch[_CH_ACCEL, _C_MOD]
    mod_brake = ch[_CH_BRAKE, _C_MOD]
    mod_corner = ch[_CH_CORNER, _C_MOD]
    mod_hand = ch[_CH_HANDLING, _C_MOD]
    has_free = hands_free.shape[0] > 0
    next_hot = 0  # first hot window at or after w (nw when none)
    last_hot = -reach - 1  # last hot window before w
    lo = 0
    hi = 0
    s_long = 0.0
    s_lat = 0.0
    cnt = 0
    visited_prev = False
    for w in range(nw):
        i0 = win_start[w]
        i1 = win_start[w + 1]
        if i0 > 0 and t_s[i0] - t_s[i0 - 1] > gap_s:
            pos = _finish(st, t_s, ch, base, ev_int, ev_peak, pos)
            visited_prev = False
        if next_hot < w:
            next_hot = w
        while next_hot < nw and not win_flag[next_hot] & _F_HOT:
            next_hot += 1
        if win_flag[w] & _F_HOT:
            last_hot = w
        if next_hot - w > reach and w - last_hot > reach:
            visited_prev = False
            continue
        if not visited_prev:
            # Restart the moving mean at this window (never reaching back over a gap).
            lo = i0
            while lo > 0 and t_s[lo - 1] >= t_s[i0] - half_s and t_s[lo] - t_s[lo - 1] <= gap_s:
                lo -= 1
            hi = lo
            s_long = 0.0
            s_lat = 0.0
            cnt = 0
        visited_prev = True
        speed = win[w, _W_GPS_SPEED]
        corner_speed = speed > min_corner_speed
        hand_speed = speed if win_flag[w] & _F_HANDLING else math.nan
        for i in range(i0, i1):
            ti = t_s[i]
            # Long and lat are NaN together (handled, unresolved or a dropout), never inf.
            while hi < n and t_s[hi] <= ti + half_s and (hi <= i or t_s[hi] - t_s[hi - 1] <= gap_s):
                if not math.isnan(long_mps2[hi]):
                    s_long += long_mps2[hi]
                    s_lat += lat_mps2[hi]
                    cnt += 1
                hi += 1
            while t_s[lo] < ti - half_s:
                if not math.isnan(long_mps2[lo]):
                    s_long -= long_mps2[lo]
                    s_lat -= lat_mps2[lo]
                    cnt -= 1
                lo += 1
            y_long = math.nan
            y_lat = math.nan
            if cnt > 0 and not math.isnan(long_mps2[i]):
                y_long = s_long / cnt
                if corner_speed:
                    y_lat = abs(s_lat / cnt)
            y_hand = math.nan if has_free and hands_free[i] != 0 else hand_speed
            # Only samples above a threshold or ending a run need the detector itself.
            go_accel = y_long >= mod_accel or st[_CH_ACCEL, _S_RUN] > 0.0
            go_brake = -y_long >= mod_brake or st[_CH_BRAKE, _S_RUN] > 0.0
            go_corner = y_lat >= mod_corner or st[_CH_CORNER, _S_RUN] > 0.0
            go_hand = y_hand >= mod_hand or st[_CH_HANDLING, _S_RUN] > 0.0
            if not (go_accel or go_brake or go_corner or go_hand):
                continue
            cover_s = 0.0
            if i + 1 < n and t_s[i + 1] - ti <= gap_s:
                cover_s = t_s[i + 1] - ti
            if go_accel:
                pos = _step(
                    st, _CH_ACCEL, i, y_long, ti, cover_s, t_s, ch, base, ev_int, ev_peak, pos
                )
            if go_brake:
                pos = _step(
                    st, _CH_BRAKE, i, -y_long, ti, cover_s, t_s, ch, base, ev_int, ev_peak, pos
                )
            if go_corner:
                pos = _step(
                    st, _CH_CORNER, i, y_lat, ti, cover_s, t_s, ch, base, ev_int, ev_peak, pos
                )
            if go_hand:
                pos = _step(
                    st, _CH_HANDLING, i, y_hand, ti, cover_s, t_s, ch, base, ev_int, ev_peak, pos
                )
    pos = _finish(st, t_s, ch, base, ev_int, ev_peak, pos)
    return _keep_turns(t_s, lat_mps2, gx, gy, gz, win, win_start, nw, p, base, first, pos,
                       ev_int, ev_peak)


@serial
def _process_trips(
    t_s,
    ax,
    ay,
    az,
    gx,
    gy,
    gz,
    hands_free,
    offsets,
    gps_t_s,
    gps_speed_mps,
    gps_offsets,
    p,
    ch,
    with_events,
    long_out,
    lat_out,
    vert_out,
    handling_out,
    trip_out,
    win,
    win_start,
    win_flag,
    win_seg,
    ev_int,
    ev_peak,
    ev_count,
):
    """Orientation (and events when with_events) of every trip, one trip at a time so its
    arrays stay in cache. The window scratch holds one trip (a trip has at most as many
    windows as samples); events are appended from slot 0 (a trip of n samples has at
    most 1.5 n + 3 events) and each trip's count goes to ev_count. hands_free has one
    flag per sample or is empty (none hands-free). Returns 0, or the first pass's input
    error code (see _BAD_FIELDS)."""
    has_gyro = gx.shape[0] == t_s.shape[0]
    st = np.empty((_N_CH, _S_COLS))
    pos = 0
    for trip in range(offsets.shape[0] - 1):
        a = offsets[trip]
        b = offsets[trip + 1]
        trip_out[trip, _T_MOUNTINGS] = 0
        trip_out[trip, _T_ORIENTED] = 0
        ev_count[trip] = 0
        if b == a:
            continue
        cx = 0.0
        cy = 0.0
        cz = 0.0
        for i in range(a, b):
            if _finite(ax[i]) and _finite(ay[i]) and _finite(az[i]):
                cx = ax[i]
                cy = ay[i]
                cz = az[i]
                break
        ws = win_start[: b - a + 1]
        wn = win[: b - a]
        wf = win_flag[: b - a]
        wg = win_seg[: b - a]
        if has_gyro:
            nw = _window_stats(
                t_s[a:b],
                ax[a:b],
                ay[a:b],
                az[a:b],
                gx[a:b],
                gy[a:b],
                gz[a:b],
                cx,
                cy,
                cz,
                p,
                wn,
                ws,
            )
        else:
            nw = _window_stats(
                t_s[a:b], ax[a:b], ay[a:b], az[a:b], gx, gy, gz, cx, cy, cz, p, wn, ws
            )
        if nw < 0:
            return nw
        ga = gps_offsets[trip]
        gb = gps_offsets[trip + 1]
        _window_gps(wn, nw, gps_t_s[ga:gb], gps_speed_mps[ga:gb], p.gps_gap_s)
        n_mount = _mountings(wn, nw, cx, cy, cz, p, wf, wg)
        oriented = _rotate(
            ax[a:b],
            ay[a:b],
            az[a:b],
            wn,
            ws,
            nw,
            cx,
            cy,
            cz,
            p,
            wf,
            wg,
            long_out[a:b],
            lat_out[a:b],
            vert_out[a:b],
            handling_out[a:b],
        )
        trip_out[trip, _T_MOUNTINGS] = n_mount
        trip_out[trip, _T_ORIENTED] = oriented
        if with_events:
            first = pos
            pos = _trip_events(
                t_s[a:b],
                long_out[a:b],
                lat_out[a:b],
                gx[a:b] if has_gyro else gx,
                gy[a:b] if has_gyro else gy,
                gz[a:b] if has_gyro else gz,
                hands_free[a:b] if hands_free.shape[0] > 0 else hands_free,
                wn,
                ws,
                wf,
                nw,
                p,
                ch,
                st,
                a,
                ev_int,
                ev_peak,
                pos,
            )
            ev_count[trip] = pos - first
    return 0


@serial
def _first_bad_time(t_s, offsets):
    """Index of the first non-finite time or time before its predecessor in the trip."""
    for trip in range(offsets.shape[0] - 1):
        prev = -math.inf
        for i in range(offsets[trip], offsets[trip + 1]):
            if not (_finite(t_s[i]) and t_s[i] >= prev):
                return i
            prev = t_s[i]
    return -1


@serial
def _has_inf(x):
    """Whether x holds +-inf (NaN is allowed: a dropout); a branch-free max of |x|."""
    largest = 0.0
    for i in range(x.shape[0]):
        v = abs(x[i])
        largest = v if v > largest else largest
    return largest == math.inf


# ---------------------------------------------------------------------------------------
# Public wrappers
# ---------------------------------------------------------------------------------------

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ImuOrientation:
    """Per IMU sample: vehicle-frame acceleration (x forward, y left, z up without
    gravity; NaN while handled, where the accelerometer was NaN, or, for long and lat,
    where no yaw could be resolved) and the handling flag; per trip: the number of
    stable mountings and the share of samples with a resolved vehicle frame."""

    long_accel_mps2: FloatArray
    lat_accel_mps2: FloatArray
    vert_accel_mps2: FloatArray
    handling: BoolArray
    mountings: IntArray
    oriented_share: FloatArray


@dataclass(frozen=True)
class ImuEvents:
    """IMU events as columns, ordered by trip, kind and start. Indices are flat IMU sample
    indices; ``severity`` codes ``SEVERITIES`` (moderate, then the harsh bands medium, high,
    severe). ``peak_accel_mps2`` is
    the smoothed acceleration at the peak, signed along the vehicle axis for braking
    (negative) and acceleration, the lateral magnitude for cornering, NaN for phone
    handling. Speed and position are interpolated from the GPS fixes at the peak."""

    trip: IntArray
    kind: IntArray
    severity: IntArray
    start_index: IntArray
    end_index: IntArray
    peak_index: IntArray
    start_t_s: FloatArray
    end_t_s: FloatArray
    peak_t_s: FloatArray
    duration_s: FloatArray
    peak_accel_mps2: FloatArray
    speed_mps: FloatArray
    lat_deg: FloatArray
    lon_deg: FloatArray

    def to_frame(self) -> pd.DataFrame:
        """The events as ``compute_trip_features(extra_events=...)`` takes them: kind and
        severity by name, ``peak_value`` the peak acceleration."""
        return pd.DataFrame(
            {
                "trip": self.trip,
                "kind": np.asarray(EVENT_KIND_NAMES, dtype=object)[self.kind],
                "severity": np.asarray(SEVERITIES, dtype=object)[self.severity],
                "start_t_s": self.start_t_s,
                "end_t_s": self.end_t_s,
                "duration_s": self.duration_s,
                "peak_value": self.peak_accel_mps2,
                "speed_mps": self.speed_mps,
                "lat_deg": self.lat_deg,
                "lon_deg": self.lon_deg,
            }
        )


@dataclass(frozen=True)
class ImuResult:
    """Orientation and events of one batch of trips."""

    orientation: ImuOrientation
    events: ImuEvents


def _channels(params: ImuParams) -> FloatArray:
    """The event detectors' constants, one row per channel (see ``_C_*``)."""
    ch = np.empty((_N_CH, _C_COLS))
    ch[_CH_ACCEL] = (
        params.accel_moderate_mps2,
        params.accel_harsh_mps2,
        params.accel_band_high_mps2,
        params.accel_band_severe_mps2,
        params.harsh_min_duration_s,
        params.harsh_merge_s,
        1.0,
        EVENT_ACCELERATION,
        1.0,
    )
    ch[_CH_BRAKE] = (
        params.brake_moderate_mps2,
        params.brake_harsh_mps2,
        params.brake_band_high_mps2,
        params.brake_band_severe_mps2,
        params.harsh_min_duration_s,
        params.harsh_merge_s,
        -1.0,
        EVENT_BRAKING,
        1.0,
    )
    ch[_CH_CORNER] = (
        params.corner_moderate_mps2,
        params.corner_lateral_mps2,
        params.corner_band_high_mps2,
        params.corner_band_severe_mps2,
        params.corner_min_duration_s,
        params.harsh_merge_s,
        1.0,
        EVENT_CORNERING,
        1.0,
    )
    # Phone handling: the "signal" is the speed while handled; every run long enough is
    # reported (as harsh), none as moderate.
    ch[_CH_HANDLING] = (
        params.handling_min_speed_mps,
        params.handling_min_speed_mps,
        math.inf,
        math.inf,
        params.handling_min_duration_s,
        params.handling_merge_s,
        1.0,
        EVENT_PHONE_HANDLING,
        0.0,
    )
    return ch


def _float_array(name: str, values: npt.ArrayLike, n: int | None = None) -> FloatArray:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: length {arr.shape[0]} differs from {n}")
    return arr


def _offsets(name: str, values: npt.ArrayLike, n: int) -> IntArray:
    raw = np.asarray(values)
    if raw.ndim != 1 or raw.shape[0] < 1 or not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"{name}: must be a one-dimensional integer array of n_trips + 1")
    off = np.ascontiguousarray(raw, dtype=np.int64)
    if off[0] != 0 or off[-1] != n or np.any(np.diff(off) < 0):
        raise ValueError(f"{name}: must start at 0, be non-decreasing and end at {n}")
    return off


def _times(name: str, values: npt.ArrayLike, offsets: IntArray) -> FloatArray:
    t = _float_array(name, values, int(offsets[-1]))
    bad = _first_bad_time(t, offsets)
    if bad >= 0:
        raise ValueError(
            f"{name}: must be finite and non-decreasing within each trip (index {bad})"
        )
    return t


def _accel(name: str, values: npt.ArrayLike, n: int) -> FloatArray:
    arr = _float_array(name, values, n)
    if _has_inf(arr):
        raise ValueError(f"{name}: must be finite or NaN (a dropout)")
    return arr


def orient_imu(
    imu_t_s: npt.ArrayLike,
    acc_x_mps2: npt.ArrayLike,
    acc_y_mps2: npt.ArrayLike,
    acc_z_mps2: npt.ArrayLike,
    imu_offsets: npt.ArrayLike,
    gps_t_s: npt.ArrayLike,
    gps_speed_mps: npt.ArrayLike,
    gps_offsets: npt.ArrayLike,
    *,
    gyr_x_radps: npt.ArrayLike | None = None,
    gyr_y_radps: npt.ArrayLike | None = None,
    gyr_z_radps: npt.ArrayLike | None = None,
    params: ImuParams = DEFAULT_IMU_PARAMS,
) -> ImuOrientation:
    """Rotate phone-frame specific force (m/s^2, gravity included, reading +g upwards at
    rest) of many trips into the vehicle frame.

    Trips are flat arrays plus ``imu_offsets[n_trips + 1]``; the GPS fixes of trip k are
    ``gps_offsets[k]:gps_offsets[k + 1]`` with ``gps_speed_mps`` the best speed at each fix
    (from kinematics; NaN unknown), whose derivative is the yaw reference. Times must be
    finite and non-decreasing within each trip (duplicates allowed); NaN accelerometer or
    gyro samples are dropouts.
    """
    return process_imu(
        imu_t_s,
        acc_x_mps2,
        acc_y_mps2,
        acc_z_mps2,
        imu_offsets,
        gps_t_s,
        gps_speed_mps,
        gps_offsets,
        gyr_x_radps=gyr_x_radps,
        gyr_y_radps=gyr_y_radps,
        gyr_z_radps=gyr_z_radps,
        params=params,
        events=False,
    ).orientation


def process_imu(
    imu_t_s: npt.ArrayLike,
    acc_x_mps2: npt.ArrayLike,
    acc_y_mps2: npt.ArrayLike,
    acc_z_mps2: npt.ArrayLike,
    imu_offsets: npt.ArrayLike,
    gps_t_s: npt.ArrayLike,
    gps_speed_mps: npt.ArrayLike,
    gps_offsets: npt.ArrayLike,
    *,
    gyr_x_radps: npt.ArrayLike | None = None,
    gyr_y_radps: npt.ArrayLike | None = None,
    gyr_z_radps: npt.ArrayLike | None = None,
    hands_free: npt.ArrayLike | None = None,
    gps_lat_deg: npt.ArrayLike | None = None,
    gps_lon_deg: npt.ArrayLike | None = None,
    params: ImuParams = DEFAULT_IMU_PARAMS,
    events: bool = True,
) -> ImuResult:
    """Orientation (see :func:`orient_imu`) and IMU events of many trips.

    Events: moderate and harsh braking, acceleration and cornering in the vehicle frame
    (minimum duration, merged when closer than ``harsh_merge_s``, never across an IMU
    gap) and phone handling while moving. ``hands_free`` (one flag per IMU sample, from
    the app's phone stream) exempts hands-free use. ``gps_lat_deg``/``gps_lon_deg`` at the
    GPS fixes give each event a position. With ``events=False`` only the orientation is
    computed and the events are empty.
    """
    if np.ndim(imu_t_s) != 1:
        raise ValueError("imu_t_s: must be one-dimensional")
    n = int(np.shape(imu_t_s)[0])
    off = _offsets("imu_offsets", imu_offsets, n)
    # Times and accelerometer values are checked by the kernel's first pass.
    t = _float_array("imu_t_s", imu_t_s, n)
    ax = _float_array("acc_x_mps2", acc_x_mps2, n)
    ay = _float_array("acc_y_mps2", acc_y_mps2, n)
    az = _float_array("acc_z_mps2", acc_z_mps2, n)
    if gyr_x_radps is None and gyr_y_radps is None and gyr_z_radps is None:
        gx = gy = gz = np.empty(0, dtype=np.float64)
    elif gyr_x_radps is None or gyr_y_radps is None or gyr_z_radps is None:
        raise ValueError("gyr_x_radps: gyro axes must be given all three or none")
    else:
        gx = _float_array("gyr_x_radps", gyr_x_radps, n)
        gy = _float_array("gyr_y_radps", gyr_y_radps, n)
        gz = _float_array("gyr_z_radps", gyr_z_radps, n)
    if np.ndim(gps_t_s) != 1:
        raise ValueError("gps_t_s: must be one-dimensional")
    m = int(np.shape(gps_t_s)[0])
    goff = _offsets("gps_offsets", gps_offsets, m)
    if goff.shape[0] != off.shape[0]:
        raise ValueError("gps_offsets: must describe as many trips as imu_offsets")
    gt = _times("gps_t_s", gps_t_s, goff)
    gv = _accel("gps_speed_mps", gps_speed_mps, m)
    if hands_free is None:
        free = np.empty(0, dtype=np.uint8)  # no flags: nothing is hands-free
    else:
        free_raw = np.asarray(hands_free)
        if free_raw.shape != (n,) or free_raw.dtype != np.bool_:
            raise ValueError(
                f"hands_free: must be a boolean array of one flag per IMU sample ({n})"
            )
        free = np.ascontiguousarray(free_raw).view(np.uint8)
    if (gps_lat_deg is None) != (gps_lon_deg is None):
        raise ValueError("gps_lat_deg: latitude and longitude must be given together")
    glat = glon = None
    if gps_lat_deg is not None and gps_lon_deg is not None:
        glat = _float_array("gps_lat_deg", gps_lat_deg, m)
        glon = _float_array("gps_lon_deg", gps_lon_deg, m)

    n_trips = off.shape[0] - 1
    long_out = np.empty(n)
    lat_out = np.empty(n)
    vert_out = np.empty(n)
    handling = np.empty(n, dtype=np.uint8)
    trip_out = np.empty((n_trips, _T_COLS), dtype=np.int64)
    longest = int(np.max(np.diff(off), initial=0))
    win = np.empty((longest, _W_COLS))
    win_start = np.empty(longest + 1, dtype=np.int64)
    win_flag = np.empty(longest, dtype=np.int64)
    win_seg = np.empty(longest, dtype=np.int64)
    slots = 2 * n + 4 * n_trips if events else 0
    ev_int = np.empty((slots, _E_COLS), dtype=np.int64)
    ev_peak = np.empty(slots)
    ev_count = np.empty(n_trips, dtype=np.int64)
    status = _process_trips(
        t,
        ax,
        ay,
        az,
        gx,
        gy,
        gz,
        free,
        off,
        gt,
        gv,
        goff,
        params.kernel(),
        _channels(params),
        events,
        long_out,
        lat_out,
        vert_out,
        handling,
        trip_out,
        win,
        win_start,
        win_flag,
        win_seg,
        ev_int,
        ev_peak,
        ev_count,
    )
    if status != 0:
        raise ValueError(_BAD_FIELDS[status])
    lengths = np.diff(off)
    share = np.divide(trip_out[:, _T_ORIENTED], lengths, out=np.zeros(n_trips), where=lengths > 0)
    orientation = ImuOrientation(
        long_accel_mps2=long_out,
        lat_accel_mps2=lat_out,
        vert_accel_mps2=vert_out,
        handling=handling.view(np.bool_),
        mountings=trip_out[:, _T_MOUNTINGS].copy(),
        oriented_share=share,
    )
    return ImuResult(
        orientation=orientation,
        events=_collect_events(t, off, gt, goff, gv, glat, glon, ev_int, ev_peak, ev_count),
    )


def _collect_events(
    t: FloatArray,
    off: IntArray,
    gps_t: FloatArray,
    gps_off: IntArray,
    gps_speed: FloatArray,
    gps_lat: FloatArray | None,
    gps_lon: FloatArray | None,
    ev_int: IntArray,
    ev_peak: FloatArray,
    ev_count: IntArray,
) -> ImuEvents:
    """Gather the events from their per-trip slots, sort them, add speed and place."""
    n_trips = off.shape[0] - 1
    trip = np.repeat(np.arange(n_trips, dtype=np.int64), ev_count)
    rows = ev_int[: trip.shape[0]]
    order = np.lexsort((rows[:, _E_START], rows[:, _E_KIND], trip))
    rows = rows[order]
    trip = trip[order]
    peak = ev_peak[: trip.shape[0]][order]
    kind = rows[:, _E_KIND].copy()
    start = rows[:, _E_START].copy()
    end = rows[:, _E_END].copy()
    peak_i = rows[:, _E_PEAK].copy()
    peak[kind == EVENT_PHONE_HANDLING] = np.nan
    peak_t = t[peak_i]
    speed = np.full(trip.shape[0], np.nan)
    lat = np.full(trip.shape[0], np.nan)
    lon = np.full(trip.shape[0], np.nan)
    bounds = np.searchsorted(trip, np.arange(n_trips + 1))
    for k in np.flatnonzero(np.diff(bounds)):
        sel = slice(bounds[k], bounds[k + 1])
        ga, gb = gps_off[k], gps_off[k + 1]
        if gb == ga:
            continue
        fix_t = gps_t[ga:gb]
        speed[sel] = np.interp(peak_t[sel], fix_t, gps_speed[ga:gb], left=np.nan, right=np.nan)
        if gps_lat is not None and gps_lon is not None:
            lat[sel] = np.interp(peak_t[sel], fix_t, gps_lat[ga:gb], left=np.nan, right=np.nan)
            lon[sel] = np.interp(peak_t[sel], fix_t, gps_lon[ga:gb], left=np.nan, right=np.nan)
    return ImuEvents(
        trip=trip,
        kind=kind,
        severity=rows[:, _E_SEVERITY].copy(),
        start_index=start,
        end_index=end,
        peak_index=peak_i,
        start_t_s=t[start],
        end_t_s=t[end],
        peak_t_s=peak_t,
        duration_s=t[end] - t[start],
        peak_accel_mps2=peak,
        speed_mps=speed,
        lat_deg=lat,
        lon_deg=lon,
    )
