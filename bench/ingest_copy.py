"""Ingest throughput: the store's binary COPY from numpy against `psql \\copy` of CSV.

Both load the same GPS rows into fresh hypertables with the same keys and indexes, in the
same run, so the ratio is meaningful on a shared, noisy machine. The last line printed is
a JSON object with `rows`, `store_rows_per_s`, `psql_copy_rows_per_s` and
`ratio_vs_psql_copy`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from telematics.store.migrate import scratch_database
from telematics.store.provision import database_url, up
from telematics.store.repository import GPS, Store, warm_up_encoder


def synthetic_gps(n_rows: int, rows_per_trip: int = 1_200, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    trip_no = np.arange(n_rows) // rows_per_trip
    seq = np.arange(n_rows) % rows_per_trip
    return {
        "time": 1_790_000_000_000_000 + trip_no * 3_600_000_000 + seq * 1_000_000,
        "device_id": np.array([f"dev-{t % 500:04d}" for t in trip_no], dtype=object),
        "trip_id": np.array([f"trip-{t:06d}" for t in trip_no], dtype=object),
        "seq": seq.astype(np.int64),
        "lat_deg": 52.0 + rng.normal(0, 0.05, n_rows),
        "lon_deg": 4.0 + rng.normal(0, 0.05, n_rows),
        "speed_mps": rng.uniform(0, 35, n_rows),
        "heading_deg": rng.uniform(0, 360, n_rows),
        "accuracy_m": rng.uniform(2, 20, n_rows),
        "altitude_m": rng.normal(10, 5, n_rows),
    }


def fresh_hypertable(conn: psycopg.Connection, name: str) -> None:
    """An empty hypertable laid out exactly like `gps_samples`: LIKE copies its columns
    (with their collations), constraints and indexes; TimescaleDB must not add a default
    time index that the real table does not have."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE gps_samples INCLUDING ALL)").format(
        sql.Identifier(name)))
    conn.execute("SELECT create_hypertable(%s, by_range('time', INTERVAL '1 day'),"
                 " create_default_indexes => false)", (name,))
    conn.commit()


def write_csv(batch: dict[str, np.ndarray], path: str) -> list[str]:
    """The batch as CSV for `psql \\copy`: ISO times in UTC, floats in shortest round-trip
    form (as `str` writes them). Returns the column names in file order."""
    names = [n for n in batch if n != "time"]
    iso = np.asarray(batch["time"]).astype("datetime64[us]").astype(str)
    frame = pd.DataFrame({"time": np.char.add(iso, "+00"), **{n: batch[n] for n in names}})
    frame.to_csv(path, header=False, index=False, lineterminator="\n")
    return ["time", *names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one round (under 60 s)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=100_000,
                        help="rows per store COPY (one upload batch)")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3

    up() if not os.environ.get("UBI_DATABASE_URL") else None
    with scratch_database(database_url(), "ubi_bench") as url:
            batch = synthetic_gps(args.rows)
            store_rates, psql_rates = [], []
            with tempfile.TemporaryDirectory() as tmp, Store(url) as store:
                csv_path = os.path.join(tmp, "gps.csv")
                columns = write_csv(batch, csv_path)
                table = dataclasses.replace(GPS, name="bench_gps_store")
                # The service compiles its kernels at start-up; do the same before timing.
                warm_up_encoder()
                for _ in range(rounds):
                    with store.connection() as conn:
                        fresh_hypertable(conn, "bench_gps_store")
                        fresh_hypertable(conn, "bench_gps_psql")
                    started = time.perf_counter()
                    inserted = 0
                    for lo in range(0, args.rows, args.batch_rows):
                        part = {k: v[lo: lo + args.batch_rows] for k, v in batch.items()}
                        inserted += store.insert_samples(table, part)
                    store_rates.append(inserted / (time.perf_counter() - started))
                    assert inserted == args.rows, inserted
                    command = (f"\\copy bench_gps_psql ({', '.join(columns)}) FROM '{csv_path}' "
                               "WITH (FORMAT csv)")
                    started = time.perf_counter()
                    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", command],
                                   check=True)
                    psql_rates.append(args.rows / (time.perf_counter() - started))
    store_rate, psql_rate = max(store_rates), max(psql_rates)
    print(f"store binary COPY: {store_rate:,.0f} rows/s; psql \\copy CSV: {psql_rate:,.0f} rows/s")
    print(json.dumps({
        "rows": args.rows,
        "store_rows_per_s": round(store_rate),
        "psql_copy_rows_per_s": round(psql_rate),
        "ratio_vs_psql_copy": round(store_rate / psql_rate, 3),
    }))


if __name__ == "__main__":
    main()
