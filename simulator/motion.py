"""Vehicle (and pedestrian) motion of many trips along their routes: the kinematic truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator._motion_kernels import N_PARAMS, STEPS_PER_S, _simulate_motion
from simulator.routes import RoutePieces


@dataclass(frozen=True)
class Motion:
    """True motion: 1 Hz rows per trip (``sec_offsets``), optional fine rows (``STEPS_PER_S`` a second), truth events.

    Sample ``k`` of trip ``i`` is at ``trip start + k`` seconds (1 Hz) or ``+ k / STEPS_PER_S`` (fine rows).
    Event times are in fine steps from the trip start.
    """

    sec_offsets: np.ndarray
    dist_m: np.ndarray
    speed_mps: np.ndarray
    accel_mps2: np.ndarray
    lat_accel_mps2: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    heading_rad: np.ndarray
    limit_mps: np.ndarray
    road_class: np.ndarray
    tunnel: np.ndarray
    phase: np.ndarray
    fine_offsets: np.ndarray
    fine_speed_mps: np.ndarray
    fine_accel_mps2: np.ndarray
    fine_curv_1pm: np.ndarray
    drive_start_s: np.ndarray
    drive_end_s: np.ndarray
    trip_dist_m: np.ndarray
    event_trip: np.ndarray
    event_kind: np.ndarray
    event_start_step: np.ndarray
    event_end_step: np.ndarray
    event_peak: np.ndarray
    event_speed_mps: np.ndarray


_SEC_FLOAT = ("dist_m", "speed_mps", "accel_mps2", "lat_accel_mps2", "x_m", "y_m", "heading_rad",
              "limit_mps")
_SEC_INT8 = ("road_class", "tunnel", "phase")
_FINE = ("fine_speed_mps", "fine_accel_mps2", "fine_curv_1pm")
_EVENT = (("event_trip", np.int64), ("event_kind", np.int64), ("event_start_step", np.int64),
          ("event_end_step", np.int64), ("event_peak", np.float64), ("event_speed_mps", np.float64))


def _grow(buffers: dict[str, np.ndarray], names: tuple[str, ...], size: int) -> None:
    for name in names:
        old = buffers[name]
        new = np.empty(size, dtype=old.dtype)
        new[: old.shape[0]] = old
        buffers[name] = new


def simulate_motion(pieces: RoutePieces, mode: np.ndarray, params: np.ndarray, seed: np.ndarray,
                    *, fine: bool, estimated_s: float) -> Motion:
    """Integrate all trips; ``estimated_s`` (total seconds) sizes the outputs, which grow if short."""
    n_trips = pieces.offsets.shape[0] - 1
    mode = np.ascontiguousarray(mode, dtype=np.int64)
    params = np.ascontiguousarray(params, dtype=np.float64)
    seed = np.ascontiguousarray(seed, dtype=np.uint64)
    if mode.shape != (n_trips,) or seed.shape != (n_trips,) or params.shape != (n_trips, N_PARAMS):
        raise ValueError("mode, params and seed need one row per trip")
    sec_cap = max(int(estimated_s * 1.2), 1024)
    fine_cap = sec_cap * STEPS_PER_S if fine else 0
    buffers: dict[str, np.ndarray] = {name: np.empty(sec_cap) for name in _SEC_FLOAT}
    buffers.update({name: np.empty(sec_cap, dtype=np.int8) for name in _SEC_INT8})
    buffers.update({name: np.empty(fine_cap) for name in _FINE})
    ev_cap = max(n_trips * 4, 256)
    buffers.update({name: np.empty(ev_cap, dtype=dtype) for name, dtype in _EVENT})
    sec_offsets = np.zeros(n_trips + 1, dtype=np.int64)
    fine_offsets = np.zeros(n_trips + 1, dtype=np.int64)
    drive_start = np.empty(n_trips)
    drive_end = np.empty(n_trips)
    trip_dist = np.empty(n_trips)
    cursor = np.zeros(3, dtype=np.int64)
    first = 0
    while True:
        b = buffers
        first = _simulate_motion(
            first, mode, params, seed, pieces.offsets, pieces.len_m, pieces.curv_1pm,
            pieces.x0_m, pieces.y0_m, pieces.h0_rad, pieces.limit_mps, pieces.road_class,
            pieces.tunnel, pieces.end_kind, pieces.turn_rad, fine, cursor, sec_offsets,
            fine_offsets, drive_start, drive_end, trip_dist, b["dist_m"], b["speed_mps"],
            b["accel_mps2"], b["lat_accel_mps2"], b["x_m"], b["y_m"], b["heading_rad"],
            b["limit_mps"], b["road_class"], b["tunnel"], b["phase"], b["fine_speed_mps"],
            b["fine_accel_mps2"], b["fine_curv_1pm"], b["event_trip"], b["event_kind"],
            b["event_start_step"], b["event_end_step"], b["event_peak"], b["event_speed_mps"],
        )
        if first == n_trips:
            break
        # Grow whatever may have run out; the kernel resumes at the trip that did not fit.
        _grow(buffers, _SEC_FLOAT + _SEC_INT8, 2 * buffers["speed_mps"].shape[0])
        if fine:
            _grow(buffers, _FINE, 2 * buffers["fine_speed_mps"].shape[0])
        _grow(buffers, tuple(name for name, _ in _EVENT), 2 * buffers["event_kind"].shape[0])
    n_sec, n_fine, n_ev = (int(c) for c in cursor)
    sec = {name: buffers[name][:n_sec] for name in _SEC_FLOAT + _SEC_INT8}
    fine_arrays = {name: buffers[name][:n_fine] for name in _FINE}
    events = {name: buffers[name][:n_ev] for name, _ in _EVENT}
    return Motion(sec_offsets=sec_offsets, fine_offsets=fine_offsets, drive_start_s=drive_start,
                  drive_end_s=drive_end, trip_dist_m=trip_dist, **sec, **fine_arrays, **events)
