"""Fixtures of the database pricing tests: a fresh database per test, trips with features."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from telematics.store import privacy as privacy_sql
from telematics.store import trips as trip_sql
from telematics.store.migrate import migrate
from telematics.store.provision import database_url

FACTORS = {"vehicle_group": "C", "region": "urban", "age_band": "25-34"}
AMSTERDAM = "Europe/Amsterdam"


def _server_url(dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(database_url(), dbname=dbname)


@pytest.fixture(scope="session")
def rating_template() -> Iterator[str]:
    """A migrated database that each test copies (CREATE DATABASE ... TEMPLATE)."""
    name = f"ubi_rating_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(_server_url(name))
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        # TimescaleDB's scheduler connects to every database with the extension; a template
        # must have no connections while it is copied.
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def rating_url(rating_template: str) -> Iterator[str]:
    """A database of its own for one test."""
    name = f"ubi_rating_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        for attempt in range(50):
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (rating_template,))
            try:
                admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                               sql.Identifier(rating_template)))
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 49:
                    raise
                time.sleep(0.1)
    yield _server_url(name)
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def conn(rating_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(rating_url, autocommit=True) as connection:
        yield connection


def add_policy(conn: psycopg.Connection[Any], policy_id: str, *, factors: dict[str, str] | None = None,
               time_zone: str = AMSTERDAM, start: date = date(2026, 1, 1), end: date | None = None,
               consent: bool | None = True) -> None:
    """A policy with a phone; consent None records no decision at all."""
    from psycopg.types.json import Jsonb

    conn.execute("INSERT INTO policies (policy_id, time_zone, start_date, end_date, rating_factors)"
                 " VALUES (%s, %s, %s, %s, %s)",
                 (policy_id, time_zone, start, end, Jsonb(FACTORS if factors is None else factors)))
    conn.execute("INSERT INTO devices (device_id, policy_id, kind) VALUES (%s, %s, 'phone')",
                 (f"{policy_id}-phone", policy_id))
    if consent is not None:
        set_consent(conn, policy_id, consent)


def set_consent(conn: psycopg.Connection[Any], policy_id: str, granted: bool) -> None:
    privacy_sql.record_consent(conn, policy_id, "location", "pricing", granted, "v1")


def trip_features(km: float, *, brakes: int = 0, accels: int = 0, corners: int = 0, night_km: float = 0.0,
                  urban_km: float = 0.0, motorway_km: float = 0.0, speeding_s: float = 0.0,
                  phone_s: float = 0.0, moving_s: float | None = None) -> dict[str, Any]:
    """The core's feature names with hand-picked values."""
    return {"distance_m": km * 1000.0, "n_braking": brakes, "n_acceleration": accels, "n_cornering": corners,
            "n_speeding": 1 if speeding_s else 0, "night_distance_m": night_km * 1000.0,
            "urban_distance_m": urban_km * 1000.0, "rural_distance_m": (km - urban_km - motorway_km) * 1000.0,
            "motorway_distance_m": motorway_km * 1000.0, "speeding_s": speeding_s,
            "phone_handling_s": phone_s, "n_phone_handling": 1 if phone_s else 0,
            "moving_s": moving_s if moving_s is not None else km * 60.0, "n_fatigue": 0,
            "rush_distance_m": 0.0}


def add_trip(conn: psycopg.Connection[Any], policy_id: str, trip_id: str, started: datetime, km: float, *,
             scored: bool = True, label: str | None = None, transport_mode: str | None = None,
             features: dict[str, Any] | None = None) -> None:
    """A closed trip scored through the same SQL the scorer uses."""
    device = f"{policy_id}-phone"
    start_us = int(started.timestamp() * 1e6)
    end_us = start_us + int(km * 60e6)
    trip_sql.record_upload(conn, device_id=device, trip_id=trip_id, policy_id=policy_id, source="phone",
                           first_us=start_us, last_us=end_us, n_gps=10, n_imu=0)
    trip_sql.replace_features(conn, device_id=device, trip_id=trip_id, policy_id=policy_id, started_us=start_us,
                              ended_us=end_us, scored=scored, distance_m=km * 1000.0, duration_s=km * 60.0,
                              features=features if features is not None else trip_features(km),
                              events=[], code_version="test")
    trip_sql.set_status(conn, device, trip_id, "scored" if scored else "unscored", transport_mode or "car")
    if transport_mode is not None:
        conn.execute("UPDATE trips SET transport_mode = %s WHERE device_id = %s AND trip_id = %s",
                     (transport_mode, device, trip_id))
    if label is not None:
        trip_sql.set_label(conn, device, trip_id, label)


def at(day: int, month: int = 10, hour: int = 8) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)
