"""Database repricing benchmark: policies/s of read inputs + price + write premiums.

    python bench/reprice_db.py [--quick]

Builds a throw-away database on the project's TimescaleDB with N policies and four scored
October trips each (features in the core's names, loaded with COPY), then times, in one
process: ``reprice_period`` end to end (SQL aggregation of the trips, pricing with
breakdowns, coaching and audit records, one COPY + upsert of the premiums and audit rows),
its three stages on their own (the write stage replaces the rows of the first run: the
idempotent upsert path), the pure in-memory
``price_with_breakdown`` on the same inputs, and the provisional premium of one policy.
The last line is JSON. ``--quick`` uses 20,000 policies (under 60 s), else 100,000.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psycopg

from pricing.breakdown import price_with_breakdown
from pricing.plan import default_plan
from telematics.rating import (
    coaching_targets_of,
    price_period,
    provisional_premium,
    publish_plan,
    read_period,
    reprice_period,
    write_premiums,
)
from telematics.store.migrate import scratch_database
from telematics.store.provision import database_url

PERIOD = (date(2026, 10, 1), date(2026, 11, 1))
TRIPS_PER_POLICY = 4


def _copy(conn: psycopg.Connection[Any], statement: str, lines: list[str]) -> None:
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(("\n".join(lines) + "\n").encode("utf-8"))


def load_portfolio(conn: psycopg.Connection[Any], n_policies: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups, regions, ages = list("ABCDE"), ["rural", "suburban", "urban"], ["18-24", "25-34", "35-54", "55-69", "70+"]
    ids = [f"B{i:07d}" for i in range(n_policies)]
    _copy(conn, "COPY policies (policy_id, time_zone, start_date, rating_factors) FROM STDIN", [
        f"{p}\tEurope/Amsterdam\t2026-01-01\t"
        + json.dumps({"vehicle_group": groups[i % 5], "region": regions[i % 3], "age_band": ages[i % 5]})
        for i, p in enumerate(ids)])
    _copy(conn, "COPY devices (device_id, policy_id, kind) FROM STDIN", [f"{p}-phone\t{p}\tphone" for p in ids])
    _copy(conn, "COPY consents (policy_id, category, purpose, granted, text_version) FROM STDIN",
          [f"{p}\tlocation\tpricing\tt\tv1" for p in ids])
    n_trips = n_policies * TRIPS_PER_POLICY
    km = rng.gamma(2.0, 15.0, n_trips) + 1.0
    day = rng.integers(1, 31, n_trips)
    trips, features = [], []
    for k in range(n_trips):
        policy = ids[k // TRIPS_PER_POLICY]
        started = datetime(2026, 10, int(day[k]), 7, tzinfo=UTC).isoformat()
        trip = f"t{k % TRIPS_PER_POLICY}"
        trips.append(f"{policy}-phone\t{trip}\t{policy}\tscored\t{started}\t{started}\tcar")
        document = {"n_braking": int(rng.poisson(km[k] / 50)), "n_acceleration": int(rng.poisson(km[k] / 90)),
                    "n_cornering": int(rng.poisson(km[k] / 100)), "night_distance_m": km[k] * 80.0,
                    "urban_distance_m": km[k] * 400.0, "motorway_distance_m": km[k] * 300.0,
                    "speeding_s": float(rng.uniform(0, 100)), "moving_s": km[k] * 60.0,
                    "phone_handling_s": float(rng.uniform(0, 60)), "n_speeding": 1}
        features.append(f"{policy}-phone\t{trip}\t{policy}\t{started}\t{started}\tt\t{float(km[k]) * 1000.0!r}"
                        f"\t{float(km[k]) * 60.0!r}\t{json.dumps(document)}\tbench")
    _copy(conn, "COPY trips (device_id, trip_id, policy_id, status, started_at, ended_at, transport_mode)"
                " FROM STDIN", trips)
    _copy(conn, "COPY trip_features (device_id, trip_id, policy_id, started_at, ended_at, scored, distance_m,"
                " duration_s, features, code_version) FROM STDIN", features)
    conn.execute("ANALYZE")


def timed(function: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 policies, under 60 s")
    args = parser.parse_args(argv)
    n_policies = 20_000 if args.quick else 100_000
    plan = default_plan()
    with scratch_database(database_url(), "ubi_bench_reprice") as url:
            with psycopg.connect(url, autocommit=True) as conn:
                load_seconds, _ = timed(lambda: load_portfolio(conn, n_policies, seed=1))
                print(f"loaded {n_policies} policies, {n_policies * TRIPS_PER_POLICY} trips in {load_seconds:.1f} s",
                      file=sys.stderr)
                publish_plan(conn, plan)
                first_s, written = timed(lambda: reprice_period(conn, plan, *PERIOD))
                read_s, inputs = timed(lambda: read_period(conn, plan, *PERIOD))
                targets = coaching_targets_of(inputs.frame, plan)
                price_s, priced = timed(lambda: price_period(inputs, plan, targets))
                write_s, _ = timed(lambda: write_premiums(conn, priced, plan, *PERIOD, kind="period"))
                memory_s = min(timed(lambda: price_with_breakdown(inputs.frame, plan))[0] for _ in range(3))
                now = datetime(2026, 10, 31, 12, tzinfo=UTC)
                provisional_premium(conn, "B0000001", now, plan=plan)
                provisional = sorted(timed(lambda: provisional_premium(conn, "B0000001", now, plan=plan))[0]
                                     for _ in range(15))
                stored = conn.execute("SELECT count(*) FROM premiums WHERE kind = 'period'").fetchone()
    assert written == n_policies and stored == (n_policies,), (written, stored)
    result = {
        "policies": n_policies,
        "trips": n_policies * TRIPS_PER_POLICY,
        "db_reprice_policies_per_s": round(n_policies / first_s),
        "read_inputs_policies_per_s": round(n_policies / read_s),
        "price_breakdown_coach_audit_policies_per_s": round(n_policies / price_s),
        "write_premiums_rerun_policies_per_s": round(n_policies / write_s),
        "in_memory_price_with_breakdown_policies_per_s": round(n_policies / memory_s),
        "db_over_in_memory_slowdown": round(first_s / memory_s, 1),
        "provisional_premium_ms_median": round(provisional[len(provisional) // 2] * 1000, 1),
        "provisional_premium_ms_max": round(provisional[-1] * 1000, 1),
    }
    for key, value in result.items():
        print(f"{key:>46}: {value}", file=sys.stderr, flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
