"""The home-recovery attack: from everything an underwriter sees, where does each driver live?

An underwriter sees each trip's privacy-trimmed path (and event positions, trimmed the same
way). The attacker knows the scheme (a circle around each end of each trip, its centre
moved by a secret per-policy offset, its radius drawn per trip) but not the secrets, and
tries twelve estimators on the visible ends of every trip, each of them an attack of its
own. Requirement (issue 8): for every estimator, the error exceeds 200 m for at least 95 %
of drivers. Also printed, not asserted: an oracle that picks, per driver, whichever of the
twelve guesses came closest, which needs the answer it is looking for (with twelve guesses
scattered around the zone centres one lands within 200 m by chance for a few percent of
drivers; seen here 0.925 of homes further than 200 m).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

import simulator
from telematics.privacy import EARTH_RADIUS_M, TripZones, ZoneOffset, draw_zone_radii_m

pytestmark = pytest.mark.slow

N_DRIVERS = 200
DAYS = 14


def _local_m(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    east = np.radians(lon - lon0) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
    north = np.radians(lat - lat0) * EARTH_RADIUS_M
    return np.column_stack([east, north])


def _true_home_deg(result: simulator.SimulationResult, trips: list[int]) -> tuple[float, float]:
    """The driver's most frequent trip end in the simulator's noiseless motion, mapped to
    latitude and longitude by a least-squares fit of the noisy fixes on the true metres."""
    ends = []
    pairs_xy, pairs_ll = [], []
    for i in trips:
        m = result.motion.item(i)
        g = result.gps.item(i)
        ends += [(round(float(m["x_m"][0])), round(float(m["y_m"][0]))),
                 (round(float(m["x_m"][-1])), round(float(m["y_m"][-1])))]
        ok = np.isfinite(g["lat_deg"]) & np.isfinite(g["lon_deg"])
        t = g["t_s"][ok]
        pairs_xy.append(np.column_stack([np.interp(t, m["t_s"], m["x_m"]),
                                         np.interp(t, m["t_s"], m["y_m"])]))
        pairs_ll.append(np.column_stack([g["lat_deg"][ok], g["lon_deg"][ok]]))
    values, counts = np.unique(np.array(ends), axis=0, return_counts=True)
    home_xy = values[np.argmax(counts)].astype(np.float64)
    xy = np.vstack(pairs_xy)
    ll = np.vstack(pairs_ll)
    design = np.column_stack([np.ones(len(xy)), xy])
    coef, *_ = np.linalg.lstsq(design, ll, rcond=None)
    lat, lon = np.array([1.0, *home_xy]) @ coef
    return float(lat), float(lon)


def _visible_ends(lat: np.ndarray, lon: np.ndarray, offset: ZoneOffset,
                  rng: random.Random) -> list[np.ndarray]:
    """The first and last positions an underwriter sees of one trip (the scoring's zones)."""
    zones = TripZones.of_trip(lat, lon, offset, draw_zone_radii_m(offset, rng))
    if zones is None:
        return []
    idx = np.flatnonzero(zones.visible(lat, lon))
    if idx.size == 0:
        return []
    return [np.array([lat[idx[0]], lon[idx[0]]]), np.array([lat[idx[-1]], lon[idx[-1]]])]


def _estimates(points: np.ndarray, lat0: float, lon0: float) -> list[np.ndarray]:
    """Attacker estimates in metres around (lat0, lon0) from the visible trip ends."""
    xy = _local_m(points[:, 0], points[:, 1], lat0, lon0)
    out = [xy.mean(axis=0), np.median(xy, axis=0)]
    geo = xy.mean(axis=0)  # geometric median (Weiszfeld)
    for _ in range(100):
        d = np.maximum(np.hypot(*(xy - geo).T), 1e-6)
        geo = (xy / d[:, None]).sum(axis=0) / (1.0 / d).sum()
    out.append(geo)
    # The densest cluster of trip ends (home is where most trips start and end).
    d_all = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
    for radius in (300.0, 600.0, 1000.0):
        densest = int(np.argmax((d_all < radius).sum(axis=1)))
        members = xy[d_all[densest] < radius]
        out += [members.mean(axis=0), np.median(members, axis=0)]
        # The centre of the smallest circle around the cluster's points: the trimmed
        # circles' edges surround the zone centre.
        centre = members.mean(axis=0)
        for _ in range(200):
            far = members[np.argmax(np.hypot(*(members - centre).T))]
            centre = centre + 0.05 * (far - centre)
        out.append(centre)
    return out


N_ESTIMATORS = 12


def test_homes_cannot_be_recovered_to_within_200_m() -> None:
    result = simulator.generate(N_DRIVERS, DAYS, 2024, imu=False)
    trips = result.trips
    rng = random.Random(2024)  # the service draws from the system's secure generator
    errors = []
    for driver in range(N_DRIVERS):
        own = np.flatnonzero((trips["driver_id"] == driver).to_numpy()
                             & (trips["mode"] == "car_driver").to_numpy())
        if own.size < 4:
            continue
        home_lat, home_lon = _true_home_deg(result, own.tolist())
        offset = ZoneOffset.draw(rng)  # the policy's secret
        ends = []
        for i in own:
            g = result.gps.item(int(i))
            ends += _visible_ends(g["lat_deg"], g["lon_deg"], offset, rng)
        if not ends:  # every trip lies inside its zones: nothing to attack
            errors.append(np.full(N_ESTIMATORS, np.inf))
            continue
        errors.append(np.array([float(np.hypot(*e))
                                for e in _estimates(np.array(ends), home_lat, home_lon)]))
    errors_m = np.array(errors)
    assert len(errors_m) >= 0.9 * N_DRIVERS
    assert np.isfinite(errors_m[:, 0]).mean() >= 0.8, "too few drivers with visible trips"
    share_far = (errors_m > 200.0).mean(axis=0)
    oracle = errors_m.min(axis=1)
    print(f"home-recovery attack on {len(errors_m)} drivers: share of homes > 200 m from "
          f"each estimator {np.round(share_far, 3).tolist()}; median error of each "
          f"{np.round(np.median(errors_m, axis=0)).tolist()} m; an oracle choosing the best "
          f"estimator per driver in hindsight: share > 200 m {(oracle > 200.0).mean():.3f}")
    assert share_far.min() >= 0.95, (
        f"estimator {int(share_far.argmin())} puts {1 - share_far.min():.1%} of homes within 200 m")


def test_the_attack_finds_homes_when_nothing_is_trimmed() -> None:
    """The attack is real: on untrimmed ends it puts most homes within 200 m."""
    result = simulator.generate(20, 7, 7, imu=False)
    trips = result.trips
    errors = []
    for driver in range(20):
        own = np.flatnonzero((trips["driver_id"] == driver).to_numpy()
                             & (trips["mode"] == "car_driver").to_numpy())
        if own.size < 4:
            continue
        home_lat, home_lon = _true_home_deg(result, own.tolist())
        ends = []
        for i in own:
            g = result.gps.item(int(i))
            ok = np.flatnonzero(np.isfinite(g["lat_deg"]))
            ends += [np.array([g["lat_deg"][ok[0]], g["lon_deg"][ok[0]]]),
                     np.array([g["lat_deg"][ok[-1]], g["lon_deg"][ok[-1]]])]
        best = min(float(np.hypot(*e)) for e in _estimates(np.array(ends), home_lat, home_lon))
        errors.append(best)
    assert float((np.array(errors) <= 200.0).mean()) >= 0.9
