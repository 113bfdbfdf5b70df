"""numba kernels turning the kinematic truth into GPS fixes and phone IMU samples."""

from __future__ import annotations

import numpy as np

from simulator._jit import serial_kernel
from simulator._rng import normal, uniform

GRAVITY_MPS2 = 9.80665
_WGS84_A_M = 6378137.0
_WGS84_E2 = 6.69437999014e-3
_HANDLING_TRANSITION_S = 0.8
# AR(1) wander of the GPS error: time constants 20 s parked, 60 s moving, at 1 Hz.
_RHO_PARKED = float(np.exp(-1.0 / 20.0))
_RHO_MOVING = float(np.exp(-1.0 / 60.0))
_INNOVATION_PARKED = float(np.sqrt(1.0 - _RHO_PARKED**2))
_INNOVATION_MOVING = float(np.sqrt(1.0 - _RHO_MOVING**2))
_STEP_HZ = 1.9  # walking cadence


@serial_kernel
def _frame_constants(lat0_deg: float) -> tuple[float, float, float, float]:
    """Meridian (M) and prime-vertical (N) radii at the centre and their log-derivatives."""
    lat0 = np.radians(lat0_deg)
    sin0 = np.sin(lat0)
    w2 = 1.0 - _WGS84_E2 * sin0 * sin0
    m0 = _WGS84_A_M * (1.0 - _WGS84_E2) / w2**1.5
    n0 = _WGS84_A_M / np.sqrt(w2)
    dn = _WGS84_E2 * sin0 * np.cos(lat0) / w2
    return m0, 3.0 * dn, n0, dn


@serial_kernel
def _local_to_geodetic(x_m: float, y_m: float, lat0_deg: float, lon0_deg: float, m0: float,
                       dlnm: float, n0: float, dlnn: float) -> tuple[float, float]:
    """Local east/north metres to degrees by an inverse transverse Mercator about the centre.

    Transverse Mercator is conformal with a scale of 1 + x^2 / (2 R^2) (2e-5 at 40 km), so
    route lengths in the local frame are lengths on the WGS84 ellipsoid. Series of
    Gauss-Krüger truncated after the x^3 terms; the footpoint latitude's meridian radius is
    linear in latitude around the centre (both residuals are below 1e-7 over a region).
    """
    dlat1 = y_m / (m0 * (1.0 + 0.5 * dlnm * y_m / m0))
    lat1 = np.radians(lat0_deg) + dlat1
    n1 = n0 * (1.0 + dlnn * dlat1)
    m1 = m0 * (1.0 + dlnm * dlat1)
    cos1 = np.cos(lat1)
    tan1 = np.sin(lat1) / cos1
    u = x_m / n1
    lat = lat1 - tan1 * (n1 / m1) * 0.5 * u * u
    eta2 = _WGS84_E2 / (1.0 - _WGS84_E2) * cos1 * cos1
    lon = (u - (1.0 + 2.0 * tan1 * tan1 + eta2) * u * u * u / 6.0) / cos1
    return np.degrees(lat), lon0_deg + np.degrees(lon)


@serial_kernel
def _gps_fixes(
    sec_offsets: np.ndarray, x_m: np.ndarray, y_m: np.ndarray, speed_mps: np.ndarray,
    heading_rad: np.ndarray, limit_mps: np.ndarray, road_class: np.ndarray, tunnel: np.ndarray,
    phase: np.ndarray, trip_seed: np.ndarray, trip_t_start_us: np.ndarray,
    trip_lat0_deg: np.ndarray, trip_lon0_deg: np.ndarray, trip_altitude_m: np.ndarray,
    trip_noise_scale: np.ndarray, trip_limit_known: np.ndarray, jump_prob: float,
    fix_offsets: np.ndarray, out_t_s: np.ndarray, out_lat_deg: np.ndarray, out_lon_deg: np.ndarray,
    out_speed_mps: np.ndarray, out_heading_deg: np.ndarray, out_accuracy_m: np.ndarray,
    out_altitude_m: np.ndarray, out_limit_mps: np.ndarray,
) -> None:
    """Phone fixes of every trip: one per true second except in tunnels (``fix_offsets``)."""
    for t in range(sec_offsets.shape[0] - 1):
        state = trip_seed[t]
        lat0 = trip_lat0_deg[t]
        lon0 = trip_lon0_deg[t]
        m0, dlnm, n0, dlnn = _frame_constants(lat0)
        scale = trip_noise_scale[t]
        state, n1 = normal(state)
        state, n2 = normal(state)
        state, n3 = normal(state)
        err_x = 3.0 * scale * n1
        err_y = 3.0 * scale * n2
        err_alt = 4.0 * n3
        jump_left = 0
        jump_x = 0.0
        jump_y = 0.0
        q = fix_offsets[t]
        for k in range(sec_offsets[t], sec_offsets[t + 1]):
            age = k - sec_offsets[t]
            parked = phase[k] != 1
            # Slowly wandering error (multipath, satellite geometry); wider and faster parked.
            if parked:
                sigma = 6.0 * scale
                rho = _RHO_PARKED
                innovation = sigma * _INNOVATION_PARKED
            else:
                sigma = (3.2 if road_class[k] == 0 else 2.2) * scale  # urban canyons
                rho = _RHO_MOVING
                innovation = sigma * _INNOVATION_MOVING
            state, n1 = normal(state)
            state, n2 = normal(state)
            state, n3 = normal(state)
            err_x = rho * err_x + innovation * n1
            err_y = rho * err_y + innovation * n2
            err_alt = 0.99 * err_alt + 0.56 * n3
            cold = 15.0 * np.exp(-age / 3.0) if age < 40 else 0.0  # a cold start's first fixes
            state, u = uniform(state)
            if jump_left == 0 and u < jump_prob:
                state, u = uniform(state)
                jump_left = 1 + int(3.0 * u)
                state, u = uniform(state)
                angle = 2.0 * np.pi * u
                state, u = uniform(state)
                jump_len = 40.0 + 210.0 * u
                jump_x = jump_len * np.cos(angle)
                jump_y = jump_len * np.sin(angle)
            state, n1 = normal(state)
            state, n2 = normal(state)
            ex = err_x + (0.3 + cold) * n1
            ey = err_y + (0.3 + cold) * n2
            state, u = uniform(state)
            accuracy = max(2.0, sigma * (1.0 + 0.4 * u) + cold)
            if jump_left > 0:
                ex += jump_x
                ey += jump_y
                state, u = uniform(state)
                accuracy = 10.0 + 30.0 * u
                jump_left -= 1
            v = speed_mps[k]
            state, n1 = normal(state)
            state, n2 = normal(state)
            if tunnel[k] != 0:
                continue
            lat, lon = _local_to_geodetic(x_m[k] + ex, y_m[k] + ey, lat0, lon0, m0, dlnm, n0, dlnn)
            out_t_s[q] = (trip_t_start_us[t] + age * 1_000_000) / 1e6
            out_lat_deg[q] = lat
            out_lon_deg[q] = lon
            out_accuracy_m[q] = accuracy
            out_altitude_m[q] = trip_altitude_m[t] + err_alt
            if v > 0.3:
                out_speed_mps[q] = max(0.0, v + 0.12 * n1)
            else:
                out_speed_mps[q] = abs(0.15 * n1)
            if v >= 1.0:
                out_heading_deg[q] = (90.0 - np.degrees(heading_rad[k]) + 1.5 * n2) % 360.0
            else:
                out_heading_deg[q] = np.nan
            out_limit_mps[q] = limit_mps[k] if trip_limit_known[t] else np.nan
            q += 1


@serial_kernel
def _quat_matrix(w: float, x: float, y: float, z: float, out: np.ndarray) -> None:
    """Rotation matrix of a unit quaternion (phone axes expressed in the vehicle frame)."""
    out[0, 0] = 1.0 - 2.0 * (y * y + z * z)
    out[0, 1] = 2.0 * (x * y - w * z)
    out[0, 2] = 2.0 * (x * z + w * y)
    out[1, 0] = 2.0 * (x * y + w * z)
    out[1, 1] = 1.0 - 2.0 * (x * x + z * z)
    out[1, 2] = 2.0 * (y * z - w * x)
    out[2, 0] = 2.0 * (x * z - w * y)
    out[2, 1] = 2.0 * (y * z + w * x)
    out[2, 2] = 1.0 - 2.0 * (x * x + y * y)


@serial_kernel
def _relative_axis_angle(qa: np.ndarray, qb: np.ndarray) -> tuple[float, float, float, float]:
    """Body-frame axis and angle turning orientation ``qa`` into ``qb`` the short way round."""
    w = qa[0] * qb[0] + qa[1] * qb[1] + qa[2] * qb[2] + qa[3] * qb[3]
    x = qa[0] * qb[1] - qa[1] * qb[0] - qa[2] * qb[3] + qa[3] * qb[2]
    y = qa[0] * qb[2] + qa[1] * qb[3] - qa[2] * qb[0] - qa[3] * qb[1]
    z = qa[0] * qb[3] - qa[1] * qb[2] + qa[2] * qb[1] - qa[3] * qb[0]
    if w < 0.0:
        w, x, y, z = -w, -x, -y, -z
    sin_half = np.sqrt(x * x + y * y + z * z)
    if sin_half < 1e-12:
        return 1.0, 0.0, 0.0, 0.0
    return x / sin_half, y / sin_half, z / sin_half, 2.0 * np.arctan2(sin_half, w)


@serial_kernel
def _rotate_towards(ra: np.ndarray, ux: float, uy: float, uz: float, phi: float,
                    out: np.ndarray) -> None:
    """out = ra @ Rot(u, phi) (Rodrigues)."""
    c = np.cos(phi)
    s = np.sin(phi)
    cc = 1.0 - c
    r00 = c + ux * ux * cc
    r01 = ux * uy * cc - uz * s
    r02 = ux * uz * cc + uy * s
    r10 = uy * ux * cc + uz * s
    r11 = c + uy * uy * cc
    r12 = uy * uz * cc - ux * s
    r20 = uz * ux * cc - uy * s
    r21 = uz * uy * cc + ux * s
    r22 = c + uz * uz * cc
    for i in range(3):
        a0 = ra[i, 0]
        a1 = ra[i, 1]
        a2 = ra[i, 2]
        out[i, 0] = a0 * r00 + a1 * r10 + a2 * r20
        out[i, 1] = a0 * r01 + a1 * r11 + a2 * r21
        out[i, 2] = a0 * r02 + a1 * r12 + a2 * r22


@serial_kernel
def _imu_samples(
    fine_offsets: np.ndarray, fine_speed_mps: np.ndarray, fine_accel_mps2: np.ndarray,
    fine_curv_1pm: np.ndarray, fine_hz: float, imu_hz: int, imu_offsets: np.ndarray,
    trip_t_start_us: np.ndarray, trip_walk: np.ndarray, trip_seed: np.ndarray, trip_mount_q: np.ndarray,
    trip_acc_bias_mps2: np.ndarray, trip_gyr_bias_radps: np.ndarray, episode_offsets: np.ndarray,
    episode_start_s: np.ndarray, episode_end_s: np.ndarray, episode_hold_q: np.ndarray,
    episode_final_q: np.ndarray, out_t_s: np.ndarray, out_acc_x: np.ndarray, out_acc_y: np.ndarray,
    out_acc_z: np.ndarray, out_gyr_x: np.ndarray, out_gyr_y: np.ndarray, out_gyr_z: np.ndarray,
) -> None:
    """Phone-frame accelerometer (specific force) and gyroscope samples of every trip.

    The vehicle frame is x forward, y left, z up; the phone's orientation maps phone axes to
    vehicle axes. Phone handling moves the phone from its mount into the hand and then to a new
    place (``episode_final_q``), with hand jitter while it is held.
    """
    r_cur = np.empty((3, 3))
    r_from = np.empty((3, 3))
    q_from = np.empty(4)
    for t in range(imu_offsets.shape[0] - 1):
        state = trip_seed[t]
        f0 = fine_offsets[t]
        n_fine = fine_offsets[t + 1] - f0
        q_from[:] = trip_mount_q[t]
        _quat_matrix(q_from[0], q_from[1], q_from[2], q_from[3], r_cur)
        e = episode_offsets[t]
        e_end = episode_offsets[t + 1]
        bax = trip_acc_bias_mps2[t, 0]
        bay = trip_acc_bias_mps2[t, 1]
        baz = trip_acc_bias_mps2[t, 2]
        bgx = trip_gyr_bias_radps[t, 0]
        bgy = trip_gyr_bias_radps[t, 1]
        bgz = trip_gyr_bias_radps[t, 2]
        walk = trip_walk[t]
        fine_per_sample = fine_hz / imu_hz
        seconds_per_sample = 1.0 / imu_hz
        # Sample k is at t0 + floor(k * 1e6 / imu_hz) us, kept exact without a division.
        t_us = trip_t_start_us[t]
        us_step = 1_000_000 // imu_hz
        us_remainder_step = 1_000_000 % imu_hz
        us_remainder = 0
        for k in range(imu_offsets[t + 1] - imu_offsets[t]):
            time_s = k * seconds_per_sample
            f = k * fine_per_sample
            i0 = int(f)
            w = f - i0
            if i0 >= n_fine - 1:
                i0 = n_fine - 1
                w = 0.0
            i1 = min(i0 + 1, n_fine - 1)
            v = (1.0 - w) * fine_speed_mps[f0 + i0] + w * fine_speed_mps[f0 + i1]
            a = (1.0 - w) * fine_accel_mps2[f0 + i0] + w * fine_accel_mps2[f0 + i1]
            curv = fine_curv_1pm[f0 + i0]
            fx = a
            fy = v * v * curv
            fz = GRAVITY_MPS2
            gx = 0.0
            gy = 0.0
            gz = v * curv
            state, n1 = normal(state)
            vib = 0.02 + 0.012 * v
            if walk:
                step_phase = 2.0 * np.pi * _STEP_HZ * time_s
                fz += 2.5 * np.sin(step_phase) + 0.3 * n1
                fx += 0.8 * np.sin(step_phase + 1.0)
                fy += 0.5 * np.sin(0.5 * step_phase)
                gx += 0.4 * np.sin(0.5 * step_phase)
                gy += 0.3 * np.sin(step_phase)
            else:
                fz += vib * n1
            noise_acc = 0.04
            noise_gyr = 0.004
            # Phone handling: into the hand, held, then put down (maybe elsewhere).
            wx = 0.0
            wy = 0.0
            wz = 0.0
            while e < e_end and time_s >= episode_end_s[e]:
                q_from[:] = episode_final_q[e]
                _quat_matrix(q_from[0], q_from[1], q_from[2], q_from[3], r_cur)
                e += 1
            if e < e_end and time_s >= episode_start_s[e]:
                into = time_s - episode_start_s[e]
                left = episode_end_s[e] - time_s
                if into < _HANDLING_TRANSITION_S:
                    ux, uy, uz, angle = _relative_axis_angle(q_from, episode_hold_q[e])
                    _quat_matrix(q_from[0], q_from[1], q_from[2], q_from[3], r_from)
                    _rotate_towards(r_from, ux, uy, uz, angle * into / _HANDLING_TRANSITION_S, r_cur)
                    rate = angle / _HANDLING_TRANSITION_S
                elif left < _HANDLING_TRANSITION_S:
                    qh = episode_hold_q[e]
                    ux, uy, uz, angle = _relative_axis_angle(qh, episode_final_q[e])
                    _quat_matrix(qh[0], qh[1], qh[2], qh[3], r_from)
                    _rotate_towards(r_from, ux, uy, uz,
                                    angle * (1.0 - left / _HANDLING_TRANSITION_S), r_cur)
                    rate = angle / _HANDLING_TRANSITION_S
                else:
                    qh = episode_hold_q[e]
                    _quat_matrix(qh[0], qh[1], qh[2], qh[3], r_cur)
                    ux = 0.0
                    uy = 0.0
                    uz = 0.0
                    rate = 0.0
                    noise_acc = 0.3
                    noise_gyr = 0.15
                wx = ux * rate
                wy = uy * rate
                wz = uz * rate
            state, n1 = normal(state)
            state, n2 = normal(state)
            state, n3 = normal(state)
            j = imu_offsets[t] + k
            out_t_s[j] = t_us / 1e6
            t_us += us_step
            us_remainder += us_remainder_step
            if us_remainder >= imu_hz:
                us_remainder -= imu_hz
                t_us += 1
            out_acc_x[j] = r_cur[0, 0] * fx + r_cur[1, 0] * fy + r_cur[2, 0] * fz + bax + noise_acc * n1
            out_acc_y[j] = r_cur[0, 1] * fx + r_cur[1, 1] * fy + r_cur[2, 1] * fz + bay + noise_acc * n2
            out_acc_z[j] = r_cur[0, 2] * fx + r_cur[1, 2] * fy + r_cur[2, 2] * fz + baz + noise_acc * n3
            state, n1 = normal(state)
            state, n2 = normal(state)
            state, n3 = normal(state)
            out_gyr_x[j] = r_cur[0, 0] * gx + r_cur[1, 0] * gy + r_cur[2, 0] * gz + wx + bgx + noise_gyr * n1
            out_gyr_y[j] = r_cur[0, 1] * gx + r_cur[1, 1] * gy + r_cur[2, 1] * gz + wy + bgy + noise_gyr * n2
            out_gyr_z[j] = r_cur[0, 2] * gx + r_cur[1, 2] * gy + r_cur[2, 2] * gz + wz + bgz + noise_gyr * n3


@serial_kernel
def _geodetic_many(x_m: np.ndarray, y_m: np.ndarray, lat0_deg: np.ndarray, lon0_deg: np.ndarray,
                   out_lat_deg: np.ndarray, out_lon_deg: np.ndarray) -> None:
    for k in range(x_m.shape[0]):
        m0, dlnm, n0, dlnn = _frame_constants(lat0_deg[k])
        out_lat_deg[k], out_lon_deg[k] = _local_to_geodetic(
            x_m[k], y_m[k], lat0_deg[k], lon0_deg[k], m0, dlnm, n0, dlnn)
