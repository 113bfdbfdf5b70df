import numpy as np
import pytest
from naive import kinematics as naive_kinematics
from tracks import circle, track

from telematics.core.kinematics import compute_kinematics
from telematics.core.params import GpsParams

P = GpsParams()


def _kin(tr, speed=True):
    return compute_kinematics(tr["t_s"], tr["lat_deg"], tr["lon_deg"],
                              tr["speed_mps"] if speed else None)


def test_100_m_east_in_10_s_is_10_mps():
    k = _kin(track(np.full(10, 10.0)), speed=False)
    assert k.dist_m.sum() == pytest.approx(100.0, rel=1e-9)
    np.testing.assert_allclose(k.speed_mps, 10.0, rtol=1e-9)
    np.testing.assert_allclose(k.heading_deg[:-1], 90.0, atol=1e-6)
    np.testing.assert_allclose(k.accel_mps2[:-1], 0.0, atol=1e-9)
    assert k.gap_before.tolist() == [True] + [False] * 10


def test_20_mps_to_rest_in_4_s_is_minus_5():
    tr = track([20, 20, 15, 10, 5, 0, 0])
    k = _kin(tr)
    np.testing.assert_allclose(k.speed_mps, [20, 20, 20, 15, 10, 5, 0, 0])
    np.testing.assert_allclose(k.accel_mps2[:-1], [0, 0, -5, -5, -5, -5, 0])
    np.testing.assert_allclose(k.jerk_mps3[:-2], [0, -5, 0, 0, 0, 5])


def test_circle_gives_v_squared_over_r_to_the_left():
    k = _kin(circle(10.0, 50.0, 60))
    np.testing.assert_allclose(k.lat_accel_mps2[1:-1], 2.0, rtol=2e-3)
    k = _kin(circle(10.0, 50.0, 60, left=False))
    np.testing.assert_allclose(k.lat_accel_mps2[1:-1], -2.0, rtol=2e-3)
    np.testing.assert_allclose(np.abs(k.heading_rate_dps[1:-1]), np.degrees(0.2), rtol=2e-3)


def test_receiver_speed_wins_and_positions_fill_in():
    tr = track(np.full(6, 10.0))
    tr["speed_mps"] = np.array([np.nan, 11.0, -1.0, 12.0, 12.0, 99.0, 10.0])
    k = _kin(tr)
    np.testing.assert_allclose(k.speed_mps, [10, 11, 10, 12, 12, 10, 10], rtol=1e-9)
    # Driven distance: Doppler trapezoid where both ends have a plausible speed.
    np.testing.assert_allclose(k.path_m, [0, 10, 10, 10, 12, 10, 10], rtol=1e-9)


def test_jitter_while_parked_is_not_distance():
    rng = np.random.default_rng(4)
    tr = track(np.zeros(300))
    tr["lat_deg"] = tr["lat_deg"] + rng.normal(0, 2e-5, 301)  # ~2 m of jitter
    k = _kin(tr)
    assert k.dist_m.sum() > 300.0 and k.path_m.sum() == 0.0


def test_gap_blocks_values_across_it_but_keeps_the_chord():
    tr = track(np.full(8, 10.0))
    tr["t_s"][4:] += 30.0
    k = _kin(tr)
    assert k.gap_before[4] and k.dist_m[4] == pytest.approx(10.0, rel=1e-9)
    assert np.isnan(k.accel_mps2[3]) and np.isnan(k.heading_deg[3])
    assert np.isnan(k.lat_accel_mps2[3]) and np.isnan(k.lat_accel_mps2[4])


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = 150
    tr = track(np.clip(np.cumsum(rng.normal(0, 1, n - 1)) + 15, 0, 40),
               heading_deg=np.cumsum(rng.normal(0, 8, n - 1)))
    tr["t_s"][60:] += 10.0  # a gap
    tr["speed_mps"][rng.random(n) < 0.3] = np.nan
    k = _kin(tr)
    ref = naive_kinematics(tr["t_s"], tr["lat_deg"], tr["lon_deg"], tr["speed_mps"], P)
    np.testing.assert_allclose(k.dist_m, ref["dist_m"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(k.path_m, ref["path_m"], rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(k.gap_before, ref["gap_before"])
    for name in ("speed_mps", "pos_speed_mps", "accel_mps2"):
        np.testing.assert_allclose(getattr(k, name), ref[name], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(k.heading_deg, ref["heading_deg"], atol=0.2)
    np.testing.assert_allclose(k.lat_accel_mps2, ref["lat_accel_mps2"], atol=0.05)


def test_many_trips_and_edge_sizes():
    a, b = track(np.full(3, 5.0)), track(np.full(4, 5.0))
    cols = {key: np.concatenate([a[key], a[key][:1], b[key]]) for key in a}
    k = compute_kinematics(cols["t_s"], cols["lat_deg"], cols["lon_deg"], None,
                           [0, 4, 4, 5, 10])
    assert k.gap_before[[0, 4, 5]].all() and np.isnan(k.speed_mps[4])
    empty = compute_kinematics([], [], [])
    assert empty.dist_m.shape == (0,)


def test_requires_clean_input():
    with pytest.raises(ValueError, match="t_s"):
        compute_kinematics([1.0, 1.0], [52.0, 52.0], [4.0, 4.0])
    with pytest.raises(ValueError, match="lat_deg"):
        compute_kinematics([1.0, 2.0], [np.nan, 52.0], [4.0, 4.0])


@pytest.mark.parametrize("seed", range(4))
def test_feature_pipeline_motion_matches_full_kinematics(seed):
    # The pipeline's kernel skips headings and, where a bound proves the lateral
    # acceleration below the floor, the arctangent: everything else must be identical.
    from telematics.core.kinematics import _trip_motion

    rng = np.random.default_rng(seed)
    n = 400
    tr = track(np.clip(np.cumsum(rng.normal(0, 1.5, n - 1)) + 8, 0, 40),
               heading_deg=np.cumsum(rng.normal(0, 12, n - 1)))
    tr["t_s"][150:] += 12.0  # a gap
    tr["speed_mps"][rng.random(n) < 0.2] = np.nan
    floor = 0.5 * P.corner_lateral_mps2
    ref = _kin(tr)
    out = [np.empty(n) for _ in range(9)]
    gap = np.empty(n, dtype=bool)
    _trip_motion(tr["t_s"], tr["lat_deg"], tr["lon_deg"], tr["speed_mps"], P.kernel(), floor,
                 out[0], out[1], gap, out[2], out[3], out[4], out[5], out[6], out[7],
                 np.empty(n), np.empty(n), np.empty(n, dtype=bool))
    dist, path, pos_speed, speed, accel, jerk, heading_rate, lat_accel, _ = out
    np.testing.assert_array_equal(gap, ref.gap_before)
    for got, want in ((dist, ref.dist_m), (path, ref.path_m), (pos_speed, ref.pos_speed_mps),
                      (speed, ref.speed_mps), (accel, ref.accel_mps2), (jerk, ref.jerk_mps3)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.isnan(lat_accel), np.isnan(ref.lat_accel_mps2))
    placeholder = (lat_accel == 0.0) & (ref.lat_accel_mps2 != 0.0)
    assert placeholder.any() and (~placeholder & ~np.isnan(lat_accel)).any()
    assert (np.abs(ref.lat_accel_mps2[placeholder]) < floor).all()
    exact = ~placeholder & ~np.isnan(lat_accel)
    np.testing.assert_allclose(lat_accel[exact], ref.lat_accel_mps2[exact], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(heading_rate[exact], ref.heading_rate_dps[exact], rtol=1e-7,
                               atol=1e-7)
