import math

import numpy as np
import pytest
from naive import vincenty_m

from telematics.core.geo import step_distance_bearing


@pytest.mark.parametrize("max_step_m,rtol", [(100.0, 1e-7), (20_000.0, 2e-5)])
def test_step_distance_matches_vincenty(max_step_m, rtol):
    rng = np.random.default_rng(1)
    lat1 = rng.uniform(-80, 80, 300)
    lon1 = rng.uniform(-180, 180, 300)
    step = rng.uniform(0, max_step_m, 300)
    bearing = rng.uniform(0, 2 * math.pi, 300)
    lat2 = lat1 + step * np.cos(bearing) / 111_000
    lon2 = lon1 + step * np.sin(bearing) / (111_000 * np.cos(np.radians(lat1)))
    dist, _ = step_distance_bearing(lat1, lon1, lat2, lon2)
    ref = np.array([vincenty_m(*row) for row in zip(lat1, lon1, lat2, lon2, strict=True)])
    np.testing.assert_allclose(dist, ref, rtol=rtol, atol=1e-6)


def test_beats_the_sphere_on_a_north_step():
    lat1, lat2 = 10.0, 10.001
    ours, _ = step_distance_bearing(lat1, 4.0, lat2, 4.0)
    sphere = 6378137.0 * math.radians(lat2 - lat1)
    truth = vincenty_m(lat1, 4.0, lat2, 4.0)
    assert abs(ours - truth) < 1e-6 * truth
    assert abs(sphere - truth) > 5e-3 * truth


def test_bearings_and_antimeridian():
    d, b = step_distance_bearing([0, 0, 0, 0], [0, 0, 0, 0], [1e-3, 0, -1e-3, 0],
                                 [0, 1e-3, 0, -1e-3])
    np.testing.assert_allclose(b, [0, 90, 180, 270], atol=1e-9)
    d, b = step_distance_bearing(10.0, 179.9999, 10.0, -179.9999)
    assert abs(d - vincenty_m(10.0, 179.9999, 10.0, -179.9999)) < 1e-6
    assert b == pytest.approx(90.0)


def test_nan_propagates_and_latitude_is_checked():
    d, b = step_distance_bearing(np.nan, 0.0, 0.0, 0.0)
    assert np.isnan(d) and np.isnan(b)
    with pytest.raises(ValueError, match="lat1_deg"):
        step_distance_bearing(91.0, 0.0, 0.0, 0.0)


def test_fast_atan2_matches_libm():
    from telematics.core.geo import _atan2

    rng = np.random.default_rng(2)
    ys = np.concatenate([rng.normal(size=2000), [0.0, 1.0, -1.0, 0.0, 1e-300, 5.0]])
    xs = np.concatenate([rng.normal(size=2000), [1.0, 0.0, 0.0, -1.0, -1.0, 5.0]])
    got = np.array([_atan2(y, x) for y, x in zip(ys, xs, strict=True)])
    np.testing.assert_allclose(got, np.arctan2(ys, xs), rtol=0, atol=2e-9)
    assert _atan2(0.0, 0.0) == 0.0 and np.isnan(_atan2(np.nan, 1.0))
