"""``generate``: a whole simulated population in memory, sensor feeds plus ground truth."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator import _motion_kernels as mk
from simulator.claims import draw_claims, true_coefficients
from simulator.motion import Motion, simulate_motion
from simulator.network import ROAD_MOTORWAY, ROAD_RURAL, ROAD_URBAN, RoadNetwork, build_network
from simulator.population import REGIONS, draw_population, draw_style_arrays
from simulator.routes import route_pieces
from simulator.schedule import plan_trips
from simulator.sensors import (
    Streams,
    geodetic,
    gps_streams,
    handling_episodes,
    imu_streams,
    obd_streams,
    second_times_s,
)

DEFAULT_START_DATE = dt.date(2026, 11, 2)
_PEAK_UNITS = ("mps2", "mps2", "mps2", "mps", "", "")
_NIGHT_START_H = 23.0
_NIGHT_END_H = 5.0
_BREAK_S = 15 * 60.0  # a pause at least this long ends a spell of continuous driving


@dataclass(frozen=True)
class SimulationResult:
    """Everything one simulation produced. Streams are in SI units with ``t_s`` epoch seconds.

    ``gps``, ``imu`` and ``motion`` (the 1 Hz kinematic truth) have one item per row of
    ``trips``; ``obd`` has one item per row of ``obd_feeds``. Phone handling is only in the
    truth (``events``): the wire format carries no phone-state stream.
    """

    seed: int
    days: int
    start_date: dt.date
    imu_hz: int | None
    drivers: pd.DataFrame
    trips: pd.DataFrame
    events: pd.DataFrame
    claims: pd.DataFrame
    coefficients: pd.DataFrame
    obd_feeds: pd.DataFrame
    gps: Streams
    imu: Streams | None
    obd: Streams
    motion: Streams


def _trip_params(plan: pd.DataFrame, drivers: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Per-trip motion parameters: the driver's own style, or another driver's as a passenger."""
    n = len(plan)
    style = {k: v[plan["driver_id"].to_numpy()] for k, v in
             ((c, drivers[c].to_numpy()) for c in drivers.columns)}
    passenger = plan["mode"].to_numpy() == mk.MODE_CAR_PASSENGER
    if passenger.any():
        # Someone else drives: a fresh style from the same population model.
        other = draw_style_arrays(int(passenger.sum()), rng)
        for name, values in other.items():
            if name in style:
                style[name] = style[name].copy()
                style[name][passenger] = values
    params = np.empty((n, mk.N_PARAMS))
    params[:, mk.P_CRUISE_FACTOR] = style["cruise_factor"]
    params[:, mk.P_ACCEL_MAX_MPS2] = style["accel_max_mps2"]
    params[:, mk.P_BRAKE_PLAN_MPS2] = style["brake_plan_mps2"]
    params[:, mk.P_LATERAL_COMFORT_MPS2] = style["lateral_comfort_mps2"]
    params[:, mk.P_JERK_MPS3] = style["jerk_mps3"]
    params[:, mk.P_BRAKE_RATE_PER_M] = style["harsh_brake_per_100km"] / 1e5
    params[:, mk.P_ACCEL_RATE_PER_M] = style["harsh_accel_per_100km"] / 1e5
    params[:, mk.P_CORNER_RATE_PER_M] = style["harsh_corner_per_100km"] / 1e5
    params[:, mk.P_SPEEDING_RATE_PER_M] = style["speeding_per_100km"] / 1e5
    params[:, mk.P_SPEEDING_EXCESS_MPS] = style["speeding_excess_kmh"] / 3.6
    mode = plan["mode"].to_numpy()
    driving = mode == mk.MODE_CAR_DRIVER
    # Passengers and riders use their phones more than drivers do.
    params[:, mk.P_PHONE_RATE_PER_S] = np.where(driving, style["phone_handling_per_hour"], 6.0) / 3600.0
    params[:, mk.P_CALL_RATE_PER_S] = 0.3 / 3600.0
    params[:, mk.P_PRE_ROLL_S] = rng.integers(15, 61, n)
    params[:, mk.P_POST_ROLL_S] = rng.integers(20, 91, n)
    speed_cap = np.full(n, 1.0e9)
    speed_cap[mode == mk.MODE_WALK] = rng.uniform(1.2, 1.6, int((mode == mk.MODE_WALK).sum()))
    speed_cap[mode == mk.MODE_BUS] = 50.0 / 3.6
    speed_cap[mode == mk.MODE_TRAIN] = 33.0
    params[:, mk.P_SPEED_CAP_MPS] = speed_cap
    return params


def _estimated_seconds(plan: pd.DataFrame, network: RoadNetwork) -> float:
    region = plan["region"].to_numpy()
    n = np.diff(network.region_node_offsets)[region]
    flat = network.table_offsets[region] + plan["origin"].to_numpy() * n + plan["destination"].to_numpy()
    walking = plan["mode"].to_numpy() == mk.MODE_WALK
    seconds = np.where(walking, network.path_length_m[flat] / 1.2, network.travel_time_s[flat] * 1.6)
    return float(seconds.sum() + 200.0 * len(plan))


def _truth_streams(motion: Motion, t_start_us: np.ndarray) -> Streams:
    return Streams(motion.sec_offsets, {
        "t_s": second_times_s(motion, t_start_us),
        "dist_m": motion.dist_m,
        "speed_mps": motion.speed_mps,
        "accel_mps2": motion.accel_mps2,
        "lat_accel_mps2": motion.lat_accel_mps2,
        "speed_limit_mps": motion.limit_mps,
        "road_class": motion.road_class,
        "moving_phase": motion.phase == mk.PHASE_DRIVE,
        "x_m": motion.x_m,
        "y_m": motion.y_m,
    })


def _trip_table(plan: pd.DataFrame, motion: Motion, truth: Streams, drivers: pd.DataFrame,
                gps: Streams, imu: Streams | None, mount_q: np.ndarray) -> pd.DataFrame:
    n = len(plan)
    driver = plan["driver_id"].to_numpy()
    number = plan.groupby("driver_id").cumcount().to_numpy()
    t0_s = plan["t_start_us"].to_numpy() / 1e6
    n_sec = np.diff(motion.sec_offsets)
    trip_of = np.repeat(np.arange(n), n_sec)
    step_m = np.diff(motion.dist_m, prepend=0.0)
    step_m[motion.sec_offsets[:-1][n_sec > 0]] = 0.0
    local_h = ((truth.columns["t_s"] + np.repeat(plan["utc_offset_s"].to_numpy(), n_sec)) % 86400.0) / 3600.0
    night = (local_h >= _NIGHT_START_H) | (local_h < _NIGHT_END_H)

    def per_trip(weights: np.ndarray) -> np.ndarray:
        return np.bincount(trip_of, weights=weights, minlength=n)

    mode = plan["mode"].to_numpy()
    frame = pd.DataFrame({
        "trip_id": [f"t-{d:06d}-{k:04d}" for d, k in zip(driver, number, strict=True)],
        "device_id": drivers["device_id"].to_numpy()[driver],
        "driver_id": driver,
        "mode": [mk.MODES[m] for m in mode],
        "mode_code": mode,
        "scored": mode == mk.MODE_CAR_DRIVER,
        "purpose": plan["purpose"].to_numpy(),
        "region": [REGIONS[r].code for r in plan["region"].to_numpy()],
        "local_date": plan["local_date"].to_numpy(),
        "utc_offset_s": plan["utc_offset_s"].to_numpy(),
        "t_start_us": plan["t_start_us"].to_numpy(),
        "t_start_s": t0_s,
        "t_end_s": t0_s + n_sec - 1,
        "drive_start_s": t0_s + motion.drive_start_s,
        "drive_end_s": t0_s + motion.drive_end_s,
        "distance_m": motion.trip_dist_m,
        "night_distance_m": per_trip(step_m * night),
        "urban_distance_m": per_trip(step_m * (motion.road_class == ROAD_URBAN)),
        "rural_distance_m": per_trip(step_m * (motion.road_class == ROAD_RURAL)),
        "motorway_distance_m": per_trip(step_m * (motion.road_class == ROAD_MOTORWAY)),
        "max_speed_mps": np.maximum.reduceat(motion.speed_mps, motion.sec_offsets[:-1])
        if n else np.empty(0),
        "n_gps": np.diff(gps.offsets),
        "n_imu": np.diff(imu.offsets) if imu is not None else np.zeros(n, dtype=np.int64),
    })
    for k, name in enumerate(("mount_qw", "mount_qx", "mount_qy", "mount_qz")):
        frame[name] = mount_q[:, k]
    frame["n_waypoints"] = [len(w) for w in plan["waypoints"]]
    frame["continuous_driving_s"] = _continuous_driving_s(frame)
    return frame


def _continuous_driving_s(trips: pd.DataFrame) -> np.ndarray:
    """Driving time (truth) since the driver's last break of 15 min or more, at each trip's end."""
    spell = np.zeros(len(trips))
    driving = (trips["mode_code"] == mk.MODE_CAR_DRIVER).to_numpy()
    driver = trips["driver_id"].to_numpy()
    start = trips["drive_start_s"].to_numpy()
    end = trips["drive_end_s"].to_numpy()
    last = -1
    for k in np.flatnonzero(driving).tolist():
        continued = last >= 0 and driver[last] == driver[k] and start[k] - end[last] < _BREAK_S
        spell[k] = (spell[last] if continued else 0.0) + end[k] - start[k]
        last = k
    return spell


def _event_table(motion: Motion, trips: pd.DataFrame, lat0: np.ndarray, lon0: np.ndarray) -> pd.DataFrame:
    trip = motion.event_trip
    order = np.lexsort((motion.event_start_step, trip))
    trip = trip[order]
    start_step = motion.event_start_step[order]
    t0 = trips["t_start_s"].to_numpy()[trip]
    # Place of the event: the true position at the second it started.
    row = motion.sec_offsets[trip] + np.minimum(start_step // mk.STEPS_PER_S,
                                                np.diff(motion.sec_offsets)[trip] - 1)
    lat, lon = geodetic(motion.x_m[row], motion.y_m[row], lat0[trip], lon0[trip])
    kind = motion.event_kind[order]
    return pd.DataFrame({
        "event_id": np.arange(trip.shape[0], dtype=np.int64),
        "trip_id": trips["trip_id"].to_numpy()[trip],
        "driver_id": trips["driver_id"].to_numpy()[trip],
        "trip_mode": trips["mode"].to_numpy()[trip],
        "kind": [mk.EVENT_KINDS[k] for k in kind],
        "t_start_s": t0 + start_step / mk.STEPS_PER_S,
        "t_end_s": np.minimum(t0 + motion.event_end_step[order] / mk.STEPS_PER_S,
                              trips["t_end_s"].to_numpy()[trip]),
        "peak_value": motion.event_peak[order],
        "peak_unit": [_PEAK_UNITS[k] for k in kind],
        "speed_mps": motion.event_speed_mps[order],
        "moving": motion.speed_mps[row] > mk.CORNER_MIN_SPEED_MPS,
        "lat_deg": lat,
        "lon_deg": lon,
    })


def _claims_table(drivers: pd.DataFrame, trips: pd.DataFrame, days: int, start_date: dt.date,
                  rng: np.random.Generator) -> pd.DataFrame:
    scored = trips[trips["scored"]]
    km = (scored.groupby("driver_id")["distance_m"].sum() / 1000.0).reindex(drivers["driver_id"],
                                                                           fill_value=0.0).to_numpy()
    exposure = np.full(len(drivers), days / 365.25)
    style = {c: drivers[c].to_numpy() for c in drivers.columns}
    style["age_band_code"] = drivers["age_band"].cat.codes.to_numpy().astype(np.int64)
    expected, count, amount = draw_claims(exposure, km, style, rng)
    return pd.DataFrame({
        "driver_id": drivers["driver_id"].to_numpy(),
        "period_start": start_date.isoformat(),
        "period_end": (start_date + dt.timedelta(days=days)).isoformat(),
        "exposure_years": exposure,
        "distance_km": km,
        "expected_claims": expected,
        "claim_count": count,
        "claim_amount": amount,
    })


@dataclass(frozen=True)
class TracePlan:
    """Everything decided before any trace is drawn: network, drivers, trips and their parameters.

    ``rngs`` are the remaining independent random streams of the simulation, by stage.
    """

    seed: int
    days: int
    start_date: dt.date
    network: RoadNetwork
    drivers: pd.DataFrame
    plan: pd.DataFrame
    params: np.ndarray
    seeds: np.ndarray  # uint64[3, n_trips]: motion, GPS and IMU streams of each trip
    rngs: tuple[np.random.Generator, ...]

    @property
    def region_centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lat0_deg, lon0_deg, altitude_m) of each trip's region."""
        region = self.plan["region"].to_numpy()
        return (np.array([r.centre_lat_deg for r in REGIONS])[region],
                np.array([r.centre_lon_deg for r in REGIONS])[region],
                np.array([r.altitude_m for r in REGIONS])[region])

    def motion(self, *, fine: bool) -> Motion:
        """Routes and kinematic truth of all trips (``fine`` adds the rows the IMU needs)."""
        stops = [(o, *w, d) for o, w, d in zip(self.plan["origin"], self.plan["waypoints"],
                                                 self.plan["destination"], strict=True)]
        stop_offsets = np.zeros(len(stops) + 1, dtype=np.int64)
        np.cumsum([len(trip) for trip in stops], out=stop_offsets[1:])
        stop_nodes = np.fromiter((v for trip in stops for v in trip), dtype=np.int64,
                                 count=int(stop_offsets[-1]))
        pieces = route_pieces(self.network, self.plan["region"].to_numpy(), stop_offsets, stop_nodes)
        return simulate_motion(pieces, self.plan["mode"].to_numpy(), self.params, self.seeds[0],
                               fine=fine, estimated_s=_estimated_seconds(self.plan, self.network))

    def start_times_us(self, motion: Motion) -> np.ndarray:
        """Planned start times, pushed later where a driver's previous trip ran over.

        A trip keeps its planned gap (``min_gap_s``: a break, or a few minutes) after the end
        of the recording before it.
        """
        planned = self.plan["t_start_us"].to_numpy()
        duration_us = (np.diff(motion.sec_offsets) - 1) * 1_000_000
        driver = self.plan["driver_id"].to_numpy()
        gap_us = np.rint(self.plan["min_gap_s"].to_numpy() * 1e6).astype(np.int64)
        start = planned.copy()
        for k in range(1, start.shape[0]):
            if driver[k] == driver[k - 1]:
                start[k] = max(start[k], start[k - 1] + duration_us[k - 1] + gap_us[k])
        return start

    def gps(self, motion: Motion, t_start_us: np.ndarray, jump_prob: float) -> Streams:
        lat0, lon0, altitude = self.region_centres
        return gps_streams(motion, t_start_us, self.plan["mode"].to_numpy(), lat0, lon0, altitude,
                           self.seeds[1], self.rngs[5], jump_prob)


def plan_simulation(n_drivers: int, days: int, seed: int, *, start_date: dt.date = DEFAULT_START_DATE,
                    obd_share: float = 0.35) -> TracePlan:
    """Network, population, schedules and per-trip parameters of a simulation."""
    if n_drivers < 1 or days < 1:
        raise ValueError("n_drivers and days must be at least 1")
    rngs = tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8))
    network = build_network(rngs[0])
    drivers = draw_population(n_drivers, rngs[1], obd_share)
    plan = plan_trips(drivers, network, days, start_date, rngs[2])
    params = _trip_params(plan, drivers, rngs[3])
    seeds = rngs[4].integers(1, 2**63 - 1, size=(3, len(plan)), dtype=np.int64).astype(np.uint64)
    return TracePlan(seed, days, start_date, network, drivers, plan, params, seeds, rngs)


def generate(n_drivers: int, days: int, seed: int, *, imu: bool = True, imu_hz: int = 25,
             start_date: dt.date = DEFAULT_START_DATE, obd_share: float = 0.35,
             gps_jump_prob: float = 1.0 / 1500.0) -> SimulationResult:
    """Simulate ``n_drivers`` for ``days`` local days from ``start_date``, all in memory.

    The same arguments give the same result, bit for bit. ``imu=False`` skips the phone IMU
    (and the fine motion it is sampled from); ``imu_hz`` is the IMU rate in whole hertz.
    """
    if imu and not 1 <= imu_hz <= 400:
        raise ValueError("imu_hz must be a whole number of hertz in 1..400")
    tp = plan_simulation(n_drivers, days, seed, start_date=start_date, obd_share=obd_share)
    drivers, rngs = tp.drivers, tp.rngs
    motion = tp.motion(fine=imu)
    t_start_us = tp.start_times_us(motion)
    plan = tp.plan.assign(t_start_us=t_start_us)
    n = len(plan)
    gps = tp.gps(motion, t_start_us, gps_jump_prob)
    mode = plan["mode"].to_numpy()
    lat0, lon0, _ = tp.region_centres
    mount_q = rngs[6].standard_normal((n, 4))
    mount_q /= np.linalg.norm(mount_q, axis=1, keepdims=True)
    imu_stream = None
    if imu:
        episodes = handling_episodes(motion, mount_q, rngs[6])
        imu_stream = imu_streams(motion, t_start_us, mode, imu_hz, mount_q, episodes, tp.seeds[2], rngs[6])
    truth = _truth_streams(motion, t_start_us)
    trips = _trip_table(plan, motion, truth, drivers, gps, imu_stream, mount_q)
    obd, obd_feeds = obd_streams(motion, trips, drivers, rngs[7])
    feed_of = dict(zip(zip(obd_feeds["driver_id"], obd_feeds["local_date"], strict=True),
                       obd_feeds["feed_id"], strict=True))
    trips["obd_feed_id"] = [feed_of.get((d, day)) if s else None for d, day, s in
                            zip(trips["driver_id"], trips["local_date"], trips["scored"], strict=True)]
    return SimulationResult(
        seed=seed, days=days, start_date=start_date, imu_hz=imu_hz if imu else None,
        drivers=drivers, trips=trips, events=_event_table(motion, trips, lat0, lon0),
        claims=_claims_table(drivers, trips, days, start_date, rngs[7]),
        coefficients=true_coefficients(), obd_feeds=obd_feeds, gps=gps, imu=imu_stream,
        obd=obd, motion=truth,
    )
