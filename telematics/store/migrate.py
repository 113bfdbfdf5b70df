"""Numbered plain-SQL migrations, applied in order, each in its own transaction."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from importlib import resources

import psycopg
from psycopg import sql as pgsql

MIGRATIONS_TABLE = "schema_migrations"


def available() -> list[tuple[int, str, str]]:
    """(number, name, sql) for every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("telematics.store").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text()))
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {sorted(numbers)}")
    return sorted(found)


def migrate(url: str) -> list[str]:
    """Apply pending migrations; return the names applied now (empty when up to date)."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, name, sql in available():
            with conn.transaction():
                # A lock serialises concurrent `ubi db migrate` runs on one database.
                conn.execute("SELECT pg_advisory_xact_lock(7262001)")
                done = conn.execute(
                    f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE version = %s", (number,)
                ).fetchone()
                if done:
                    continue
                conn.execute(sql.encode())
                conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES (%s, %s)",
                    (number, name),
                )
                applied_now.append(name)
    return applied_now


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, migrated database on the server of ``server_url`` (for tests and benchmarks);
    yields its URL and drops it afterwards, whatever happened inside."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg.conninfo.make_conninfo(server_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    try:
        url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                pgsql.Identifier(name)))
