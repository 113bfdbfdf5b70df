"""The store against the real TimescaleDB: migrations, binary COPY round trips, de-duplication."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from telematics.store.migrate import available, migrate
from telematics.store.pgcopy import (
    HEADER,
    KIND_BOOL,
    KIND_FLOAT8,
    KIND_INT8,
    KIND_TEXT,
    ROWS_PER_CHUNK,
    TRAILER,
    TextCodes,
    encode_binary_copy,
    factorize_text,
    iter_binary_copy,
)
from telematics.store.repository import GPS, IMU, OBD, BatchError, Store

pytestmark = pytest.mark.db


@pytest.fixture()
def store(db_url: str):
    with Store(db_url) as s:
        with s.connection() as conn:
            conn.execute("TRUNCATE gps_samples, imu_samples, obd_samples")
            conn.commit()
        yield s


def gps_batch(n: int, *, trip: str = "t1", start_us: int = 1_790_000_000_123_456,
              seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    return {
        "time": start_us + np.arange(n, dtype=np.int64) * 1_000_000,
        "device_id": np.full(n, "d1", dtype=object),
        "trip_id": np.full(n, trip, dtype=object),
        "seq": np.arange(n, dtype=np.int64),
        "lat_deg": rng.uniform(-89.9, 89.9, n),
        "lon_deg": rng.uniform(-179.9, 179.9, n),
        "speed_mps": rng.uniform(0, 40, n),
        "accuracy_m": rng.uniform(1, 30, n),
    }


def test_migrations_create_hypertables_and_are_recorded(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables")}
        versions = [r[0] for r in conn.execute(
            "SELECT version FROM schema_migrations ORDER BY version")]
    assert {"gps_samples", "imu_samples", "obd_samples"} <= names
    assert versions == [n for n, _, _ in available()]
    assert migrate(db_url) == []


def test_copy_round_trips_values_and_timestamps_exactly(store: Store) -> None:
    batch = gps_batch(2_000)
    assert store.insert_samples(GPS, batch) == 2_000
    got = store.read_samples(GPS, "d1", "t1")
    np.testing.assert_array_equal(got["t_us"], batch["time"])
    for name in ("lat_deg", "lon_deg", "speed_mps", "accuracy_m"):
        assert got[name].tobytes() == np.asarray(batch[name]).tobytes(), name
    assert np.isnan(got["heading_deg"]).all()


def test_zone_aware_times_are_stored_in_utc_to_the_microsecond(store: Store) -> None:
    local = pd.DatetimeIndex(["2026-03-29 01:59:59.999999", "2026-03-29 03:00:00.000001"]).tz_localize(
        "Europe/Amsterdam")
    batch = gps_batch(2)
    batch["time"] = pd.Series(local)
    store.insert_samples(GPS, batch)
    got = store.read_samples(GPS, "d1", "t1")["t_us"]
    expected = [int(t.timestamp() * 1_000_000) for t in local.tz_convert("UTC")]
    assert list(got) == expected
    assert expected[1] - expected[0] == 2  # one hour of wall clock skipped by DST


def test_repeated_batch_inserts_nothing_and_overlap_only_new_rows(store: Store) -> None:
    batch = gps_batch(500)
    assert store.insert_samples(GPS, batch) == 500
    assert store.insert_samples(GPS, batch) == 0
    bigger = gps_batch(800)
    assert store.insert_samples(GPS, bigger) == 300
    assert len(store.read_samples(GPS, "d1", "t1")["t_us"]) == 800


def test_duplicates_inside_one_batch_are_stored_once(store: Store) -> None:
    batch = gps_batch(100)
    doubled = {k: np.concatenate([np.asarray(v), np.asarray(v)]) for k, v in batch.items()}
    assert store.insert_samples(GPS, doubled) == 100


@pytest.mark.parametrize(("column", "value", "problem"), [
    ("lat_deg", np.nan, "NaN"),
    ("speed_mps", np.inf, "infinite"),
    ("lon_deg", 200.0, "outside"),
    ("accuracy_m", -1.0, "outside"),
])
def test_bad_values_are_refused_naming_the_column(store: Store, column: str, value: float,
                                                  problem: str) -> None:
    batch = gps_batch(10)
    values = np.array(batch[column], dtype=np.float64)
    values[3] = value
    batch[column] = values
    with pytest.raises(BatchError, match=problem) as info:
        store.insert_samples(GPS, batch)
    assert info.value.field == column
    assert store.read_samples(GPS, "d1", "t1")["t_us"].size == 0


def test_naive_timestamps_are_refused(store: Store) -> None:
    batch = gps_batch(3)
    batch["time"] = pd.Series(pd.date_range("2026-11-01", periods=3, freq="s"))
    with pytest.raises(BatchError, match="no time zone") as info:
        store.insert_samples(GPS, batch)
    assert info.value.field == "time"
    batch["time"] = np.array([datetime(2026, 11, 1, 0, 0, i) for i in range(3)], dtype=object)
    with pytest.raises(BatchError, match="no time zone"):
        store.insert_samples(GPS, batch)


def test_missing_values_are_null_when_explicit(store: Store) -> None:
    batch = gps_batch(6)
    batch["heading_deg"] = pd.array([1.0, None, 3.0, None, 5.0, 6.0], dtype="Float64")
    store.insert_samples(GPS, batch)
    got = store.read_samples(GPS, "d1", "t1")["heading_deg"]
    np.testing.assert_array_equal(np.isnan(got), [False, True, False, True, False, False])


def test_imu_and_obd_batches(store: Store) -> None:
    n = 50
    base = {
        "time": 1_790_000_000_000_000 + np.arange(n, dtype=np.int64) * 40_000,
        "device_id": np.full(n, "d1", dtype=object),
        "trip_id": np.full(n, "t1", dtype=object),
        "seq": np.arange(n),
    }
    imu = {**base, "acc_x_mps2": np.zeros(n), "acc_y_mps2": np.zeros(n),
           "acc_z_mps2": np.full(n, 9.81)}
    obd = {**base, "speed_mps": np.full(n, 10.0), "ignition": np.ones(n, dtype=bool),
           "odometer_m": np.full(n, 48_213_400.0)}
    assert store.insert_samples(IMU, imu) == n
    assert store.insert_samples(OBD, obd) == n
    assert store.read_samples(OBD, "d1", "t1")["ignition"].all()
    with pytest.raises(BatchError, match="acc_z_mps2: is required"):
        store.insert_samples(IMU, {k: v for k, v in imu.items() if k != "acc_z_mps2"})


def _reference_encode(rows: list[list[object]], kinds: list[int]) -> bytes:
    """Byte-by-byte encoding straight from the PostgreSQL COPY BINARY documentation."""
    out = bytearray(HEADER)
    for row in rows:
        out += struct.pack(">h", len(row))
        for kind, value in zip(kinds, row, strict=True):
            if value is None:
                out += struct.pack(">i", -1)
            elif kind == KIND_TEXT:
                data = str(value).encode()
                out += struct.pack(">i", len(data)) + data
            elif kind == KIND_BOOL:
                out += struct.pack(">i?", 1, bool(value))
            elif kind == KIND_FLOAT8:
                out += struct.pack(">id", 8, value)
            else:
                out += struct.pack(">iq", 8, value)
    return bytes(out + TRAILER)


def test_binary_encoder_matches_the_reference() -> None:
    rng = np.random.default_rng(3)
    n = 40
    ints = rng.integers(-(2**62), 2**62, n)
    floats = rng.normal(0, 1e6, n)
    texts = np.array([["ä", "trip-1", "", "x" * 300][i % 4] for i in range(n)], dtype=object)
    flags = rng.random(n) > 0.5
    null_f = rng.random(n) > 0.7
    columns = [(KIND_INT8, ints, None), (KIND_FLOAT8, floats, null_f), (KIND_TEXT, texts, None),
               (KIND_BOOL, flags, None)]
    rows = [[int(ints[i]), None if null_f[i] else float(floats[i]), texts[i], bool(flags[i])]
            for i in range(n)]
    expected = _reference_encode(rows, [KIND_INT8, KIND_FLOAT8, KIND_TEXT, KIND_BOOL])
    assert encode_binary_copy(columns) == expected
    assert encode_binary_copy([(KIND_INT8, np.array([], dtype=np.int64), None)]) == HEADER + TRAILER
    # Streamed in pieces of any size, or with the text given already as a dictionary,
    # the bytes are the same.
    for rows_per_chunk in (1, 7, n, 10 * n):
        pieces = list(iter_binary_copy(columns, rows_per_chunk))
        assert len(pieces) == 2 + -(-n // rows_per_chunk)
        assert b"".join(pieces) == expected
    coded = [(KIND_TEXT, factorize_text(texts), None) if k == KIND_TEXT else (k, v, m)
             for k, v, m in columns]
    assert encode_binary_copy(coded) == expected


@pytest.mark.parametrize("values", [
    [], ["a"], ["a", "a", "b", "b", "a"], ["x", "y"] * 5, ["ä", "a", "ä", None, None, "a"],
    [None], ["t", pd.NA, pd.NA, "t"], [float("nan"), "a", float("nan")],
])
def test_text_dictionary_matches_a_row_by_row_one(values: list[object]) -> None:
    coded = factorize_text(np.array(values, dtype=object))
    assert isinstance(coded, TextCodes)
    # Reference: the text of each row, None where missing.
    expected = [None if v is None or v is pd.NA or isinstance(v, float) else v for v in values]
    assert [None if c < 0 else coded.texts[c] for c in coded.codes] == expected
    assert len(set(coded.texts)) == len(coded.texts)
    assert coded.codes.dtype == np.int64


@pytest.mark.parametrize("bad", [None, "", pd.NA])
def test_missing_key_text_is_refused_naming_the_column(store: Store, bad: object) -> None:
    batch = gps_batch(10)
    trips = np.array(batch["trip_id"], dtype=object)
    trips[4:6] = bad
    batch["trip_id"] = trips
    with pytest.raises(BatchError, match="empty") as info:
        store.insert_samples(GPS, batch)
    assert info.value.field == "trip_id"


def test_duplicate_in_a_later_piece_still_stores_every_new_row(store: Store) -> None:
    # Longer than one streamed piece, with the already stored rows at the end: the COPY
    # fails after pieces were sent, and the whole batch must go through the staging path.
    n = 20_000
    assert n > 2 * ROWS_PER_CHUNK
    batch = gps_batch(n)
    tail = {k: np.asarray(v)[n - 1_000:] for k, v in batch.items()}
    assert store.insert_samples(GPS, tail) == 1_000
    assert store.insert_samples(GPS, batch) == n - 1_000
    got = store.read_samples(GPS, "d1", "t1")
    np.testing.assert_array_equal(got["t_us"], batch["time"])
    np.testing.assert_array_equal(got["lat_deg"], batch["lat_deg"])


def test_future_and_past_are_the_callers_policy_not_the_stores(store: Store) -> None:
    # The store keeps what it is given exactly; time windows are enforced by ingest.
    far = int((datetime.now(UTC) + timedelta(days=3650)).timestamp() * 1e6)
    batch = gps_batch(2, start_us=far)
    assert store.insert_samples(GPS, batch) == 2
