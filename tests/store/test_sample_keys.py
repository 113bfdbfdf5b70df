"""The raw-sample key layout (migration 0006): byte-order ids, no time-only index, on
tables that already hold samples, and benchmark tables laid out like the real one."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from bench.ingest_copy import fresh_hypertable
from telematics.store import migrate as migrate_module
from telematics.store.migrate import available, migrate, scratch_database
from telematics.store.provision import database_url
from telematics.store.repository import GPS, IMU, OBD, Store

pytestmark = pytest.mark.db

SAMPLE_TABLES = ("gps_samples", "imu_samples", "obd_samples")
# Ids whose byte order differs from a linguistic order: case, accents, digits, punctuation.
AWKWARD_IDS = ["b", "B", "a", "ä", "Z", "z-2", "z-10", "é", "e", "_x", "0"]


def _gps(device_ids: list[str], trip_id: str, start_us: int, per_device: int,
         step_us: int = 1_000_000) -> dict[str, np.ndarray]:
    n = len(device_ids) * per_device
    seq = np.tile(np.arange(per_device, dtype=np.int64), len(device_ids))
    return {
        "time": start_us + seq * step_us,
        "device_id": np.repeat(np.array(device_ids, dtype=object), per_device),
        "trip_id": np.full(n, trip_id, dtype=object),
        "seq": seq,
        "lat_deg": np.linspace(-10.0, 10.0, n),
        "lon_deg": np.linspace(20.0, 30.0, n),
    }


def _layout(conn: psycopg.Connection, table: str) -> dict[str, list[tuple[str, ...]]]:
    """Columns (type, collation), index and constraint definitions, without the table's
    name, so that two tables can be compared."""
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), coalesce(collname, ''), attnotnull"
        " FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,)).fetchall()
    indexes = conn.execute(
        "SELECT replace(pg_get_indexdef(indexrelid), %s, 'T') FROM pg_index"
        " WHERE indrelid = %s::regclass ORDER BY 1", (table, table)).fetchall()
    constraints = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass"
        " ORDER BY 1", (table,)).fetchall()
    dimensions = conn.execute(
        "SELECT column_name, time_interval::text FROM timescaledb_information.dimensions"
        " WHERE hypertable_name = %s", (table,)).fetchall()
    return {"columns": columns, "indexes": indexes, "constraints": constraints,
            "dimensions": dimensions}


def _chunk_indexes(conn: psycopg.Connection, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM timescaledb_information.chunks ch"
        " JOIN pg_index i ON i.indrelid = format('%%I.%%I', ch.chunk_schema,"
        " ch.chunk_name)::regclass WHERE ch.hypertable_name = %s", (table,))]


def test_sample_keys_compare_bytes_and_time_is_not_indexed_alone(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        for table in SAMPLE_TABLES:
            layout = _layout(conn, table)
            collations = {c[0]: c[2] for c in layout["columns"]}
            assert collations["device_id"] == collations["trip_id"] == "C", table
            assert layout["indexes"] == [("CREATE UNIQUE INDEX T_pkey ON public.T USING btree"
                                          " (device_id, trip_id, seq, \"time\")",)], table


def test_benchmark_tables_are_laid_out_like_gps_samples(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        fresh_hypertable(conn, "bench_layout_check")
        try:
            assert _layout(conn, "bench_layout_check") == _layout(conn, "gps_samples")
        finally:
            conn.execute("DROP TABLE bench_layout_check")
            conn.commit()


def test_ids_order_by_code_point_whatever_the_server_locale(db_url: str) -> None:
    with Store(db_url) as store:
        with store.connection() as conn:
            conn.execute("TRUNCATE gps_samples")
            conn.commit()
        store.insert_samples(GPS, _gps(AWKWARD_IDS, "t1", 1_790_000_000_000_000, 3))
        with store.connection() as conn:
            got = [r[0] for r in conn.execute(
                "SELECT DISTINCT device_id FROM gps_samples ORDER BY device_id")]
            # A parameter (default collation) still compares equal to a stored id.
            n = conn.execute("SELECT count(*) FROM gps_samples WHERE device_id = %s"
                             " AND trip_id = %s", ("ä", "t1")).fetchone()
    assert got == sorted(AWKWARD_IDS)  # Python orders str by code point, as UTF-8 bytes do
    assert n == (3,)


def test_key_migration_keeps_samples_already_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = available()
    numbers = [n for n, _, _ in shipped]
    assert 6 in numbers
    monkeypatch.setattr(migrate_module, "available",
                        lambda: [m for m in shipped if m[0] < 6])
    # Three days of samples, so that the migration has several chunks to rewrite.
    day_us = 86_400_000_000
    batches = [_gps(AWKWARD_IDS, f"trip-{d}", 1_790_000_000_000_000 + d * day_us, 40)
               for d in range(3)]
    with scratch_database(database_url(), "ubi_test") as url, Store(url) as store:
        for batch in batches:
            assert store.insert_samples(GPS, batch) == len(batch["seq"])
        n_imu = store.insert_samples(IMU, {
            "time": batches[0]["time"], "device_id": batches[0]["device_id"],
            "trip_id": batches[0]["trip_id"], "seq": batches[0]["seq"],
            "acc_x_mps2": np.zeros(len(batches[0]["seq"])),
            "acc_y_mps2": np.zeros(len(batches[0]["seq"])),
            "acc_z_mps2": np.full(len(batches[0]["seq"]), 9.81)})
        with store.connection() as conn:
            assert any("time" in d and "device_id" not in d
                       for d in _chunk_indexes(conn, "gps_samples"))
            before = conn.execute(
                "SELECT device_id, trip_id, seq, time, lat_deg FROM gps_samples"
                " ORDER BY device_id COLLATE \"C\", trip_id COLLATE \"C\", seq").fetchall()

        monkeypatch.setattr(migrate_module, "available", lambda: shipped)
        assert migrate(url) == [name for n, name, _ in shipped if n >= 6]

        with store.connection() as conn:
            after = conn.execute(
                "SELECT device_id, trip_id, seq, time, lat_deg FROM gps_samples"
                " ORDER BY device_id, trip_id, seq").fetchall()
            for table in SAMPLE_TABLES:
                chunk_indexes = _chunk_indexes(conn, table)
                assert all("(device_id, trip_id, seq, \"time\")" in d for d in chunk_indexes)
            stale = conn.execute(
                "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " JOIN pg_inherits i ON i.inhrelid = c.oid"
                " WHERE i.inhparent IN ('gps_samples'::regclass, 'imu_samples'::regclass,"
                " 'obd_samples'::regclass) AND a.attname IN ('device_id', 'trip_id')"
                " AND a.attcollation <> (SELECT oid FROM pg_collation WHERE collname = 'C'"
                " AND collnamespace = 'pg_catalog'::regnamespace)").fetchone()
        assert after == before
        assert len(after) == sum(len(b["seq"]) for b in batches)
        assert stale == (0,)
        # The key still refuses what is stored and takes what is new.
        for batch in batches:
            assert store.insert_samples(GPS, batch) == 0
        more = _gps(AWKWARD_IDS, "trip-0", 1_790_000_000_000_000, 45)
        assert store.insert_samples(GPS, more) == 5 * len(AWKWARD_IDS)
        assert n_imu == len(batches[0]["seq"])
        assert store.read_samples(OBD, "a", "trip-0")["t_us"].size == 0
        got = store.read_samples(GPS, "ä", "trip-1")
        np.testing.assert_array_equal(got["t_us"], batches[1]["time"][:40])
