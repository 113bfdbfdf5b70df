"""Kernels against slow, obviously correct references and hand-checkable cases."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy import stats

from simulator import _motion_kernels as mk
from simulator._policy_kernels import _gamma, _poisson
from simulator._rng import normal, uniform
from simulator._route_kernels import END_DESTINATION, END_MID_EDGE
from simulator._sensor_kernels import _quat_matrix, _relative_axis_angle, _rotate_towards
from simulator.motion import simulate_motion
from simulator.routes import RoutePieces
from simulator.sensors import geodetic


@numba.njit
def _draw(kind: int, n: int, parameter: float, seed: np.uint64) -> np.ndarray:
    out = np.empty(n)
    state = seed
    for i in range(n):
        if kind == 0:
            state, out[i] = normal(state)
        elif kind == 1:
            state, out[i] = uniform(state)
        elif kind == 2:
            state, k = _poisson(state, parameter)
            out[i] = k
        else:
            state, out[i] = _gamma(state, parameter)
    return out


def test_fast_normal_and_uniform_deviates() -> None:
    x = _draw(0, 200_000, 0.0, np.uint64(1))
    assert abs(x.mean()) < 0.01 and abs(x.var() - 1.0) < 0.01 and np.abs(x).max() <= 2.0 * np.sqrt(3.0)
    u = _draw(1, 200_000, 0.0, np.uint64(2))
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.005


@pytest.mark.parametrize("lam", [0.05, 3.0, 40.0, 700.0])
def test_poisson_sampler_matches_the_distribution(lam: float) -> None:
    k = _draw(2, 100_000, lam, np.uint64(3))
    assert np.all(k == np.round(k)) and k.min() >= 0
    assert k.mean() == pytest.approx(lam, rel=0.02, abs=0.003)
    assert k.var() == pytest.approx(lam, rel=0.05, abs=0.005)
    if lam == 3.0:
        observed = np.bincount(k.astype(np.int64), minlength=12)[:12]
        expected = stats.poisson.pmf(np.arange(12), lam) * k.shape[0]
        assert np.abs(observed - expected).max() < 5.0 * np.sqrt(expected.max())


@pytest.mark.parametrize("shape", [0.4, 1.5, 30.0])
def test_gamma_sampler_matches_the_distribution(shape: float) -> None:
    g = _draw(3, 100_000, shape, np.uint64(4))
    assert g.min() > 0.0
    assert g.mean() == pytest.approx(shape, rel=0.02)
    assert g.var() == pytest.approx(shape, rel=0.06)


def test_local_frame_keeps_lengths() -> None:
    """100 m steps anywhere in a region stay 100 m on the WGS84 ellipsoid (local radii)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-40_000.0, 40_000.0, 500)
    y = rng.uniform(-40_000.0, 40_000.0, 500)
    angle = rng.uniform(0.0, 2.0 * np.pi, 500)
    lat0 = np.full(500, 52.0)
    lon0 = np.full(500, 5.0)
    lat_a, lon_a = geodetic(x, y, lat0, lon0)
    lat_b, lon_b = geodetic(x + 100.0 * np.cos(angle), y + 100.0 * np.sin(angle), lat0, lon0)
    a, e2 = 6378137.0, 6.69437999014e-3
    phi = np.radians(0.5 * (lat_a + lat_b))
    w = 1.0 - e2 * np.sin(phi) ** 2
    north = a * (1.0 - e2) / w**1.5 * np.radians(lat_b - lat_a)
    east = a / np.sqrt(w) * np.cos(phi) * np.radians(lon_b - lon_a)
    np.testing.assert_allclose(np.hypot(north, east), 100.0, rtol=3e-5)
    lat_c, lon_c = geodetic(np.zeros(1), np.zeros(1), lat0[:1], lon0[:1])
    assert (lat_c[0], lon_c[0]) == (52.0, 5.0)


def _straight_trip(length_m: float, limit_mps: float, mode: int) -> tuple[RoutePieces, np.ndarray]:
    pieces = RoutePieces(
        offsets=np.array([0, 2], dtype=np.int64), len_m=np.array([0.4 * length_m, 0.6 * length_m]),
        curv_1pm=np.zeros(2), x0_m=np.array([0.0, 0.4 * length_m]), y0_m=np.zeros(2),
        h0_rad=np.zeros(2), limit_mps=np.full(2, limit_mps), road_class=np.zeros(2, dtype=np.int64),
        tunnel=np.zeros(2, dtype=np.int8), end_kind=np.array([END_MID_EDGE, END_DESTINATION]),
        turn_rad=np.zeros(2))
    params = np.zeros((1, mk.N_PARAMS))
    params[0, mk.P_CRUISE_FACTOR] = 1.0
    params[0, mk.P_ACCEL_MAX_MPS2] = 1.5
    params[0, mk.P_BRAKE_PLAN_MPS2] = 1.2
    params[0, mk.P_LATERAL_COMFORT_MPS2] = 2.0
    params[0, mk.P_JERK_MPS3] = 2.0
    params[0, mk.P_PRE_ROLL_S] = 10
    params[0, mk.P_POST_ROLL_S] = 20
    params[0, mk.P_SPEED_CAP_MPS] = 1.4
    return pieces, params


@pytest.mark.parametrize("mode", [mk.MODE_CAR_DRIVER, mk.MODE_WALK])
def test_a_straight_trip_by_hand(mode: int) -> None:
    """1 km at 50 km/h: moves off after the pre-roll, cruises at the limit, stops at the end."""
    pieces, params = _straight_trip(1000.0, 50.0 / 3.6, mode)
    motion = simulate_motion(pieces, np.array([mode]), params, np.array([7], dtype=np.uint64),
                             fine=True, estimated_s=10.0)
    speed = motion.speed_mps
    cap = 1.4 if mode == mk.MODE_WALK else 50.0 / 3.6 + 1e-9
    assert motion.trip_dist_m[0] == pytest.approx(1000.0, abs=1e-9)
    assert motion.drive_start_s[0] == pytest.approx(10.0)
    assert np.all(speed[:10] == 0.0) and np.all(speed[-20:] == 0.0)
    assert speed.max() <= cap
    assert speed.max() >= 0.99 * cap
    assert motion.x_m[-1] == pytest.approx(1000.0) and np.all(np.diff(motion.x_m) >= 0.0)
    assert np.all(np.abs(motion.fine_accel_mps2) <= 2.5)
    np.testing.assert_allclose(motion.dist_m, motion.x_m)
    # The fine rows integrate to the same distance (trapezoids of 1 / STEPS_PER_S s).
    v = motion.fine_speed_mps
    assert 0.5 * (v[1:] + v[:-1]).sum() / mk.STEPS_PER_S == pytest.approx(1000.0, rel=1e-3)


@numba.njit
def _turn_residual(qa: np.ndarray, qb: np.ndarray) -> float:
    ra = np.empty((3, 3))
    rb = np.empty((3, 3))
    turned = np.empty((3, 3))
    _quat_matrix(qa[0], qa[1], qa[2], qa[3], ra)
    _quat_matrix(qb[0], qb[1], qb[2], qb[3], rb)
    ux, uy, uz, angle = _relative_axis_angle(qa, qb)
    _rotate_towards(ra, ux, uy, uz, angle, turned)
    return float(np.abs(turned - rb).max())


def test_handling_rotation_ends_exactly_at_the_target_orientation() -> None:
    """Rotating from one orientation about the body axis by the angle reaches the other."""
    rng = np.random.default_rng(5)
    for _ in range(100):
        qa, qb = rng.standard_normal((2, 4))
        assert _turn_residual(qa / np.linalg.norm(qa), qb / np.linalg.norm(qb)) < 1e-12
