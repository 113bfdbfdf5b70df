"""The store: a psycopg 3 pool, bulk sample ingest by binary COPY, and typed reads."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from telematics.store.pgcopy import (
    KIND_BOOL,
    KIND_FLOAT8,
    KIND_INT8,
    KIND_TEXT,
    PG_EPOCH_US,
    CopyColumn,
    TextCodes,
    encode_binary_copy,
    factorize_text,
    iter_binary_copy,
)

FAR_PAST_US = 0  # 1970-01-01: anything earlier is not a sensor timestamp


@dataclass(frozen=True)
class Column:
    name: str
    kind: int
    required: bool


@dataclass(frozen=True)
class SampleTable:
    """A raw-sample hypertable: its columns in COPY order and its natural key."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ("device_id", "trip_id", "seq", "time")


def _key_columns() -> tuple[Column, ...]:
    return (
        Column("time", KIND_INT8, True),
        Column("device_id", KIND_TEXT, True),
        Column("trip_id", KIND_TEXT, True),
        Column("seq", KIND_INT8, True),
    )


def _floats(*names: str, required: bool = False) -> tuple[Column, ...]:
    return tuple(Column(n, KIND_FLOAT8, required) for n in names)


GPS = SampleTable("gps_samples", _key_columns() + _floats("lat_deg", "lon_deg", required=True)
                  + _floats("speed_mps", "heading_deg", "accuracy_m", "altitude_m",
                            "speed_limit_mps"))
IMU = SampleTable("imu_samples", _key_columns()
                  + _floats("acc_x_mps2", "acc_y_mps2", "acc_z_mps2", required=True)
                  + _floats("gyr_x_radps", "gyr_y_radps", "gyr_z_radps"))
OBD = SampleTable("obd_samples", _key_columns()
                  + _floats("speed_mps", "rpm", "odometer_m")
                  + (Column("ignition", KIND_BOOL, False),)
                  + _floats("throttle_pct"))
SAMPLE_TABLES = {t.name: t for t in (GPS, IMU, OBD)}

RANGES = {
    "lat_deg": (-90.0, 90.0),
    "lon_deg": (-180.0, 180.0),
    "accuracy_m": (0.0, np.inf),
    "speed_mps": (0.0, np.inf),
    "odometer_m": (0.0, np.inf),
    "rpm": (0.0, np.inf),
}


class BatchError(ValueError):
    """A batch the store refuses; `field` names the column and the message the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def timestamps_to_unix_us(values: Any, field: str = "time") -> np.ndarray:
    """UTC microseconds since the Unix epoch from zone-aware timestamps or int64 `t_us`.

    Zone-less timestamps are refused: a naive time is ambiguous and would be stored wrong.
    """
    if isinstance(values, pd.DatetimeIndex | pd.Series) and isinstance(
        getattr(values, "dtype", None), pd.DatetimeTZDtype
    ):
        idx = pd.DatetimeIndex(values).tz_convert("UTC").as_unit("us")
        if idx.hasnans:
            raise BatchError(field, "contains missing timestamps (NaT)")
        return np.asarray(idx.asi8, dtype=np.int64)
    arr = np.asarray(values)
    if arr.dtype.kind == "M" or (isinstance(values, pd.Series | pd.Index)
                                 and pd.api.types.is_datetime64_any_dtype(values)):
        raise BatchError(field, "timestamps have no time zone; give UTC-aware times or t_us")
    if arr.dtype == object:
        if len(arr) and all(isinstance(v, datetime) for v in arr):
            if any(v.tzinfo is None or v.utcoffset() is None for v in arr):
                raise BatchError(field, "timestamps have no time zone; give UTC-aware times")
            return timestamps_to_unix_us(pd.DatetimeIndex(list(arr)), field)
        raise BatchError(field, f"cannot read timestamps of type {arr.dtype}")
    if arr.dtype.kind not in "iu":
        raise BatchError(field, f"expected int64 microseconds since the epoch, got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _prepare(table: SampleTable, columns: Mapping[str, Any]) -> tuple[list[CopyColumn], int]:
    known = {c.name for c in table.columns}
    unknown = sorted(set(columns) - known)
    if unknown:
        raise BatchError(unknown[0], f"is not a column of {table.name}")
    n_rows = -1
    encoded: list[CopyColumn] = []
    for col in table.columns:
        if col.name not in columns:
            if col.required:
                raise BatchError(col.name, "is required")
            continue
        raw = columns[col.name]
        values: np.ndarray | TextCodes
        if col.kind == KIND_INT8 and col.name == "time":
            values = timestamps_to_unix_us(raw) - PG_EPOCH_US
            nulls = None
        elif col.kind == KIND_TEXT:
            values = _text(col, raw)
            nulls = None
        else:
            values, nulls = _numeric(col, raw)
        n_values = len(values.codes if isinstance(values, TextCodes) else values)
        if n_rows == -1:
            n_rows = n_values
        elif n_values != n_rows:
            raise BatchError(col.name, f"has {n_values} values, expected {n_rows}")
        encoded.append((col.kind, values, nulls))
    return encoded, max(n_rows, 0)


def _text(col: Column, raw: Any) -> TextCodes:
    """A key column dictionary-encoded (unless given so); checked on its distinct values,
    not row by row."""
    if isinstance(raw, TextCodes):
        coded = raw
        if coded.codes.ndim != 1 or (coded.codes >= len(coded.texts)).any():
            raise BatchError(col.name, "codes must index the texts, one code per row")
    else:
        values = np.asarray(raw, dtype=object)
        if values.ndim != 1:
            raise BatchError(col.name, "must be an array, one value per row")
        coded = factorize_text(values)
    if (coded.codes < 0).any() or "" in coded.texts:
        raise BatchError(col.name, "has empty values")
    return coded


def _numeric(col: Column, raw: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Values and NULL mask of a numeric column. Missing is explicit (masked or pd.NA);
    a NaN or infinity is refused so that it never reaches the database."""
    nulls: np.ndarray | None = None
    if isinstance(raw, np.ma.MaskedArray):
        nulls = np.ma.getmaskarray(raw)
        raw = raw.filled(0)
    elif isinstance(raw, pd.Series | pd.arrays.FloatingArray | pd.arrays.BooleanArray
                    | pd.arrays.IntegerArray):
        series = pd.Series(raw)
        nulls = series.isna().to_numpy()
        if series.dtype == object or str(series.dtype) in ("Float64", "Int64", "boolean"):
            raw = series.astype(object).where(~nulls, 0).to_numpy()
            if col.kind == KIND_FLOAT8:
                raw = raw.astype(np.float64)
        else:
            # NumPy-backed float Series: isna() would hide NaN, which must be refused.
            nulls = None
            raw = series.to_numpy()
    if col.kind == KIND_BOOL:
        arr = np.asarray(raw)
        if arr.dtype != np.bool_:
            raise BatchError(col.name, f"expected booleans, got {arr.dtype}")
        return arr, nulls
    try:
        arr = np.asarray(raw, dtype=np.float64 if col.kind == KIND_FLOAT8 else np.int64)
    except (TypeError, ValueError) as exc:
        raise BatchError(col.name, f"is not numeric ({exc})") from None
    present = arr if nulls is None else arr[~nulls]
    if col.kind == KIND_FLOAT8:
        bad = ~np.isfinite(present)
        if bad.any():
            what = "NaN" if np.isnan(present[bad][0]) else "infinite"
            raise BatchError(col.name, f"{int(bad.sum())} {what} value(s); use NULL for missing")
        if nulls is not None and col.required and nulls.any():
            raise BatchError(col.name, "is required and has missing values")
    lo, hi = RANGES.get(col.name, (-np.inf, np.inf))
    if len(present) and (present.min() < lo or present.max() > hi):
        raise BatchError(col.name, f"values outside [{lo}, {hi}]")
    return arr, nulls


@dataclass(frozen=True)
class Policy:
    policy_id: str
    time_zone: str
    rating_factors: dict[str, Any]


@dataclass(frozen=True)
class Device:
    device_id: str
    policy_id: str
    kind: str


class Store:
    """One connection pool and the SQL the platform runs. Open it in the app's lifespan."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8,
                 timeout_s: float = 30.0,
                 configure: Callable[[psycopg.Connection[Any]], None] | None = None) -> None:
        """`configure` runs on every new connection before the pool hands it out (the
        pricing side's pool checks its role there) and must leave it idle."""
        self.url = url
        # Checking each connection on checkout lets the pool recover by itself after the
        # database restarts: dead connections are dropped instead of handed out.
        self.pool = ConnectionPool(url, min_size=min_size, max_size=max_size, open=False,
                                   timeout=timeout_s, check=ConnectionPool.check_connection,
                                   configure=configure, reconnect_timeout=0,
                                   kwargs={"autocommit": False, "connect_timeout": 5})

    def open(self, wait: bool = True) -> Store:
        self.pool.open(wait=wait)
        return self

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def autocommit_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pool connection in autocommit mode, for reads of one statement each (no
        transaction to begin and end around them); back in the pool it is as any other."""
        with self.pool.connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                if not conn.closed:
                    conn.autocommit = False

    # --- writes -------------------------------------------------------------------------

    def insert_samples(self, table: SampleTable, columns: Mapping[str, Any],
                       conn: psycopg.Connection[Any] | None = None) -> int:
        """Bulk insert one batch with one binary COPY; rows already stored are skipped.

        Returns the number of rows inserted. The batch is validated as a whole before any
        byte reaches the database, so a refused batch stores nothing.
        """
        encoded, n_rows = _prepare(table, columns)
        if n_rows == 0:
            return 0
        pieces = iter_binary_copy(encoded)
        names = ", ".join(c.name for c in table.columns if c.name in columns)
        if conn is None:
            with self.connection() as own, own.transaction():
                return copy_dedup(own, table, names, pieces, n_rows)
        return copy_dedup(conn, table, names, pieces, n_rows)

    def upsert_policy(self, policy_id: str, time_zone: str,
                      rating_factors: Mapping[str, Any] | None = None, *,
                      start_date: date | None = None) -> None:
        from psycopg.types.json import Jsonb

        with self.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO policies (policy_id, time_zone, rating_factors, start_date)"
                " VALUES (%s, %s, %s, COALESCE(%s, CURRENT_DATE))"
                " ON CONFLICT (policy_id) DO UPDATE SET time_zone = EXCLUDED.time_zone,"
                " rating_factors = EXCLUDED.rating_factors,"
                " start_date = COALESCE(%s, policies.start_date)",
                (policy_id, time_zone, Jsonb(dict(rating_factors or {})), start_date,
                 start_date),
            )

    def register_device(self, device_id: str, policy_id: str, kind: str = "phone",
                        api_key_hash: bytes | None = None) -> None:
        with self.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO devices (device_id, policy_id, kind, api_key_hash)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (device_id) DO NOTHING",
                (device_id, policy_id, kind, api_key_hash),
            )

    # --- reads --------------------------------------------------------------------------

    def get_policy(self, policy_id: str) -> Policy | None:
        with self.connection() as conn, conn.cursor(row_factory=class_row(Policy)) as cur:
            return cur.execute(
                "SELECT policy_id, time_zone, rating_factors FROM policies WHERE policy_id = %s",
                (policy_id,),
            ).fetchone()

    def get_device(self, device_id: str) -> Device | None:
        with self.connection() as conn, conn.cursor(row_factory=class_row(Device)) as cur:
            return cur.execute(
                "SELECT device_id, policy_id, kind FROM devices WHERE device_id = %s",
                (device_id,),
            ).fetchone()

    def read_samples(self, table: SampleTable, device_id: str,
                     trip_id: str) -> dict[str, np.ndarray]:
        with self.connection() as conn:
            return read_samples(conn, table, device_id, trip_id)


def warm_up_encoder() -> None:
    """Compile the binary COPY encoder (numba compiles on first call, ~0.5 s)."""
    columns: dict[str, Any] = {"time": np.array([1_790_000_000_000_000], dtype=np.int64),
                               "device_id": np.array(["d"], dtype=object),
                               "trip_id": np.array(["t"], dtype=object),
                               "seq": np.zeros(1, dtype=np.int64),
                               "lat_deg": np.zeros(1), "lon_deg": np.zeros(1)}
    for table in SAMPLE_TABLES.values():
        names = {c.name for c in table.columns}
        sample = {k: v for k, v in columns.items() if k in names}
        for c in table.columns:
            if c.name not in sample and c.required:
                sample[c.name] = np.zeros(1)
        encode_binary_copy(_prepare(table, sample)[0])


def read_samples(conn: psycopg.Connection[Any], table: SampleTable, device_id: str,
                 trip_id: str, columns: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """One trip's samples in time order as numpy columns; `time` as int64 Unix microseconds
    (`t_us`) and missing values as NaN (False for a boolean). ``columns`` (default: all)
    names the value columns to read besides `time` and `seq`."""
    names = [c.name for c in table.columns if c.name not in ("device_id", "trip_id")
             and (columns is None or c.name in ("time", "seq") or c.name in columns)]
    row = conn.execute(_read_sql(table, tuple(names)), (device_id, trip_id),
                       binary=True).fetchone()
    if row is None or row[0] is None:
        return {("t_us" if n == "time" else n): np.zeros(0, dtype=_READ_DTYPES[_kind(table, n)])
                for n in names}
    raw = {n: np.frombuffer(b, dtype=_WIRE_DTYPES[_kind(table, n)]) for n, b in zip(names, row,
                                                                                 strict=True)}
    # The server aggregates in scan order: sort by time, then sequence number ((time, seq)
    # is unique within a trip), as an ORDER BY time, seq would.
    order = np.lexsort((raw["seq"], raw["time"]))
    out: dict[str, np.ndarray] = {}
    for name in names:
        values = raw[name].astype(_READ_DTYPES[_kind(table, name)])[order]
        if name == "time":
            out["t_us"] = values + PG_EPOCH_US
        else:
            out[name] = values
    return out


_WIRE_DTYPES = {KIND_INT8: ">i8", KIND_FLOAT8: ">f8", KIND_BOOL: "?"}
_READ_DTYPES: dict[int, Any] = {KIND_INT8: np.int64, KIND_FLOAT8: np.float64,
                                KIND_BOOL: np.bool_}


def _kind(table: SampleTable, name: str) -> int:
    return next(c.kind for c in table.columns if c.name == name)


def binary_aggregates(table: SampleTable, names: Sequence[str], qualifier: str = "") -> str:
    """The select list aggregating each column of ``names`` (in that order; ``qualifier``
    prefixes the column, e.g. ``"s."``) into one bytea of the type's binary send form
    (big-endian; missing floats as NaN, missing booleans as false): numpy decodes each
    with ``_WIRE_DTYPES``, instead of Python work per sample."""
    parts = []
    for name in names:
        column = f"{qualifier}{name}"
        kind = _kind(table, name)
        if name == "time":
            value = f"timestamptz_send({column})"
        elif kind == KIND_INT8:
            value = f"int8send({column})"
        elif kind == KIND_BOOL:
            value = f"boolsend(coalesce({column}, false))"
        else:
            value = f"float8send(coalesce({column}, 'NaN'))"
        parts.append(f"string_agg({value}, ''::bytea)")
    return ", ".join(parts)


@functools.lru_cache(maxsize=16)
def _read_sql(table: SampleTable, names: tuple[str, ...]) -> str:
    """One row of the trip's columns ``names``, each aggregated by `binary_aggregates`."""
    return (f"SELECT {binary_aggregates(table, names)} FROM {table.name}"
            " WHERE device_id = %s AND trip_id = %s")


def copy_dedup(conn: psycopg.Connection[Any], table: SampleTable, names: str,
               pieces: Iterable[memoryview], n_rows: int) -> int:
    """COPY a payload, given as pieces, into `table`, skipping rows whose natural key is
    already stored.

    Fresh data (the common case) goes straight into the hypertable, one piece at a time so
    that the server inserts while the rest is encoded; only when that hits a duplicate key
    does the batch go through a staging table and `ON CONFLICT DO NOTHING`.
    """
    remaining = iter(pieces)
    sent: list[memoryview] = []
    try:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                for piece in remaining:
                    sent.append(piece)
                    copy.write(piece)
            return n_rows
    except psycopg.errors.UniqueViolation:
        pass
    payload = [*sent, *remaining]
    staging = f"staging_{table.name}"
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} "
            f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY {staging} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            for piece in payload:
                copy.write(piece)
        key = ", ".join(table.key)
        cur.execute(
            f"INSERT INTO {table.name} ({names}) SELECT DISTINCT ON ({key}) {names} "
            f"FROM {staging} ON CONFLICT ({key}) DO NOTHING"
        )
        inserted = cur.rowcount
        cur.execute(f"TRUNCATE {staging}")
    return inserted
