"""IMU orientation and IMU events: synthetic trips with a known phone pose, the slow
reference, rotation invariance and awkward input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive_imu import naive_trip

from telematics.core.imu import (
    EVENT_ACCELERATION,
    EVENT_BRAKING,
    EVENT_CORNERING,
    EVENT_PHONE_HANDLING,
    SEVERITY_MEDIUM,
    SEVERITY_MODERATE,
    SEVERITY_SEVERE,
    ImuParams,
    ImuResult,
    orient_imu,
    process_imu,
)

G = 9.80665
HZ = 25.0


def rotation(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit) quaternion w, x, y, z."""
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def synthetic_trip(seed: int = 0, duration_s: float = 480.0, noise_mps2: float = 0.3):
    """A car with known manoeuvres, in the vehicle frame (x forward, y left, z up).

    Returns IMU times, the vehicle-frame specific force (3, n) including gravity and
    noise, the vehicle-frame yaw rate, and 1 Hz GPS times and speeds.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, duration_s, 1.0 / HZ)
    a_long = np.zeros_like(t)
    a_lat = np.zeros_like(t)
    for t0, d, a in [
        (10, 8, 2.5),  # moderate acceleration to 20 m/s
        (40, 6, 1.5),  # gentle, to 29 m/s
        (100, 3, -4.0),  # harsh braking (high band)
        (150, 4, 1.0),
        (200, 2, 3.3),  # harsh acceleration
        (250, 5, -1.2),
        (330, 6, -1.0),
        (380, 5, 1.2),
    ]:
        a_long[(t >= t0) & (t < t0 + d)] = a
    for t0, d, a in [(300, 3, 4.0), (350, 3, -3.0)]:  # harsh left, moderate right
        a_lat[(t >= t0) & (t < t0 + d)] = a
    speed = np.cumsum(a_long) / HZ
    force = np.stack([a_long, a_lat, np.full_like(t, G)])
    force = force + rng.normal(0.0, noise_mps2, size=force.shape)
    yaw_rate = a_lat / np.maximum(speed, 3.0)
    gps_t = t[:: int(HZ)]
    return t, force, yaw_rate, gps_t, speed[:: int(HZ)]


def run(t, acc, gps_t, gps_v, gyro=None, **kw) -> ImuResult:
    gyro_kw = {}
    if gyro is not None:
        gyro_kw = {"gyr_x_radps": gyro[0], "gyr_y_radps": gyro[1], "gyr_z_radps": gyro[2]}
    return process_imu(
        t, acc[0], acc[1], acc[2], [0, t.size], gps_t, gps_v, [0, gps_t.size], **gyro_kw, **kw
    )


def events_of(res: ImuResult) -> list[tuple[int, int, int, int]]:
    e = res.events
    return list(
        zip(
            e.kind.tolist(),
            e.severity.tolist(),
            e.start_index.tolist(),
            e.end_index.tolist(),
            strict=True,
        )
    )


def test_orientation_recovered_for_a_tilted_rotated_phone():
    t, force, _yaw_rate, gps_t, gps_v = synthetic_trip()
    rot = rotation(np.array([0.3, -0.5, 0.8, 0.2]))
    res = run(t, rot @ force, gps_t, gps_v)
    o = res.orientation
    assert o.mountings.tolist() == [1]
    assert o.oriented_share[0] == 1.0
    assert not o.handling.any()
    # Vehicle-frame output equals the truth (noise included) up to a small angle error.
    np.testing.assert_allclose(o.long_accel_mps2, force[0], atol=0.25)
    np.testing.assert_allclose(o.lat_accel_mps2, force[1], atol=0.25)
    np.testing.assert_allclose(o.vert_accel_mps2, force[2] - G, atol=0.25)


def test_events_of_the_synthetic_trip():
    t, force, _, gps_t, gps_v = synthetic_trip()
    res = run(t, rotation(np.array([0.9, 0.1, -0.4, 0.3])) @ force, gps_t, gps_v)
    e = res.events
    kinds = list(
        zip(e.kind.tolist(), e.severity.tolist(), np.round(e.start_t_s).tolist(), strict=True)
    )
    assert kinds == [
        (EVENT_BRAKING, 2, 100.0),  # -4.0 m/s^2: between 3.58 and 4.47
        (EVENT_ACCELERATION, SEVERITY_MODERATE, 10.0),
        (EVENT_ACCELERATION, SEVERITY_MEDIUM, 200.0),
        (EVENT_CORNERING, 1, 300.0),
        (EVENT_CORNERING, SEVERITY_MODERATE, 350.0),
    ]
    np.testing.assert_allclose(e.duration_s, [3.0, 8.0, 2.0, 3.0, 3.0], atol=0.5)
    np.testing.assert_allclose(e.peak_accel_mps2, [-4.0, 2.5, 3.3, 4.0, 3.0], atol=0.3)
    assert 20.0 < e.speed_mps[0] < 29.0  # 29 m/s before braking at 4 m/s^2 for 3 s
    assert np.isnan(e.lat_deg).all()


def test_hand_computable_brake_is_minus_five():
    """20 m/s to 0 in 4 s: a -5 m/s^2 brake, severe, about 4 s long."""
    t = np.arange(0.0, 120.0, 1.0 / HZ)
    speed = np.clip(np.where(t < 60.0, 20.0, 20.0 - 5.0 * (t - 60.0)), 0.0, None)
    speed[t < 30] = np.minimum(20.0, t[t < 30] * 1.0)  # accelerate gently at first
    a_long = np.gradient(speed, t)
    force = np.stack([a_long, np.zeros_like(t), np.full_like(t, G)])
    res = run(t, force, t[::25], speed[::25])
    e = res.events
    brake = e.kind == EVENT_BRAKING
    assert brake.sum() == 1
    assert e.severity[brake][0] == SEVERITY_SEVERE
    np.testing.assert_allclose(e.peak_accel_mps2[brake], [-5.0], atol=0.01)
    np.testing.assert_allclose(e.duration_s[brake], [4.0], atol=0.3)


@settings(max_examples=15, deadline=None)
@given(
    q=st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4).filter(
        lambda v: np.linalg.norm(v) > 0.2
    )
)
def test_fixed_phone_rotation_leaves_events_unchanged(q):
    t, force, yaw_rate, gps_t, gps_v = synthetic_trip(seed=3, duration_s=420.0)
    gyro = np.stack([np.zeros_like(t), np.zeros_like(t), yaw_rate])
    reference = run(t, force, gps_t, gps_v, gyro=gyro)
    rot = rotation(np.array(q))
    rotated = run(t, rot @ force, gps_t, gps_v, gyro=rot @ gyro)
    assert events_of(rotated) == events_of(reference)
    np.testing.assert_allclose(
        rotated.events.peak_accel_mps2, reference.events.peak_accel_mps2, atol=1e-6
    )


def handled_trip():
    """The phone is picked up at 200 s, shaken for 6 s at 25 m/s and put down in
    another pose; gyro included."""
    t, force, yaw_rate, gps_t, gps_v = synthetic_trip(seed=5)
    rng = np.random.default_rng(9)
    first = rotation(np.array([1.0, 0.2, 0.1, 0.0]))
    second = rotation(np.array([0.2, 1.0, -0.5, 0.4]))
    acc = np.where(t < 203.0, first @ force, second @ force)
    gyro = np.where(
        t < 203.0,
        first @ np.stack([0 * t, 0 * t, yaw_rate]),
        second @ np.stack([0 * t, 0 * t, yaw_rate]),
    )
    hand = (t >= 200.0) & (t < 206.0)
    acc[:, hand] += rng.normal(0.0, 3.0, size=(3, hand.sum()))
    gyro[:, hand] += rng.normal(0.0, 2.0, size=(3, hand.sum()))
    gps_v = gps_v.copy()
    gps_v[(gps_t >= 190) & (gps_t < 220)] = 25.0
    return t, acc, gyro, gps_t, gps_v, hand


def test_phone_handling_detected_and_orientation_re_estimated():
    t, acc, gyro, gps_t, gps_v, hand = handled_trip()
    res = run(t, acc, gps_t, gps_v, gyro=gyro)
    o = res.orientation
    assert o.mountings.tolist() == [2]
    assert o.handling[hand].mean() > 0.8
    # The window on either side of a pose change is handling too (it holds part of the
    # rotation); beyond that margin nothing is.
    margin = np.convolve(hand, np.ones(2 * 25 + 1), mode="same") > 0  # 1 s at 25 Hz
    assert o.handling[~margin].mean() < 0.01
    e = res.events
    handling_events = e.kind == EVENT_PHONE_HANDLING
    assert handling_events.sum() == 1
    assert 199.0 <= e.start_t_s[handling_events][0] <= 201.0
    assert e.duration_s[handling_events][0] >= 5.0
    assert np.isnan(e.peak_accel_mps2[handling_events]).all()
    # After re-mounting the events are still found in the new pose.
    assert (EVENT_CORNERING, 1) in list(zip(e.kind.tolist(), e.severity.tolist(), strict=True))
    # Hands-free use is not penalised.
    free = run(t, acc, gps_t, gps_v, gyro=gyro, hands_free=hand.copy())
    assert not (free.events.kind == EVENT_PHONE_HANDLING).any()


def test_handling_needs_speed_and_duration():
    t, acc, gyro, gps_t, gps_v, _hand = handled_trip()
    slow = gps_v.copy()
    slow[(gps_t >= 190) & (gps_t < 220)] = 4.0  # below 18 km/h
    res = run(t, acc, gps_t, slow, gyro=gyro)
    assert not (res.events.kind == EVENT_PHONE_HANDLING).any()
    short = run(t, acc, gps_t, gps_v, gyro=gyro, params=ImuParams(handling_min_duration_s=10.0))
    assert not (short.events.kind == EVENT_PHONE_HANDLING).any()


def test_without_gps_acceleration_yaw_is_unresolved():
    t, force, _, gps_t, _ = synthetic_trip()
    res = run(t, force, gps_t, np.full(gps_t.size, 20.0))
    o = res.orientation
    assert o.oriented_share[0] == 0.0
    assert np.isnan(o.long_accel_mps2).all()
    np.testing.assert_allclose(o.vert_accel_mps2, force[2] - G, atol=0.1)
    assert res.events.kind.size == 0


def compare_with_naive(t, acc, gps_t, gps_v, gyro=None, hands_free=None, params=None):
    p = params or ImuParams()
    kw = {"params": p}
    if hands_free is not None:
        kw["hands_free"] = hands_free
    res = run(t, acc, gps_t, gps_v, gyro=gyro, **kw)
    ref = naive_trip(t, acc.T, None if gyro is None else gyro.T, gps_t, gps_v, hands_free, p)
    o = res.orientation
    for got, want in [
        (o.long_accel_mps2, ref.long_accel_mps2),
        (o.lat_accel_mps2, ref.lat_accel_mps2),
        (o.vert_accel_mps2, ref.vert_accel_mps2),
    ]:
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)
    np.testing.assert_array_equal(o.handling, ref.handling)
    assert o.mountings.tolist() == [ref.mountings]
    got = [
        (k, s, a, b, pk)
        for k, s, a, b, pk in zip(
            res.events.kind.tolist(),
            res.events.severity.tolist(),
            res.events.start_index.tolist(),
            res.events.end_index.tolist(),
            res.events.peak_index.tolist(),
            strict=True,
        )
    ]
    assert got == ref.events
    np.testing.assert_allclose(res.events.peak_accel_mps2, ref.peaks, atol=1e-7)
    return res


def test_kernel_matches_naive_on_synthetic_trip():
    t, force, _yaw_rate, gps_t, gps_v = synthetic_trip(seed=11)
    rot = rotation(np.array([0.4, 0.4, -0.2, 0.7]))
    res = compare_with_naive(t, rot @ force, gps_t, gps_v)
    assert res.events.kind.size == 5


def test_kernel_matches_naive_with_handling_and_hands_free():
    t, acc, gyro, gps_t, gps_v, _hand = handled_trip()
    free = np.zeros(t.size, dtype=bool)
    free[t > 204.0] = True
    compare_with_naive(t, acc, gps_t, gps_v, gyro=gyro)
    compare_with_naive(t, acc, gps_t, gps_v, gyro=gyro, hands_free=free)


def test_kernel_matches_naive_on_nan_gaps_duplicates_and_time_gaps():
    t, force, _yaw_rate, gps_t, gps_v = synthetic_trip(seed=2)
    acc = rotation(np.array([0.1, 0.9, 0.3, -0.3])) @ force
    acc[:, 2490:2520] = np.nan  # a dropout inside the braking
    acc[1, 5000] = np.nan
    t = t.copy()
    t[7512:] += 0.7  # an IMU gap inside the cornering: no event across it
    t[3000] = t[2999]  # a duplicate timestamp
    gps_v = gps_v.copy()
    gps_v[50:53] = np.nan
    gps_t = gps_t.copy()
    gps_t[200] = gps_t[199]  # a duplicate GPS fix
    res = compare_with_naive(t, acc, gps_t, gps_v, params=ImuParams(smooth_s=1.0))
    assert np.isnan(res.orientation.long_accel_mps2[2490:2520]).all()
    corner = res.events.kind == EVENT_CORNERING
    assert (res.events.end_index[corner] < 7512).all() | (
        res.events.start_index[corner] >= 7512
    ).all()


def test_kernel_matches_naive_at_one_hz_and_on_tiny_trips():
    t, force, _, gps_t, gps_v = synthetic_trip(seed=4)
    p = ImuParams(window_s=1.0, smooth_s=0.0)
    compare_with_naive(t[::25], force[:, ::25], gps_t, gps_v, params=p)
    compare_with_naive(t[:1], force[:, :1], gps_t[:1], gps_v[:1])
    compare_with_naive(t[:2], force[:, :2], gps_t[:0], gps_v[:0])


def test_kernel_matches_naive_on_a_jittery_clock():
    """Steps of 30 to 50 ms, some repeated times and steps at and just over the gap: the
    windows rarely repeat their predecessor's length, which the window cut guesses."""
    t, force, _, gps_t, gps_v = synthetic_trip(seed=6, duration_s=240.0)
    rng = np.random.default_rng(6)
    steps = rng.uniform(0.03, 0.05, t.size - 1)
    steps[rng.random(steps.size) < 0.01] = 0.0
    steps[[1000, 3000]] = 0.5  # exactly the gap: still one stretch
    steps[[2000, 4000]] = 0.51  # just over it: a window ends there
    t = np.concatenate([[0.0], np.cumsum(steps)])
    acc = rotation(np.array([0.3, -0.2, 0.8, 0.1])) @ force
    compare_with_naive(t, acc, gps_t, gps_v)
    # A zero moderate threshold makes every window one where events are looked for.
    compare_with_naive(t, acc, gps_t, gps_v, params=ImuParams(accel_moderate_mps2=0.0))


def test_many_trips_equal_one_by_one():
    trips = [synthetic_trip(seed=s, duration_s=300.0) for s in (1, 2)]
    rots = [rotation(np.array(q)) for q in ([1.0, 0, 0, 0], [0.2, 0.5, 0.5, 0.1])]
    t = np.concatenate([trips[0][0], np.zeros(0), trips[1][0] + 1000.0])
    acc = np.concatenate([rots[0] @ trips[0][1], rots[1] @ trips[1][1]], axis=1)
    gps_t = np.concatenate([trips[0][3], trips[1][3] + 1000.0])
    gps_v = np.concatenate([trips[0][4], trips[1][4]])
    n0, g0 = trips[0][0].size, trips[0][3].size
    batch = process_imu(
        t, acc[0], acc[1], acc[2], [0, n0, n0, t.size], gps_t, gps_v, [0, g0, g0, gps_t.size]
    )
    assert batch.orientation.mountings.tolist() == [1, 0, 1]
    for k, (sl, gsl) in enumerate(
        [(slice(0, n0), slice(0, g0)), (slice(n0, None), slice(g0, None))]
    ):
        single = run(t[sl], acc[:, sl], gps_t[gsl], gps_v[gsl])
        trip_id = 0 if k == 0 else 2
        mine = batch.events.trip == trip_id
        offset = 0 if k == 0 else n0
        assert (
            batch.events.start_index[mine] - offset
        ).tolist() == single.events.start_index.tolist()
        np.testing.assert_array_equal(
            batch.orientation.long_accel_mps2[sl], single.orientation.long_accel_mps2
        )


def test_empty_batch_and_positions():
    empty = np.zeros(0)
    res = process_imu(empty, empty, empty, empty, [0], empty, empty, [0])
    assert res.events.kind.size == 0
    assert res.orientation.mountings.size == 0
    t, force, _, gps_t, gps_v = synthetic_trip()
    res = run(t, force, gps_t, gps_v, gps_lat_deg=52.0 + gps_t * 1e-5, gps_lon_deg=4.0 + 0 * gps_t)
    np.testing.assert_allclose(res.events.lat_deg, 52.0 + res.events.peak_t_s * 1e-5)
    assert orient_imu(t, *force, [0, t.size], gps_t, gps_v, [0, gps_t.size]).mountings[0] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"imu_t_s": np.array([0.0, 2.0, 1.0])}, "imu_t_s"),
        ({"imu_t_s": np.array([0.0, np.nan, 1.0])}, "imu_t_s"),
        ({"acc_x_mps2": np.array([0.0, np.inf, 1.0])}, "acc_x_mps2"),
        ({"acc_y_mps2": np.zeros(2)}, "acc_y_mps2"),
        ({"imu_offsets": [0, 2]}, "imu_offsets"),
        ({"imu_offsets": [0.0, 3.0]}, "imu_offsets"),
        ({"gps_offsets": [0, 1, 2]}, "gps_offsets"),
        ({"gps_t_s": np.array([1.0, 0.0])}, "gps_t_s"),
        ({"gyr_x_radps": np.zeros(3)}, "gyr_x_radps"),
        (
            {
                "gyr_x_radps": np.zeros(3),
                "gyr_y_radps": np.array([0.0, -np.inf, 0.0]),
                "gyr_z_radps": np.zeros(3),
            },
            "gyr_y_radps",
        ),
        ({"acc_z_mps2": np.array([np.nan, -np.inf, G])}, "acc_z_mps2"),
        ({"imu_t_s": np.array([0.0, 0.5, np.inf])}, "imu_t_s"),
        ({"hands_free": np.zeros(3)}, "hands_free"),
        ({"gps_lat_deg": np.zeros(2)}, "gps_lat_deg"),
    ],
)
def test_invalid_input_names_the_field(change, field):
    args = {
        "imu_t_s": np.array([0.0, 0.5, 1.0]),
        "acc_x_mps2": np.zeros(3),
        "acc_y_mps2": np.zeros(3),
        "acc_z_mps2": np.full(3, G),
        "imu_offsets": [0, 3],
        "gps_t_s": np.array([0.0, 1.0]),
        "gps_speed_mps": np.zeros(2),
        "gps_offsets": [0, 2],
    }
    args.update(change)
    # errstate: with NUMBA_DISABLE_JIT=1 the kernels run on numpy scalars, which warn
    # on inf * 0 before the kernel reports the inf.
    with pytest.raises(ValueError, match=field), np.errstate(invalid="ignore"):
        process_imu(**args)


def test_params_validated():
    with pytest.raises(ValueError, match="window_s"):
        ImuParams(window_s=0.0)
    with pytest.raises(ValueError, match="quiet_std_mps2"):
        ImuParams(quiet_std_mps2=-1.0)


def test_events_feed_the_trip_features():
    """``ImuEvents.to_frame()`` is what compute_trip_features takes as extra events."""
    from telematics.core.features import compute_trip_features

    t, force, _, gps_t, gps_v = synthetic_trip()
    res = run(t, force, gps_t, gps_v)
    frame = res.events.to_frame()
    assert frame["severity"].tolist()[:1] == ["high"]
    lat = 52.0 + np.cumsum(gps_v) / 111_000.0
    out = compute_trip_features(
        gps_t + 1.7e9,
        lat,
        np.full(gps_t.size, 4.0),
        speed_mps=gps_v,
        now_s=1.8e9,
        extra_events=frame.assign(start_t_s=frame.start_t_s + 1.7e9, end_t_s=frame.end_t_s + 1.7e9),
        imu_trips=[True],
    )
    kinds = out.events["kind"].tolist()
    assert kinds.count("braking") == 1 and kinds.count("cornering") == 2


def held_trip(pick_up: bool):
    """The phone is held 40 deg off its mount from 200 s to 215 s (jitter: neither quiet
    nor shaking) and put back; with ``pick_up`` the gyro shows the fast tilt into the
    hand and back, without it the tilt appears with no move (what a road bump looks like
    to the gravity component)."""
    t, force, yaw_rate, gps_t, gps_v = synthetic_trip(seed=5)
    rng = np.random.default_rng(4)
    mount = rotation(np.array([1.0, 0.2, 0.1, 0.0]))
    held = rotation(np.array([0.94, 0.34, 0.0, 0.0])) @ mount  # 40 deg about x
    hand = (t >= 200.0) & (t < 215.0)
    acc = np.where(hand, held @ force, mount @ force)
    acc[:, hand] += rng.normal(0.0, 0.5, size=(3, hand.sum()))
    gyro = mount @ np.stack([0 * t, 0 * t, yaw_rate])
    if pick_up:
        moves = ((t >= 199.6) & (t < 200.4)) | ((t >= 214.6) & (t < 215.4))
        gyro[0, moves] += 1.5
    gps_v = gps_v.copy()
    gps_v[(gps_t >= 190) & (gps_t < 230)] = 25.0
    return t, acc, gyro, gps_t, gps_v, hand


def test_off_pose_is_handling_only_after_a_move():
    t, acc, gyro, gps_t, gps_v, hand = held_trip(pick_up=True)
    res = compare_with_naive(t, acc, gps_t, gps_v, gyro=gyro)
    assert res.orientation.handling[hand].mean() > 0.9
    assert res.orientation.mountings.tolist() == [1]
    found = res.events.kind == EVENT_PHONE_HANDLING
    assert found.sum() == 1 and 199.0 <= res.events.start_t_s[found][0] <= 201.0
    # No move: the tilted windows are not handling (off_pose is armed by a move only).
    t, acc, gyro, gps_t, gps_v, hand = held_trip(pick_up=False)
    still = compare_with_naive(t, acc, gps_t, gps_v, gyro=gyro)
    assert not still.orientation.handling.any()
    # Disabled, the move alone is handling, the held stretch is not.
    t, acc, gyro, gps_t, gps_v, hand = held_trip(pick_up=True)
    off = compare_with_naive(t, acc, gps_t, gps_v, gyro=gyro,
                             params=ImuParams(off_pose_angle_deg=0.0))
    assert off.orientation.handling[hand].mean() < 0.3


def test_cornering_needs_a_turn_of_more_than_30_deg():
    """Lateral acceleration is a corner only inside a turn of more than 30 deg (DESIGN
    section 6): by the gyro's yaw rate, or without a gyro the lateral acceleration over
    the GPS speed."""
    t, force, yaw_rate, gps_t, gps_v = synthetic_trip(seed=6)
    rot = rotation(np.array([0.5, -0.3, 0.2, 0.8]))
    turning = np.stack([0 * t, 0 * t, yaw_rate])
    both = [EVENT_CORNERING, EVENT_CORNERING]
    res = compare_with_naive(t, rot @ force, gps_t, gps_v, gyro=rot @ turning)
    assert [k for k in res.events.kind.tolist() if k == EVENT_CORNERING] == both
    # The same forces while the gyro sees no turn (gravity leaking into the lateral axis
    # of a phone in the hand looks like this): no corner.
    res = compare_with_naive(t, rot @ force, gps_t, gps_v, gyro=0.0 * turning)
    assert EVENT_CORNERING not in res.events.kind.tolist()
    # Without a gyro: 4 m/s^2 for 3 s at 21.6 m/s turns by 32 deg, for 1.5 s by 16 deg.
    res = compare_with_naive(t, rot @ force, gps_t, gps_v)
    assert [k for k in res.events.kind.tolist() if k == EVENT_CORNERING] == both
    half = force.copy()
    half[1, (t >= 301.5) & (t < 303.0)] -= 4.0
    res = compare_with_naive(t, rot @ half, gps_t, gps_v)
    corners = res.events.kind == EVENT_CORNERING
    assert res.events.severity[corners].tolist() == [SEVERITY_MODERATE]  # the right turn


def test_hard_turn_out_of_a_junction_is_not_phone_handling():
    """Launching at 4.5 m/s^2 into a tight turn swings the horizontal acceleration by
    7 m/s^2 within a window, more than the shaking threshold, but the car does not tilt
    the phone: with a gyro that is driving, and the corner is found."""
    rng = np.random.default_rng(12)
    t = np.arange(0.0, 120.0, 1.0 / HZ)
    speed = np.clip(2.0 * t, 0.0, 10.0)  # to 10 m/s, cruise, stop at a junction
    speed = np.where(t >= 50.0, np.clip(10.0 - 2.0 * (t - 50.0), 0.0, None), speed)
    speed = np.where(t >= 60.0, np.clip(4.5 * (t - 60.0), 0.0, 9.0), speed)
    curvature = np.where((t >= 61.0) & (t < 62.6), 1.0 / 12.0, 0.0)  # a 58 deg turn
    a_long = np.gradient(speed, t)
    force = np.stack([a_long, speed**2 * curvature, np.full_like(t, G)])
    force += rng.normal(0.0, 0.05, size=force.shape)
    gyro = np.stack([0 * t, 0 * t, speed * curvature]) + rng.normal(0.0, 0.004, (3, t.size))
    rot = rotation(np.array([0.7, 0.3, -0.4, 0.5]))
    res = compare_with_naive(t, rot @ force, t[::25], speed[::25], gyro=rot @ gyro)
    assert not res.orientation.handling.any()
    e = res.events
    corner = (e.kind == EVENT_CORNERING) & (e.severity != SEVERITY_MODERATE)
    assert corner.sum() == 1
    assert 61.0 <= e.start_t_s[corner][0] and e.end_t_s[corner][0] <= 63.0
