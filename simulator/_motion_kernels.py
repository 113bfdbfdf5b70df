"""numba kernel integrating each trip's longitudinal motion along its route pieces at 5 Hz.

A driver model tracks a target speed: the piece's cap (limit times the driver's cruise factor,
curve speed from the comfortable lateral acceleration) and a braking envelope towards the
next stop, with jerk-limited acceleration. Harsh braking and acceleration, speeding episodes,
phone handling and hands-free calls arrive at the driver's own rates (per metre or second);
harsh cornering is decided per eligible turn. Truth events are recorded from the kinematics.
"""

from __future__ import annotations

import numpy as np

from simulator._jit import serial_kernel
from simulator._rng import exponential, uniform
from simulator._route_kernels import (
    END_DESTINATION,
    END_LIGHT,
    END_NODE,
    END_STATION,
    END_STOP_SIGN,
    END_WAYPOINT,
)

DT_S = 0.2
STEPS_PER_S = 5

MODE_CAR_DRIVER, MODE_CAR_PASSENGER, MODE_BUS, MODE_TRAIN, MODE_WALK = 0, 1, 2, 3, 4
MODES: tuple[str, ...] = ("car_driver", "car_passenger", "bus", "train", "walk")

KIND_BRAKING, KIND_ACCELERATION, KIND_CORNERING = 0, 1, 2
KIND_SPEEDING, KIND_PHONE_HANDLING, KIND_HANDS_FREE_CALL = 3, 4, 5
EVENT_KINDS: tuple[str, ...] = (
    "braking", "acceleration", "cornering", "speeding", "phone_handling", "hands_free_call",
)

PHASE_PRE, PHASE_DRIVE, PHASE_POST = 0, 1, 2

# Columns of the per-trip parameter matrix.
P_CRUISE_FACTOR = 0
P_ACCEL_MAX_MPS2 = 1
P_BRAKE_PLAN_MPS2 = 2
P_LATERAL_COMFORT_MPS2 = 3
P_JERK_MPS3 = 4
P_BRAKE_RATE_PER_M = 5
P_ACCEL_RATE_PER_M = 6
P_CORNER_RATE_PER_M = 7
P_SPEEDING_RATE_PER_M = 8
P_SPEEDING_EXCESS_MPS = 9
P_PHONE_RATE_PER_S = 10
P_CALL_RATE_PER_S = 11
P_PRE_ROLL_S = 12
P_POST_ROLL_S = 13
P_SPEED_CAP_MPS = 14
N_PARAMS = 15

# DESIGN.md thresholds the truth refers to.
SPEEDING_MARGIN_MPS = 8.0 / 3.6
HARSH_LATERAL_MPS2 = 3.6
HARSH_TURN_RAD = np.pi / 6.0
CORNER_MIN_SPEED_MPS = 18.0 / 3.6

_HARSH_JERK_MPS3 = 14.0
_FEEDBACK_PER_S = 0.8
_TOP_SPEED_MPS = 60.0


@serial_kernel
def _mode_dynamics(mode: int, params: np.ndarray) -> tuple[float, float, float, float, float]:
    """(accel_max, brake_plan, brake_hard, jerk, lateral_comfort) of a trip's vehicle."""
    if mode == MODE_BUS:
        return 1.0, 0.9, 1.6, 1.0, 1.2
    if mode == MODE_TRAIN:
        return 0.45, 0.5, 0.9, 0.3, 0.8
    if mode == MODE_WALK:
        return 0.6, 0.5, 1.0, 2.0, 2.0
    return (params[P_ACCEL_MAX_MPS2], params[P_BRAKE_PLAN_MPS2], 2.5, params[P_JERK_MPS3],
            params[P_LATERAL_COMFORT_MPS2])


@serial_kernel
def _plan_trip(
    mode: int, params: np.ndarray, p0: int, p1: int, len_m: np.ndarray, curv_1pm: np.ndarray,
    limit_mps: np.ndarray, end_kind: np.ndarray, turn_rad: np.ndarray, state: np.uint64,
    cap_norm: np.ndarray, cap_speed: np.ndarray, env_norm: np.ndarray, env_speed: np.ndarray,
    dwell_steps: np.ndarray, stop_after: np.ndarray, corner_peak: np.ndarray,
    to_stop_m: np.ndarray,
) -> np.uint64:
    """Per-piece caps, stops and braking envelopes (value at each piece's end) of one trip."""
    n = p1 - p0
    _, brake_plan, _, _, lateral_comfort = _mode_dynamics(mode, params)
    is_car = mode == MODE_CAR_DRIVER or mode == MODE_CAR_PASSENGER
    eligible = 0
    route_m = 0.0
    for j in range(n):
        i = p0 + j
        route_m += len_m[i]
        lim = limit_mps[i]
        if mode == MODE_WALK or mode == MODE_TRAIN:
            cruise = min(params[P_SPEED_CAP_MPS], lim) if mode == MODE_TRAIN else params[P_SPEED_CAP_MPS]
        elif mode == MODE_BUS:
            cruise = 0.95 * min(lim, params[P_SPEED_CAP_MPS])
        else:
            cruise = min(lim * params[P_CRUISE_FACTOR], lim + 1.1)
        curve = np.sqrt(lateral_comfort / abs(curv_1pm[i])) if curv_1pm[i] != 0.0 else 1.0e9
        cap_norm[j] = min(cruise, curve)
        cap_speed[j] = min(lim + params[P_SPEEDING_EXCESS_MPS], curve) if is_car else cap_norm[j]
        corner_peak[j] = 0.0
        kind = end_kind[i]
        dwell = 0.0
        stop = False
        state, u = uniform(state)
        if kind == END_DESTINATION:
            stop = True
        elif mode == MODE_TRAIN:
            if kind == END_STATION:
                stop = True
                dwell = 40.0 + 50.0 * u
        elif kind == END_LIGHT and u < 0.45:
            stop = True
            dwell = 5.0 + 40.0 * (u / 0.45)
        elif kind == END_STOP_SIGN and mode != MODE_WALK:
            stop = True
            dwell = 0.5 + 2.0 * u
        elif kind == END_WAYPOINT:
            stop = True
            dwell = 5.0 + 55.0 * u  # a stop-over short of a break (pick-up, look around)
        if mode == MODE_BUS and kind >= END_NODE and kind != END_DESTINATION:
            state, u = uniform(state)
            # A bus stop at most junctions: every 300-600 m in a city.
            if u < 0.6:
                stop = True
                dwell = max(dwell, 10.0 + 20.0 * u / 0.6)
        stop_after[j] = stop
        dwell_steps[j] = int(dwell * STEPS_PER_S)
        if is_car and turn_rad[i] >= 0.7 and (j == 0 or not stop_after[j - 1]):
            eligible += 1
    if is_car and eligible > 0:
        chance = params[P_CORNER_RATE_PER_M] * route_m / eligible
        for j in range(n):
            i = p0 + j
            if turn_rad[i] >= 0.7 and (j == 0 or not stop_after[j - 1]):
                state, u = uniform(state)
                if u < chance:
                    state, w = uniform(state)
                    peak = min(4.4 + 1.6 * w, limit_mps[i] ** 2 * abs(curv_1pm[i]))
                    if peak >= 4.3:
                        corner_peak[j] = peak
                        cap_norm[j] = np.sqrt(peak / abs(curv_1pm[i]))
                        cap_speed[j] = cap_norm[j]
    next_norm = 0.0
    next_speed = 0.0
    next_stop_m = 0.0
    for j in range(n - 1, -1, -1):
        if stop_after[j]:
            next_norm = 0.0
            next_speed = 0.0
            next_stop_m = 0.0
        env_norm[j] = next_norm
        env_speed[j] = next_speed
        to_stop_m[j] = next_stop_m
        length = len_m[p0 + j]
        next_norm = min(cap_norm[j], np.sqrt(next_norm**2 + 2.0 * brake_plan * length))
        next_speed = min(cap_speed[j], np.sqrt(next_speed**2 + 2.0 * brake_plan * length))
        next_stop_m += length
    return state


@serial_kernel
def _emit(ev_trip: np.ndarray, ev_kind: np.ndarray, ev_start_step: np.ndarray,
          ev_end_step: np.ndarray, ev_peak: np.ndarray, ev_speed_mps: np.ndarray, pos: int,
          trip: int, kind: int, start: int, end: int, peak: float, speed: float) -> int:
    """Write one truth event at ``pos``; returns the next position, or -1 when full."""
    if pos >= ev_kind.shape[0]:
        return -1
    ev_trip[pos] = trip
    ev_kind[pos] = kind
    ev_start_step[pos] = start
    ev_end_step[pos] = end
    ev_peak[pos] = peak
    ev_speed_mps[pos] = speed
    return pos + 1


@serial_kernel
def _position(x0: float, y0: float, h0: float, curv: float, u: float) -> tuple[float, float, float]:
    if curv == 0.0:
        return x0 + u * np.cos(h0), y0 + u * np.sin(h0), h0
    h = h0 + curv * u
    return x0 + (np.sin(h) - np.sin(h0)) / curv, y0 - (np.cos(h) - np.cos(h0)) / curv, h


@serial_kernel
def _simulate_motion(
    first_trip: int, trip_mode: np.ndarray, trip_params: np.ndarray, trip_seed: np.ndarray,
    piece_offsets: np.ndarray, len_m: np.ndarray, curv_1pm: np.ndarray, x0_m: np.ndarray,
    y0_m: np.ndarray, h0_rad: np.ndarray, limit_mps: np.ndarray, road_class: np.ndarray,
    tunnel: np.ndarray, end_kind: np.ndarray, turn_rad: np.ndarray, write_fine: bool,
    cursor: np.ndarray, sec_offsets: np.ndarray, fine_offsets: np.ndarray,
    trip_drive_start_s: np.ndarray, trip_drive_end_s: np.ndarray, trip_dist_m: np.ndarray,
    out_dist_m: np.ndarray, out_speed_mps: np.ndarray, out_accel_mps2: np.ndarray,
    out_lat_accel_mps2: np.ndarray, out_x_m: np.ndarray, out_y_m: np.ndarray,
    out_heading_rad: np.ndarray, out_limit_mps: np.ndarray, out_class: np.ndarray,
    out_tunnel: np.ndarray, out_phase: np.ndarray, fine_speed_mps: np.ndarray,
    fine_accel_mps2: np.ndarray, fine_curv_1pm: np.ndarray, ev_trip: np.ndarray,
    ev_kind: np.ndarray, ev_start_step: np.ndarray, ev_end_step: np.ndarray,
    ev_peak: np.ndarray, ev_speed_mps: np.ndarray,
) -> int:
    """Simulate trips from ``first_trip`` on; returns the first trip that did not fit the outputs.

    ``cursor`` holds the next free row of the 1 Hz, fine (5 Hz) and event outputs and is advanced only
    after a whole trip was written, so the caller can grow the outputs and resume.
    """
    n_trips = trip_mode.shape[0]
    max_pieces = 1
    for t in range(n_trips):
        max_pieces = max(max_pieces, piece_offsets[t + 1] - piece_offsets[t])
    cap_norm = np.empty(max_pieces)
    cap_speed = np.empty(max_pieces)
    env_norm = np.empty(max_pieces)
    env_speed = np.empty(max_pieces)
    dwell_steps = np.empty(max_pieces, dtype=np.int64)
    stop_after = np.empty(max_pieces, dtype=np.bool_)
    corner_peak = np.empty(max_pieces)
    to_stop_m = np.empty(max_pieces)
    sec_cap = out_speed_mps.shape[0]
    fine_cap = fine_speed_mps.shape[0]
    for t in range(first_trip, n_trips):
        mode = trip_mode[t]
        params = trip_params[t]
        is_car = mode == MODE_CAR_DRIVER or mode == MODE_CAR_PASSENGER
        p0 = piece_offsets[t]
        p1 = piece_offsets[t + 1]
        state = trip_seed[t]
        state = _plan_trip(mode, params, p0, p1, len_m, curv_1pm, limit_mps, end_kind, turn_rad,
                           state, cap_norm, cap_speed, env_norm, env_speed, dwell_steps,
                           stop_after, corner_peak, to_stop_m)
        accel_max, brake_plan, brake_hard, jerk, _ = _mode_dynamics(mode, params)
        sec_pos = cursor[0]
        fine_pos = cursor[1]
        ev_pos = cursor[2]
        pre_steps = int(params[P_PRE_ROLL_S]) * STEPS_PER_S
        post_steps = int(params[P_POST_ROLL_S]) * STEPS_PER_S
        # Distances (and times) until the next pending event of each kind.
        state, draw = exponential(state)
        next_brake_m = draw / max(params[P_BRAKE_RATE_PER_M], 1e-12)
        state, draw = exponential(state)
        next_accel_m = draw / max(params[P_ACCEL_RATE_PER_M], 1e-12)
        state, draw = exponential(state)
        next_speeding_m = draw / max(params[P_SPEEDING_RATE_PER_M], 1e-12)
        state, draw = exponential(state)
        next_phone_s = draw / max(params[P_PHONE_RATE_PER_S], 1e-12)
        state, draw = exponential(state)
        next_call_s = draw / max(params[P_CALL_RATE_PER_S], 1e-12)
        state, brake_peak = uniform(state)
        brake_peak = 3.7 + 2.1 * brake_peak
        state, brake_hold = uniform(state)
        brake_hold = 1.1 + 0.9 * brake_hold
        state, accel_peak = uniform(state)
        accel_peak = 3.4 + 1.4 * accel_peak
        state, accel_hold = uniform(state)
        accel_hold = 1.1 + 0.9 * accel_hold

        j = 0  # piece index within the trip
        piece_start = 0.0
        s = 0.0
        v = 0.0
        a = 0.0
        phase = PHASE_PRE
        dwell_left = -1
        post_left = post_steps
        drive_start_step = pre_steps
        drive_end_step = pre_steps
        ev_state = 0
        ev_started = 0
        ev_hold_end = 0
        ev_peak_value = 0.0
        ev_speed_start = 0.0
        speeding_until = -1
        phone_until = -1
        call_until = -1
        run_start = -1
        run_last = -1
        run_peak = 0.0
        corner_piece = -1
        corner_start = 0
        corner_peak_v = 0.0  # speed at the turn's largest lateral above 18 km/h
        corner_max = 0.0
        step = 0
        overflow = False
        while True:
            i = p0 + j
            curv = curv_1pm[i]
            if step % STEPS_PER_S == 0:
                k = sec_pos
                if k >= sec_cap:
                    overflow = True
                    break
                x, y, h = _position(x0_m[i], y0_m[i], h0_rad[i], curv, s - piece_start)
                out_dist_m[k] = s
                out_speed_mps[k] = v
                out_accel_mps2[k] = a
                out_lat_accel_mps2[k] = v * v * curv
                out_x_m[k] = x
                out_y_m[k] = y
                out_heading_rad[k] = h
                out_limit_mps[k] = limit_mps[i]
                out_class[k] = road_class[i]
                out_tunnel[k] = tunnel[i]
                out_phase[k] = phase
                sec_pos += 1
            if write_fine:
                if fine_pos >= fine_cap:
                    overflow = True
                    break
                fine_speed_mps[fine_pos] = v
                fine_accel_mps2[fine_pos] = a
                fine_curv_1pm[fine_pos] = curv
                fine_pos += 1
            # Standing still (parked, or waiting with nothing due): whole seconds in one step.
            standing = step % STEPS_PER_S == 0 and (
                (phase == PHASE_POST and post_left >= STEPS_PER_S)
                or (phase == PHASE_PRE and step + STEPS_PER_S < pre_steps)
                or (phase == PHASE_DRIVE and dwell_left > STEPS_PER_S
                    and (step - pre_steps) * DT_S + 1.0 < min(next_phone_s, next_call_s)))
            if standing:
                if write_fine:
                    if fine_pos + STEPS_PER_S - 1 > fine_cap:
                        overflow = True
                        break
                    for _ in range(STEPS_PER_S - 1):
                        fine_speed_mps[fine_pos] = 0.0
                        fine_accel_mps2[fine_pos] = 0.0
                        fine_curv_1pm[fine_pos] = curv
                        fine_pos += 1
                if phase == PHASE_POST:
                    post_left -= STEPS_PER_S
                elif phase == PHASE_DRIVE:
                    dwell_left -= STEPS_PER_S
                step += STEPS_PER_S
                continue
            if phase == PHASE_POST:
                if post_left <= 0 and step % STEPS_PER_S == 0:
                    break
                post_left -= 1
                step += 1
                continue
            if phase == PHASE_PRE:
                if step + 1 >= pre_steps:
                    phase = PHASE_DRIVE
                step += 1
                continue

            # Phone handling and hands-free calls, by time (also while stopped).
            t_s = (step - pre_steps) * DT_S
            if phone_until < 0 and call_until < 0 and t_s >= next_phone_s:
                state, u = uniform(state)
                phone_until = step + int((4.0 + 36.0 * u) * STEPS_PER_S)
                ev_pos = _emit(ev_trip, ev_kind, ev_start_step, ev_end_step, ev_peak, ev_speed_mps,
                               ev_pos, t, KIND_PHONE_HANDLING, step, phone_until,
                               np.nan, v)
                if ev_pos < 0:
                    overflow = True
                    break
                state, draw = exponential(state)
                next_phone_s = (phone_until - pre_steps) * DT_S + draw / max(params[P_PHONE_RATE_PER_S], 1e-12)
            if phone_until >= 0 and step >= phone_until:
                phone_until = -1
            if call_until < 0 and phone_until < 0 and t_s >= next_call_s:
                state, u = uniform(state)
                call_until = step + int((30.0 + 270.0 * u) * STEPS_PER_S)
                ev_pos = _emit(ev_trip, ev_kind, ev_start_step, ev_end_step, ev_peak, ev_speed_mps,
                               ev_pos, t, KIND_HANDS_FREE_CALL, step, call_until,
                               np.nan, v)
                if ev_pos < 0:
                    overflow = True
                    break
                state, draw = exponential(state)
                next_call_s = (call_until - pre_steps) * DT_S + draw / max(params[P_CALL_RATE_PER_S], 1e-12)
            if call_until >= 0 and step >= call_until:
                call_until = -1

            if dwell_left >= 0:
                v = 0.0
                a = 0.0
                if dwell_left == 0:
                    dwell_left = -1
                    if j == p1 - p0 - 1:
                        phase = PHASE_POST
                        drive_end_step = step
                    else:
                        piece_start += len_m[i]
                        j += 1
                        if turn_rad[p0 + j] > HARSH_TURN_RAD:  # a turn out of a junction
                            corner_piece = j
                            corner_start = step
                            corner_peak_v = 0.0
                            corner_max = 0.0
                else:
                    dwell_left -= 1
                step += 1
                continue

            speeding = speeding_until >= step
            cap = cap_speed[j] if speeding else cap_norm[j]
            env = env_speed[j] if speeding else env_norm[j]
            remaining = piece_start + len_m[i] - s
            v_env = np.sqrt(env * env + 2.0 * brake_plan * max(remaining, 0.0))
            if v_env < cap:
                target = v_env
                feed_forward = -brake_plan * v / max(v_env, 0.5)
            else:
                target = cap
                feed_forward = 0.0
            cruising = v_env >= cap - 0.5
            a_avail = accel_max * max(0.25, 1.0 - v / _TOP_SPEED_MPS)
            a_des = min(max(feed_forward + _FEEDBACK_PER_S * (target - v), -brake_hard), a_avail)
            to_stop = remaining + to_stop_m[j]

            if (step % STEPS_PER_S == 0 and ev_state == 0 and a == 0.0 and v == cap and v > 0.0
                    and corner_peak[j] == 0.0 and remaining - v > 0.5
                    and env * env + 2.0 * brake_plan * (remaining - v) >= cap * cap
                    and t_s + 1.0 < next_phone_s and t_s + 1.0 < next_call_s
                    and (not is_car or (s + v < next_brake_m and s + v < next_accel_m
                                        and (speeding_until >= step + STEPS_PER_S
                                             or (speeding_until < step and s + v < next_speeding_m))))):
                # Steady cruise with nothing due: the whole next second is v * 1 s of road at
                # zero acceleration, so take it in one step (the same with or without fine output).
                if write_fine:
                    if fine_pos + STEPS_PER_S - 1 > fine_cap:
                        overflow = True
                        break
                    for _ in range(STEPS_PER_S - 1):
                        fine_speed_mps[fine_pos] = v
                        fine_accel_mps2[fine_pos] = 0.0
                        fine_curv_1pm[fine_pos] = curv
                        fine_pos += 1
                last = step + STEPS_PER_S - 1
                excess = v - limit_mps[i]
                if is_car and excess > SPEEDING_MARGIN_MPS:
                    if run_start < 0:
                        run_start = step
                        run_peak = 0.0
                    run_last = last
                    run_peak = max(run_peak, excess)
                elif run_start >= 0 and last - run_last > 5 * STEPS_PER_S:
                    if run_last - run_start >= 10 * STEPS_PER_S:
                        ev_pos = _emit(ev_trip, ev_kind, ev_start_step, ev_end_step, ev_peak,
                                       ev_speed_mps, ev_pos, t, KIND_SPEEDING, run_start, run_last,
                                       run_peak, np.nan)
                        if ev_pos < 0:
                            overflow = True
                            break
                    run_start = -1
                if corner_piece == j and v > CORNER_MIN_SPEED_MPS and v * v * abs(curv) > corner_max:
                    corner_max = v * v * abs(curv)
                    corner_peak_v = v
                s += v
                step += STEPS_PER_S
                continue

            if is_car and ev_state == 0 and corner_peak[j] == 0.0:
                if s >= next_brake_m:
                    hold = min(brake_hold, (v - 3.0) / brake_peak - 0.4)
                    if hold >= 1.1 and cruising and to_stop >= 60.0 + v * v / (2.0 * brake_plan):
                        ev_state = 1
                        ev_started = step
                        ev_hold_end = step + int((hold + 0.3) * STEPS_PER_S)
                        ev_peak_value = brake_peak
                        ev_speed_start = v
                elif s >= next_accel_m:
                    hold = min(accel_hold, (cap + 2.5 - v) / accel_peak)
                    v_after = v + accel_peak * (hold + 0.3)
                    if (hold >= 1.1 and cruising and a >= -0.2
                            and to_stop >= v_after * v_after / (2.0 * brake_plan) + 40.0):
                        ev_state = 3
                        ev_started = step
                        ev_hold_end = step + int((hold + 0.3) * STEPS_PER_S)
                        ev_peak_value = accel_peak
                        ev_speed_start = v
                if (speeding_until < step and s >= next_speeding_m and cruising
                        and limit_mps[i] >= 8.0):
                    state, u = uniform(state)
                    speeding_until = step + int((20.0 + 130.0 * u) * STEPS_PER_S)
                    state, draw = exponential(state)
                    next_speeding_m = s + draw / max(params[P_SPEEDING_RATE_PER_M], 1e-12)

            j_lim = jerk
            if ev_state == 1:
                a_des = -ev_peak_value
                j_lim = _HARSH_JERK_MPS3
                if step >= ev_hold_end or v < 2.5:
                    ev_state = 2
            elif ev_state == 3:
                a_des = ev_peak_value
                j_lim = _HARSH_JERK_MPS3
                if step >= ev_hold_end or v > cap + 3.0:
                    ev_state = 4
            elif ev_state == 2 or ev_state == 4:
                j_lim = _HARSH_JERK_MPS3
                if (ev_state == 2 and a > -1.5) or (ev_state == 4 and a < 1.5):
                    ev_pos = _emit(ev_trip, ev_kind, ev_start_step, ev_end_step, ev_peak, ev_speed_mps,
                                   ev_pos, t, KIND_BRAKING if ev_state == 2 else KIND_ACCELERATION, ev_started, step,
                                   -ev_peak_value if ev_state == 2 else ev_peak_value, ev_speed_start)
                    if ev_pos < 0:
                        overflow = True
                        break
                    if ev_state == 2:
                        state, draw = exponential(state)
                        next_brake_m = s + draw / max(params[P_BRAKE_RATE_PER_M], 1e-12)
                        state, brake_peak = uniform(state)
                        brake_peak = 3.7 + 2.1 * brake_peak
                        state, brake_hold = uniform(state)
                        brake_hold = 1.1 + 0.9 * brake_hold
                    else:
                        state, draw = exponential(state)
                        next_accel_m = s + draw / max(params[P_ACCEL_RATE_PER_M], 1e-12)
                        state, accel_peak = uniform(state)
                        accel_peak = 3.4 + 1.4 * accel_peak
                        state, accel_hold = uniform(state)
                        accel_hold = 1.1 + 0.9 * accel_hold
                    ev_state = 0

            a += min(max(a_des - a, -j_lim * DT_S), j_lim * DT_S)
            v_new = v + a * DT_S
            if v_new < 0.0:
                v_new = 0.0
                a = -v / DT_S if v > 0.0 else 0.0
            s += 0.5 * (v + v_new) * DT_S
            v = v_new
            if ev_state == 0 and target == cap and abs(v - cap) < 0.005 and abs(a) < 0.01:
                # Settle exactly on the cruise speed (a jerk step of at most 0.01 m/s^2 per step).
                v = cap
                a = 0.0

            # Truth of speeding: runs above limit + 8 km/h, gaps under 5 s merged, kept >= 10 s.
            excess = v - limit_mps[i]
            if is_car and excess > SPEEDING_MARGIN_MPS:
                if run_start < 0:
                    run_start = step
                    run_peak = 0.0
                run_last = step
                run_peak = max(run_peak, excess)
            elif run_start >= 0 and step - run_last > 5 * STEPS_PER_S:
                if run_last - run_start >= 10 * STEPS_PER_S:
                    ev_pos = _emit(ev_trip, ev_kind, ev_start_step, ev_end_step, ev_peak, ev_speed_mps,
                                   ev_pos, t, KIND_SPEEDING, run_start, run_last,
                                   run_peak, np.nan)
                    if ev_pos < 0:
                        overflow = True
                        break
                run_start = -1

            # Truth of cornering: a turn of > 30 deg whose lateral reaches 3.6 m/s^2 while above
            # 18 km/h (DESIGN section 6), so a hard turn out of a junction, entered slowly, counts.
            if corner_piece == j and v > CORNER_MIN_SPEED_MPS and v * v * abs(curv) > corner_max:
                corner_max = v * v * abs(curv)
                corner_peak_v = v

            remaining = piece_start + len_m[i] - s
            if stop_after[j] and (remaining <= 0.0 or (remaining < 1.5 and v < 0.4)):
                s = piece_start + len_m[i]
                v = 0.0
                a = 0.0
                dwell_left = dwell_steps[j]
            else:
                while remaining <= 0.0 and j < p1 - p0 - 1:
                    if corner_piece == j:
                        if corner_max >= HARSH_LATERAL_MPS2 and turn_rad[i] > HARSH_TURN_RAD:
                            ev_pos = _emit(ev_trip, ev_kind, ev_start_step, ev_end_step, ev_peak, ev_speed_mps,
                                           ev_pos, t, KIND_CORNERING, corner_start, step,
                                           corner_max, corner_peak_v)
                            if ev_pos < 0:
                                overflow = True
                                break
                        corner_piece = -1
                    piece_start += len_m[i]
                    j += 1
                    i = p0 + j
                    remaining = piece_start + len_m[i] - s
                    if turn_rad[i] > HARSH_TURN_RAD:
                        corner_piece = j
                        corner_start = step
                        corner_peak_v = v
                        corner_max = v * v * abs(curv_1pm[i]) if v > CORNER_MIN_SPEED_MPS else 0.0
                if overflow:
                    break
            step += 1
        if overflow:
            return t
        if run_start >= 0 and run_last - run_start >= 10 * STEPS_PER_S:
            ev_pos = _emit(ev_trip, ev_kind, ev_start_step, ev_end_step, ev_peak, ev_speed_mps,
                           ev_pos, t, KIND_SPEEDING, run_start, run_last,
                           run_peak, np.nan)
            if ev_pos < 0:
                return t
        sec_offsets[t + 1] = sec_pos
        fine_offsets[t + 1] = fine_pos
        trip_drive_start_s[t] = drive_start_step * DT_S
        trip_drive_end_s[t] = drive_end_step * DT_S
        trip_dist_m[t] = s
        cursor[0] = sec_pos
        cursor[1] = fine_pos
        cursor[2] = ev_pos
    return n_trips
