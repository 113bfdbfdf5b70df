"""Upload throughput and latency through the real service, against `psql \\copy`.

Starts `ubi serve` on loopback over a fresh database with one worker process per core (as
the demo runs it), posts 20-minute trips (1 Hz GPS and
25 Hz IMU, pre-encoded columnar JSON) from 8 concurrent clients, then measures one client's
upload and close latency, and finally `psql \\copy` of the same rows from CSV into
identical hypertables, in the same run. Last line: a JSON object with `samples_per_s`,
`psql_copy_rows_per_s`, `ratio_vs_psql_copy`, `upload_p99_ms` and
`close_to_features_p99_ms`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The project's root first: this folder's pricing.py benchmark must not shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np
import orjson
import psycopg
from psycopg import sql

from telematics.loadgen import CONSENT_CATEGORIES
from telematics.service.server import ServerProcess
from telematics.store.access import create_staff_token
from telematics.store.migrate import scratch_database
from telematics.store.provision import database_url, up

TRIP_S = 1200
IMU_HZ = 25


def trip_payload(device_id: str, trip_id: str, start_us: int, seed: int,
                 imu: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    t = np.arange(TRIP_S, dtype=np.float64)
    speed = np.clip(12 + np.cumsum(rng.normal(0, 0.3, TRIP_S)), 0, 33)
    heading = np.radians(90 + np.cumsum(rng.normal(0, 1.0, TRIP_S)))
    north, east = np.cumsum(speed * np.cos(heading)), np.cumsum(speed * np.sin(heading))
    body: dict = {"device_id": device_id, "trip_id": trip_id, "batch_no": 0, "final": False,
                  "gps": {"seq": list(range(TRIP_S)),
                          "t_us": (start_us + t * 1e6).astype(np.int64).tolist(),
                          "lat_deg": (52.0 + north / 111_320).tolist(),
                          "lon_deg": (4.9 + east / 68_500).tolist(),
                          "speed_mps": speed.round(2).tolist(),
                          "accuracy_m": rng.uniform(3, 9, TRIP_S).round(1).tolist()}}
    if imu:
        n = TRIP_S * IMU_HZ
        ti = np.arange(n) / IMU_HZ
        body["imu"] = {"seq": list(range(n)),
                       "t_us": (start_us + ti * 1e6).astype(np.int64).tolist(),
                       "acc_x_mps2": rng.normal(0, 0.3, n).round(4).tolist(),
                       "acc_y_mps2": rng.normal(0, 0.3, n).round(4).tolist(),
                       "acc_z_mps2": (9.81 + rng.normal(0, 0.3, n)).round(4).tolist()}
    return body


def write_csv(path: str, bodies: list[dict], stream: str, columns: list[str]) -> None:
    with open(path, "w") as fh:
        for b in bodies:
            cols = b[stream]
            ts = np.asarray(cols["t_us"], dtype=np.int64).astype("datetime64[us]").astype(str)
            parts = [np.char.add(ts, "+00"), np.full(len(ts), b["device_id"]),
                     np.full(len(ts), b["trip_id"])]
            parts += [np.asarray(cols[c]).astype(str) for c in columns]
            fh.write("\n".join(",".join(r) for r in zip(*parts, strict=True)) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (under 60 s)")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    trips_per_client = 3 if args.quick else 10
    latency_trips = 40 if args.quick else 200

    if not os.environ.get("UBI_DATABASE_URL"):
        up()
    with scratch_database(database_url(), "ubi_bench_upload") as url:
        with psycopg.connect(url) as conn:
            token = create_staff_token(conn, "bench", ["admin"])
        env = {"UBI_DATABASE_URL": url, "UBI_RATE_PER_S": "100000",
               "UBI_RATE_BURST": "100000", "UBI_POOL_MAX_SIZE": "16"}
        with ServerProcess(env, workers=os.cpu_count() or 1) as server:
            base = server.url
            admin = {"Authorization": f"Bearer {token}"}
            keys = []
            with httpx.Client(base_url=base, timeout=120) as c:
                for i in range(args.clients + 1):
                    c.post("/v1/policies", json={"policy_id": f"p{i}", "time_zone": "Europe/Paris"},
                           headers=admin).raise_for_status()
                    r = c.post("/v1/devices", json={"device_id": f"d{i}", "policy_id": f"p{i}"},
                               headers=admin)
                    r.raise_for_status()
                    keys.append(r.json()["api_key"])
                    for category in CONSENT_CATEGORIES:
                        c.post(f"/v1/policies/p{i}/consents", json={
                            "category": category, "purpose": "pricing", "granted": True,
                            "text_version": "bench"}, headers={
                            "Authorization": f"Bearer {keys[-1]}",
                            "Idempotency-Key": str(uuid.uuid4())}).raise_for_status()
            start_us = time.time_ns() // 1000 - 20 * 86_400 * 1_000_000
            bodies = [[trip_payload(f"d{c}", f"t{c}-{k}", start_us + k * 3_600_000_000, c * 1000 + k)
                       for k in range(trips_per_client)] for c in range(args.clients)]
            encoded = [[orjson.dumps(b) for b in per] for per in bodies]

            def client(ci: int) -> int:
                stored = 0
                with httpx.Client(base_url=base, timeout=120) as c:
                    for k, payload in enumerate(encoded[ci]):
                        r = c.post(f"/v1/trips/t{ci}-{k}/batches", content=payload,
                                   headers={"Authorization": f"Bearer {keys[ci]}",
                                            "Idempotency-Key": str(uuid.uuid4()),
                                            "Content-Type": "application/json"})
                        r.raise_for_status()
                        out = r.json()
                        stored += out["gps"]["stored"] + out["imu"]["stored"]
                return stored

            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                total = sum(pool.map(client, range(args.clients)))
            samples_per_s = total / (time.perf_counter() - started)

            lat_key = keys[args.clients]
            upload_ms, close_ms = [], []
            with httpx.Client(base_url=base, timeout=120) as c:
                hdr = {"Authorization": f"Bearer {lat_key}", "Content-Type": "application/json"}
                for k in range(latency_trips):
                    payload = orjson.dumps(trip_payload(f"d{args.clients}", f"lat-{k}",
                                                        start_us + k * 3_600_000_000, 99_000 + k,
                                                        imu=False))
                    t0 = time.perf_counter()
                    c.post(f"/v1/trips/lat-{k}/batches", content=payload,
                           headers={**hdr, "Idempotency-Key": str(uuid.uuid4())}).raise_for_status()
                    t1 = time.perf_counter()
                    r = c.post(f"/v1/trips/lat-{k}/close",
                               headers={**hdr, "Idempotency-Key": str(uuid.uuid4())})
                    r.raise_for_status()
                    assert r.json()["trip"]["status"] in ("scored", "unscored")
                    t2 = time.perf_counter()
                    upload_ms.append((t1 - t0) * 1000)
                    close_ms.append((t2 - t1) * 1000)

            flat = [b for per in bodies for b in per]
            with tempfile.TemporaryDirectory() as tmp, psycopg.connect(url, autocommit=True) as conn:
                for name, like in (("psql_gps", "gps_samples"), ("psql_imu", "imu_samples")):
                    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                        sql.Identifier(name), sql.Identifier(like)))
                    # The same indexes as the service's tables: no time-only index.
                    conn.execute("SELECT create_hypertable(%s, by_range('time', INTERVAL '1 day'),"
                                 " create_default_indexes => false)", (name,))
                gps_cols = ["seq", "lat_deg", "lon_deg", "speed_mps", "accuracy_m"]
                imu_cols = ["seq", "acc_x_mps2", "acc_y_mps2", "acc_z_mps2"]
                write_csv(f"{tmp}/gps.csv", flat, "gps", gps_cols)
                write_csv(f"{tmp}/imu.csv", flat, "imu", imu_cols)
                t0 = time.perf_counter()
                for table, path, cols in (("psql_gps", "gps.csv", gps_cols),
                                          ("psql_imu", "imu.csv", imu_cols)):
                    columns = ", ".join(["time", "device_id", "trip_id", *cols])
                    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c",
                                    f"\\copy {table} ({columns}) FROM '{tmp}/{path}' CSV"],
                                   check=True)
                psql_rate = total / (time.perf_counter() - t0)
    result = {
        "samples_per_s": round(samples_per_s),
        "psql_copy_rows_per_s": round(psql_rate),
        "ratio_vs_psql_copy": round(samples_per_s / psql_rate, 3),
        "upload_p99_ms": round(float(np.percentile(upload_ms, 99)), 1),
        "close_to_features_p99_ms": round(float(np.percentile(close_ms, 99)), 1),
    }
    print(f"{total} samples from {args.clients} clients; upload p50 "
          f"{np.percentile(upload_ms, 50):.1f} ms, close p50 {np.percentile(close_ms, 50):.1f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
