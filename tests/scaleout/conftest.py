"""Fixtures for the batch jobs on Dask: an own database loaded with simulated trips (scored
once by the real-time path, the reference) and a two-worker LocalCluster."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from simulator.simulation import generate
from telematics.jobs.loadsim import Loaded, load_simulation
from telematics.scoring import score_trip
from telematics.store.migrate import scratch_database
from telematics.store.provision import database_url
from telematics.store.repository import Store

SINCE = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
UNTIL = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
NO_CONSENT_DRIVER = 2
LABELLED_DRIVER = 1


@dataclass(frozen=True)
class Fleet:
    url: str
    loaded: Loaded
    reference: dict[str, list[tuple[Any, ...]]]
    labelled: tuple[str, str]
    no_consent_policy: str


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything recomputation writes, in a stable order (computed_at aside)."""
    with psycopg.connect(url) as conn:
        return {
            "features": conn.execute(
                "SELECT device_id, trip_id, policy_id, started_at, ended_at, scored, distance_m,"
                " duration_s, features::text, code_version FROM trip_features"
                " ORDER BY device_id, trip_id").fetchall(),
            "events": conn.execute(
                "SELECT device_id, trip_id, event_no, kind, severity, start_at, end_at,"
                " peak_value, speed_mps, lat_deg, lon_deg, disputed FROM events"
                " ORDER BY device_id, trip_id, event_no").fetchall(),
            "trips": conn.execute(
                "SELECT device_id, trip_id, status, transport_mode, label FROM trips"
                " ORDER BY device_id, trip_id").fetchall(),
            "paths": conn.execute(
                "SELECT device_id, trip_id, t_s, lat_deg, lon_deg, zone_start_m, zone_end_m"
                " FROM trip_paths ORDER BY device_id, trip_id").fetchall(),
        }


def wipe_features(url: str) -> None:
    """Forget every computed feature and event, as if a new detector made them stale."""
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM events")
        conn.execute("DELETE FROM trip_features")
        conn.execute("UPDATE trips SET status = 'closed', transport_mode = NULL")


@pytest.fixture(scope="package")
def fleet() -> Iterator[Fleet]:
    with scratch_database(database_url(), "ubi_scaleout") as url:
            sim = generate(6, 3, 11, imu=False, start_date=dt.date(2026, 10, 5))
            with Store(url) as store:
                loaded = load_simulation(store, sim, without_location_consent={NO_CONSENT_DRIVER})
            with psycopg.connect(url) as conn:
                for device_id, trip_id in loaded.trips:
                    with conn.transaction():
                        score_trip(conn, device_id, trip_id)
                labelled = conn.execute(
                    "SELECT t.device_id, t.trip_id FROM trips t JOIN trip_features f"
                    " USING (device_id, trip_id) WHERE t.policy_id = %s AND f.scored"
                    " ORDER BY t.trip_id LIMIT 1", (loaded.policies[LABELLED_DRIVER],)).fetchone()
                assert labelled is not None
                conn.execute("UPDATE trips SET label = 'passenger' WHERE device_id = %s"
                             " AND trip_id = %s", labelled)
            yield Fleet(url, loaded, snapshot(url), (labelled[0], labelled[1]),
                        loaded.policies[NO_CONSENT_DRIVER])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as local:
        yield local
