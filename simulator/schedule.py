"""Daily schedules: which trips each driver makes, when (local time) and between which nodes."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from simulator._motion_kernels import (
    MODE_BUS,
    MODE_CAR_DRIVER,
    MODE_CAR_PASSENGER,
    MODE_TRAIN,
    MODE_WALK,
)
from simulator.network import NODE_ROAD, NODE_STATION, RoadNetwork

_HOUR_S = 3600.0
_WORK_DAYS_PER_YEAR = 225.0
_MIN_GAP_S = 300.0


def utc_offset_s(time_zone: str, date: dt.date) -> int:
    """UTC offset of a zone at local noon of ``date`` (trips use one offset per local day)."""
    noon = dt.datetime(date.year, date.month, date.day, 12, tzinfo=ZoneInfo(time_zone))
    offset = noon.utcoffset()
    if offset is None:
        raise ValueError(f"time zone {time_zone!r} has no UTC offset")
    return int(offset.total_seconds())


class _DriverPlaces:
    """A driver's home, work, favourite and leisure nodes and home station (local ids)."""

    def __init__(self, network: RoadNetwork, region: int, annual_km: float, commuter: bool,
                 rng: np.random.Generator) -> None:
        base = network.region_node_offsets[region]
        nodes = network.region_nodes(region)
        place = network.node_place[nodes]
        kind = network.node_kind[nodes]
        self.length_m = network.table("path_length_m", region)
        self.time_s = network.table("travel_time_s", region)
        urban = np.flatnonzero((kind == NODE_ROAD) & (place >= 0))
        city = urban[place[urban] == 0]
        towns = urban[place[urban] > 0]
        self.home = int(rng.choice(city if rng.random() < 0.7 else towns))
        home_place = int(network.node_place[base + self.home])
        from_home = self.length_m[self.home, urban]
        if commuter:
            # Commutes carry about 55 % of the annual distance.
            desired = annual_km * 1000.0 * 0.55 / (2.0 * _WORK_DAYS_PER_YEAR)
            closest = urban[np.argsort(np.abs(from_home - desired))[:5]]
            self.work = int(rng.choice(closest[closest != self.home]))
        else:
            self.work = -1
        near = urban[(from_home > 800.0) & (from_home < 15_000.0)]
        weights = np.exp(-self.length_m[self.home, near] / 5_000.0)
        self.favourites = rng.choice(near, size=4, p=weights / weights.sum())
        far = urban[(place[urban] != home_place) & np.isfinite(from_home)]
        self.leisure = rng.choice(far, size=2)
        # A long drive visits one node in every other place, round the region in angle order.
        others = sorted(set(place[urban].tolist()) - {home_place})
        visits = np.array([rng.choice(urban[place[urban] == p]) for p in others], dtype=np.int64)
        angle = np.arctan2(network.node_y_m[base + visits], network.node_x_m[base + visits])
        self.tour = visits[np.argsort(angle)]
        same_place = urban[place[urban] == home_place]
        walk_d = self.length_m[self.home, same_place]
        self.walks = same_place[(walk_d > 400.0) & (walk_d < 2_500.0)]
        bus_d = self.length_m[self.home, urban]
        self.bus_stops = urban[(bus_d > 1_500.0) & (bus_d < 9_000.0)]
        stations = np.flatnonzero(kind == NODE_STATION)
        self.station = int(stations[np.argmin(np.where(place[stations] == home_place, 0, 1))])
        reachable = stations[np.isfinite(self.time_s[self.station, stations])]
        self.far_stations = reachable[reachable != self.station]


# (local start s, mode, origin, destination, purpose, waypoints, minimum gap after the last trip)
_Trip = tuple[float, int, int, int, str, tuple[int, ...], float]


def _day_trips(p: _DriverPlaces, row: Any, weekday: int, rng: np.random.Generator) -> list[_Trip]:
    """The trips of one driver-day, unordered."""
    trips: list[_Trip] = []

    def round_trip(start_s: float, stay_s: float, mode: int, dest: int, purpose: str) -> None:
        trips.append((start_s, mode, p.home, dest, purpose, (), _MIN_GAP_S))
        trips.append((start_s + stay_s, mode, dest, p.home, purpose, (), _MIN_GAP_S))

    if row.commuter and weekday < 5 and rng.random() < 0.92:
        leave = rng.normal(7.9, 0.5) * _HOUR_S
        back = rng.normal(17.3, 0.6) * _HOUR_S
        if p.bus_stops.size and rng.random() < 0.1:
            round_trip(leave, back - leave, MODE_BUS, int(rng.choice(p.bus_stops)), "commute")
        else:
            round_trip(leave, back - leave, MODE_CAR_DRIVER, p.work, "commute")
    commute_km = (2.0 * p.length_m[p.home, p.work] / 1000.0) if p.work >= 0 else 0.0
    daily_km = row.annual_km / 365.0
    errand_km = 2.0 * float(np.mean(p.length_m[p.home, p.favourites])) / 1000.0
    errands = rng.poisson(float(np.clip((daily_km - 0.7 * commute_km) / errand_km, 0.2, 3.0)))
    for _ in range(errands):
        round_trip(rng.uniform(9.5, 20.5) * _HOUR_S, rng.uniform(20.0, 90.0) * 60.0,
                   MODE_CAR_DRIVER, int(rng.choice(p.favourites)), "errand")
    if weekday >= 5 and rng.random() < 0.35:
        round_trip(rng.uniform(10.0, 14.0) * _HOUR_S, rng.uniform(2.0, 6.0) * _HOUR_S,
                   MODE_CAR_DRIVER, int(rng.choice(p.leisure)), "leisure")
    if rng.random() < row.night_trip_prob_per_day:
        round_trip(rng.uniform(22.0, 25.0) * _HOUR_S, rng.uniform(1.0, 3.0) * _HOUR_S,
                   MODE_CAR_DRIVER, int(rng.choice(p.favourites)), "night")
    if weekday >= 5 and rng.random() < 0.12 and p.tour.size >= 2:
        # A long drive round the region (about two hours or more). Drivers who tire easily
        # break it half way for 15-40 minutes, which makes it two trips.
        start = rng.uniform(9.0, 13.0) * _HOUR_S
        ring = [int(v) for v in (p.tour if rng.random() < 0.5 else p.tour[::-1])]
        tour = ring + ring[:2]  # once round and on to the first two places again
        if rng.random() > row.fatigue_tolerance:
            half = len(tour) // 2
            first = tour[:half]
            trips.append((start, MODE_CAR_DRIVER, p.home, first[-1], "long_drive", tuple(first[:-1]),
                          _MIN_GAP_S))
            trips.append((start + 1.0 * _HOUR_S, MODE_CAR_DRIVER, first[-1], p.home, "long_drive",
                          tuple(tour[half:]), float(rng.uniform(15.0, 40.0)) * 60.0))
        else:
            trips.append((start, MODE_CAR_DRIVER, p.home, p.home, "long_drive", tuple(tour), _MIN_GAP_S))
    if p.walks.size and rng.random() < 0.25:
        trips.append((rng.uniform(8.0, 20.0) * _HOUR_S, MODE_WALK, p.home,
                      int(rng.choice(p.walks)), "walk", (), _MIN_GAP_S))
    if rng.random() < 0.06:
        round_trip(rng.uniform(10.0, 21.0) * _HOUR_S, rng.uniform(1.0, 3.0) * _HOUR_S,
                   MODE_CAR_PASSENGER, int(rng.choice(p.favourites)), "passenger")
    if p.far_stations.size and rng.random() < 0.04:
        dest = int(rng.choice(p.far_stations))
        start = rng.uniform(7.0, 16.0) * _HOUR_S
        trips.append((start, MODE_TRAIN, p.station, dest, "train", (), _MIN_GAP_S))
        trips.append((start + rng.uniform(3.0, 6.0) * _HOUR_S, MODE_TRAIN, dest, p.station, "train", (),
                      _MIN_GAP_S))
    return trips


def plan_trips(drivers: pd.DataFrame, network: RoadNetwork, days: int, start_date: dt.date,
               rng: np.random.Generator) -> pd.DataFrame:
    """All trips of all drivers over ``days`` local days, in driver then time order."""
    columns: dict[str, list] = {k: [] for k in (
        "driver_id", "mode", "region", "origin", "destination", "waypoints", "t_start_us",
        "min_gap_s", "local_date", "utc_offset_s", "purpose")}
    row: Any
    for row in drivers.itertuples(index=False):
        region = int(row.region_code)
        places = _DriverPlaces(network, region, float(row.annual_km), bool(row.commuter), rng)
        last_end_utc_s = -np.inf
        here = places.home  # where the driver (and, after a drive, the car) is
        for d in range(days):
            date = start_date + dt.timedelta(days=d)
            offset = utc_offset_s(str(row.time_zone), date)
            midnight_utc_s = dt.datetime(date.year, date.month, date.day,
                                         tzinfo=dt.UTC).timestamp() - offset
            for local_s, mode, origin, dest, purpose, waypoints, min_gap_s in sorted(
                    _day_trips(places, row, date.weekday(), rng)):
                # Road trips start where the last one ended, so that consecutive traces join up;
                # the rail network is separate (walks to and from stations are not recorded).
                if mode != MODE_TRAIN:
                    origin = here
                if origin == dest and not waypoints:
                    continue
                if mode != MODE_TRAIN:
                    here = dest
                start_s = max(midnight_utc_s + local_s, last_end_utc_s + min_gap_s)
                stops = [origin, *waypoints, dest]
                if mode == MODE_WALK:
                    expected_s = places.length_m[origin, dest] / 1.3
                else:
                    expected_s = 1.5 * sum(places.time_s[a, b] for a, b in itertools.pairwise(stops))
                last_end_utc_s = start_s + expected_s + 400.0
                columns["driver_id"].append(row.driver_id)
                columns["mode"].append(mode)
                columns["region"].append(region)
                columns["origin"].append(origin)
                columns["destination"].append(dest)
                columns["waypoints"].append(tuple(waypoints))
                columns["min_gap_s"].append(min_gap_s)
                columns["t_start_us"].append(int(np.rint(start_s)) * 1_000_000
                                             + int(rng.integers(0, 1000)) * 1000)
                columns["local_date"].append(date.isoformat())
                columns["utc_offset_s"].append(offset)
                columns["purpose"].append(purpose)
    frame = pd.DataFrame(columns)
    return frame.astype({"driver_id": np.int64, "mode": np.int64, "region": np.int64,
                         "origin": np.int64, "destination": np.int64, "t_start_us": np.int64,
                         "min_gap_s": np.float64, "utc_offset_s": np.int64})
