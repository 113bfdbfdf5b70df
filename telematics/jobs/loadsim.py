"""Load a simulation's phone trips into the store through its ingest layer (one binary COPY of
GPS samples, trips recorded as uploads record them), for batch tests and benchmarks."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from simulator.simulation import SimulationResult
from telematics.store import privacy as privacy_sql
from telematics.store import trips as trip_sql
from telematics.store.repository import GPS, Store

OPTIONAL_GPS = ("speed_mps", "heading_deg", "accuracy_m", "altitude_m", "speed_limit_mps")


@dataclass(frozen=True)
class Loaded:
    policies: list[str]
    trips: list[tuple[str, str]]  # (device_id, trip_id) of every trip with GPS samples
    samples: int


def policy_of(driver_id: int, prefix: str = "pol") -> str:
    return f"{prefix}-{driver_id:06d}"


def gps_columns(sim: SimulationResult) -> dict[str, Any]:
    """The simulation's GPS fixes as one batch for `Store.insert_samples`: a fix without a
    position (a dropout) is not sent, as a phone does not send one, and missing optional
    values are masked (NULL)."""
    offsets = sim.gps.offsets
    counts = np.diff(offsets)
    cols = sim.gps.columns
    trip_of_row = np.repeat(np.arange(len(sim.trips)), counts)
    seq = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], counts)
    keep = np.isfinite(cols["lat_deg"]) & np.isfinite(cols["lon_deg"])
    devices = sim.trips["device_id"].to_numpy(dtype=object)
    trip_ids = sim.trips["trip_id"].to_numpy(dtype=object)
    out: dict[str, Any] = {
        "time": np.round(cols["t_s"][keep] * 1e6).astype(np.int64),
        "device_id": devices[trip_of_row[keep]],
        "trip_id": trip_ids[trip_of_row[keep]],
        "seq": seq[keep],
        "lat_deg": cols["lat_deg"][keep],
        "lon_deg": cols["lon_deg"][keep],
    }
    for name in OPTIONAL_GPS:
        values = cols[name][keep]
        out[name] = np.ma.masked_array(np.where(np.isfinite(values), values, 0.0),
                                       mask=~np.isfinite(values))
    return out


def load_simulation(store: Store, sim: SimulationResult, *, prefix: str = "pol",
                    without_location_consent: Collection[int] = ()) -> Loaded:
    """Policies (one per simulated driver, in the driver's time zone), phones, location
    consent for pricing (except for the drivers listed), every trip's GPS samples by one
    COPY and each trip recorded as its upload would record it, then closed."""
    drivers = sim.drivers
    policies = [policy_of(int(d), prefix) for d in drivers["driver_id"]]
    for policy_id, time_zone, device_id in zip(policies, drivers["time_zone"],
                                               drivers["device_id"], strict=True):
        store.upsert_policy(policy_id, str(time_zone), {"source": "simulator"})
        store.register_device(str(device_id), policy_id, "phone")
    columns = gps_columns(sim)
    with store.connection() as conn, conn.transaction():
        for driver_id, policy_id in zip(drivers["driver_id"], policies, strict=True):
            privacy_sql.record_consent(conn, policy_id, "location", "pricing",
                                       int(driver_id) not in without_location_consent, "sim-1")
        stored = store.insert_samples(GPS, columns, conn=conn)
        loaded = _record_trips(conn, sim, columns, prefix)
    return Loaded(policies, loaded, stored)


def _record_trips(conn: psycopg.Connection[Any], sim: SimulationResult, columns: dict[str, Any],
                  prefix: str) -> list[tuple[str, str]]:
    times = columns["time"]
    key = columns["device_id"] + "\x00" + columns["trip_id"]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], key.shape[0]]
    driver_of = dict(zip(sim.trips["trip_id"], sim.trips["driver_id"], strict=True))
    loaded = []
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        device_id, trip_id = str(columns["device_id"][lo]), str(columns["trip_id"][lo])
        trip_sql.record_upload(conn, device_id=device_id, trip_id=trip_id,
                               policy_id=policy_of(int(driver_of[trip_id]), prefix),
                               source="phone", first_us=int(times[lo:hi].min()),
                               last_us=int(times[lo:hi].max()), n_gps=hi - lo, n_imu=0)
        loaded.append((device_id, trip_id))
    conn.execute("UPDATE trips SET status = 'closed' WHERE status = 'open'"
                 " AND trip_id = ANY(%s)", ([t for _, t in loaded],))
    return loaded
