"""`ubi demo`: an insurer's portfolio priced from driving, end to end, on synthetic data.

1. Provision the database (TimescaleDB, migrations).
2. Simulate traced drivers over the last weeks (phones, dongles, ground truth) and a
   policy-level population with claims large enough to calibrate on.
3. Start the real service on loopback and upload every trip through HTTP the way phones
   do: batches, retries with the same idempotency key, late and out-of-order arrivals;
   dongles post their continuous OBD feeds. Trips are scored as they close.
4. Calibrate a rating plan on the simulated claims (glum GLMs), validate it on held-out
   policies, publish it, reprice every traced policy for the period, with breakdowns.
5. Compare what the core found with the simulator's truth, and write a report.

Demo data lives under the id prefix ``demo-`` in the project's database, so `ubi serve`
shows it in the workbench afterwards. A second run re-uses what is there (uploads are
idempotent); ``--fresh`` removes the demo's data first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from tqdm import tqdm

from pricing.plan import Plan
from telematics.store.provision import say, up
from telematics.store.trips import COUNTS_AGAINST_DRIVER

PREFIX = "demo-"
STATE_DIR = Path(".ubi") / "demo"


@dataclass(frozen=True)
class DemoOptions:
    drivers: int = 100
    days: int = 7
    policies: int = 50_000
    seed: int = 1
    imu: bool = False
    clients: int = 8
    fresh: bool = False
    out: Path = Path("reports") / "demo"


@contextmanager
def step(title: str) -> Iterator[None]:
    started = time.perf_counter()
    say(f"{title} ...")
    yield
    say(f"{title}: done in {time.perf_counter() - started:.1f} s")


def clear_demo_data(url: str) -> int:
    """Delete every row of the demo (ids starting with the demo prefix); returns rows."""
    pattern = PREFIX + "%"
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name, array_agg(column_name::text) FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name IN ('policy_id', 'device_id')"
            " AND table_name IN (SELECT table_name FROM information_schema.tables"
            "   WHERE table_schema = 'public' AND table_type = 'BASE TABLE')"
            " GROUP BY table_name").fetchall()
        # Children before parents: retry tables whose delete a foreign key refused.
        pending = {str(name): list(columns) for name, columns in tables}
        order = sorted(pending, key=lambda t: (t == "policies", t == "devices", t))
        deleted = 0
        for _ in range(len(order) + 1):
            failed = []
            for table in order:
                where = " OR ".join(f"{c} LIKE %s" for c in pending[table])
                try:
                    with conn.transaction():
                        cur = conn.execute(f"DELETE FROM {table} WHERE {where}",
                                           [pattern] * len(pending[table]))
                        deleted += cur.rowcount
                except psycopg.errors.ForeignKeyViolation:
                    failed.append(table)
            if not failed:
                break
            order = failed
        else:
            raise RuntimeError(f"could not clear demo rows from {', '.join(order)}")
    return deleted


def _unpublished_version(conn: psycopg.Connection[Any], plan: Plan) -> Plan:
    """The plan, or the same plan under the next free version when an earlier run
    published a different calibration under its version (plans are immutable)."""
    from pricing.plan import plan_from_dict
    from telematics.rating import plan_key

    while True:
        row = conn.execute("SELECT sha256 FROM rating_plans WHERE version = %s",
                           (plan_key(plan),)).fetchone()
        if row is None or row[0] == plan.sha256:
            return plan
        plan = plan_from_dict(dataclasses.replace(plan, version=plan.version + 1).to_dict())


def _state_file(options: DemoOptions) -> Path:
    return STATE_DIR / f"keys-{options.drivers}-{options.days}-{options.seed}.json"


def _demo_policies_exist(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT EXISTS (SELECT 1 FROM policies WHERE policy_id LIKE %s)",
                            (PREFIX + "%",)).fetchone() == (True,)


def _staff_token(url: str) -> str:
    from telematics.store.access import create_staff_token

    with psycopg.connect(url) as conn:
        return create_staff_token(conn, "demo", ["admin", "underwriter"])


def _bar(total: int, desc: str) -> tuple[tqdm[Any], Callable[[int], None]]:
    bar = tqdm(total=total, desc=desc, unit="req", leave=False, dynamic_ncols=True,
               disable=None)
    return bar, bar.update


def _summary_tables(url: str, period: tuple[date, date]) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        trips = conn.execute(
            # Counted: the trips whose km are billed (scored or too short to score).
            "SELECT count(*), count(*) FILTER (WHERE f.trip_id IS NOT NULL AND"
            f" {COUNTS_AGAINST_DRIVER}), coalesce(sum(f.distance_m) FILTER (WHERE"
            f" f.trip_id IS NOT NULL AND {COUNTS_AGAINST_DRIVER}), 0) / 1000.0"
            " FROM trips t LEFT JOIN trip_features f USING (device_id, trip_id)"
            " WHERE t.policy_id LIKE %s AND t.source <> 'obd_feed'", (PREFIX + "%",)).fetchone()
        events: dict[str, int] = dict(conn.execute(
            "SELECT e.kind, count(*) FROM events e JOIN trips t USING (device_id, trip_id)"
            " WHERE t.policy_id LIKE %s GROUP BY e.kind ORDER BY e.kind",
            (PREFIX + "%",)).fetchall())
        modes: dict[str, int] = dict(conn.execute(
            "SELECT coalesce(transport_mode, 'unknown'), count(*) FROM trips"
            " WHERE policy_id LIKE %s AND source <> 'obd_feed' GROUP BY 1",
            (PREFIX + "%",)).fetchall())
        premiums = [float(r[0]) for r in conn.execute(
            "SELECT amount FROM premiums WHERE policy_id LIKE %s AND kind = 'period'"
            " AND period_start = %s AND period_end = %s",
            (PREFIX + "%", period[0], period[1])).fetchall()]
    assert trips is not None
    amounts = np.array(premiums)
    return {
        "trips": int(trips[0]), "counted_trips": int(trips[1]), "counted_km": round(float(trips[2]), 1),
        "events": {str(k): int(v) for k, v in events.items()},
        "transport_modes": {str(k): int(v) for k, v in modes.items()},
        "premiums": {
            "policies": int(amounts.size),
            "total": round(float(amounts.sum()), 2),
            **({f"p{q}": round(float(np.percentile(amounts, q)), 2) for q in (5, 25, 50, 75, 95)}
               if amounts.size else {}),
        },
    }


def run_demo(options: DemoOptions) -> dict[str, Any]:
    import simulator
    from pricing.glm import calibrate
    from pricing.plan import default_plan
    from pricing.validate import validate
    from telematics.evaluation import recovery_report
    from telematics.loadgen import register_fleet, upload_fleet
    from telematics.provisional import reprice_all_due
    from telematics.rating import (
        fit_template,
        from_simulator_layout,
        publish_plan,
        reprice_period,
    )
    from telematics.service.server import ServerProcess

    wall = time.perf_counter()
    with step("database"):
        url = up()
    state = _state_file(options)
    if options.fresh or (_demo_policies_exist(url) and not state.exists()):
        with step("removing the previous demo's data"):
            say(f"deleted {clear_demo_data(url)} rows")
        for old in STATE_DIR.glob("keys-*.json"):
            old.unlink()

    today = datetime.now(UTC).date()
    start = today - timedelta(days=options.days + 1)
    with step(f"simulating {options.drivers} drivers over {options.days} days from {start}"):
        result = simulator.generate(options.drivers, options.days, options.seed,
                                    imu=options.imu, start_date=start)
        deliveries = list(simulator.iter_deliveries(result, options.seed))
        feeds = list(simulator.obd_payloads(result))
    say(f"{len(result.trips)} trips, {int(result.gps.offsets[-1]):,} GPS fixes, "
        f"{len(deliveries)} phone uploads, {len(feeds)} dongle feeds")

    with step(f"calibrating a plan on {options.policies:,} simulated policy-years"):
        train = from_simulator_layout(simulator.simulate_policies(options.policies, options.seed))
        held_out = from_simulator_layout(
            simulator.simulate_policies(max(options.policies // 4, 1000), options.seed + 1))
        template, _ = fit_template(default_plan(), pd.concat([train, held_out]), relevel=True)
        plan = calibrate(train, template,
                         description=f"demo calibration, seed {options.seed}").plan
        report = validate(held_out, plan)
    with step("publishing the plan, so that trips are priced provisionally as they arrive"), \
            psycopg.connect(url) as conn:
        plan = _unpublished_version(conn, plan)
        version = publish_plan(conn, plan, actor="demo")
        conn.commit()
    env = {"UBI_DATABASE_URL": url, "UBI_RATE_PER_S": "100000", "UBI_RATE_BURST": "100000",
           "UBI_POOL_MAX_SIZE": str(max(options.clients // 2 + 2, 6))}
    token = _staff_token(url)
    with ServerProcess(env, workers=os.cpu_count() or 1) as server:
        say(f"service running at {server.url}")
        with step("registering policies, devices and consents"):
            if state.exists():
                keys = json.loads(state.read_text())
            else:
                keys = register_fleet(server.url, token, result.drivers, PREFIX, start,
                                      clients=options.clients)
                state.parent.mkdir(parents=True, exist_ok=True)
                state.write_text(json.dumps(keys))
                os.chmod(state, 0o600)
        with step(f"uploading through HTTP from {options.clients} clients"):
            bar, tick = _bar(len(deliveries) + len(feeds), "uploads")
            with bar:
                stats = upload_fleet(server.url, keys, PREFIX, deliveries, feeds,
                                     clients=options.clients, progress=tick)
            with psycopg.connect(url) as conn:  # the service's last round, if still due
                reprice_all_due(conn)
        upload_s = time.perf_counter() - wall

    period = (start, today)
    with step("repricing every traced policy for the period"), \
            psycopg.connect(url) as conn:
        policy_ids = [r[0] for r in conn.execute(
            "SELECT policy_id FROM policies WHERE policy_id LIKE %s ORDER BY policy_id",
            (PREFIX + "%",)).fetchall()]
        repriced = reprice_period(conn, plan, period[0], period[1], policy_ids, actor="demo")
        conn.commit()

    with step("truth recovery: the core against the simulator's truth"):
        recovery = recovery_report(result)

    summary: dict[str, Any] = {
        "drivers": options.drivers, "days": options.days, "period": [str(p) for p in period],
        "uploads": {"requests": stats.requests, "planned_retries_replayed": stats.replayed,
                    "samples_stored": stats.samples_stored,
                    "rejected_samples": stats.rejected_samples},
        **_summary_tables(url, period),
        "plan_version": version, "repriced_policies": repriced,
        "validation": {"gini": round(float(report.gini), 4),
                       "held_out_policies": len(held_out)},
        "truth_recovery": _recovery_figures(recovery, imu=options.imu),
        "upload_phase_s": round(upload_s, 1),
        "wall_time_s": round(time.perf_counter() - wall, 1),
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (options.out / "validation.txt").write_text(str(report) + "\n")
    return summary


def _recovery_figures(report: dict[str, Any], *, imu: bool) -> dict[str, Any]:
    """Per event kind, precision and recall; without the IMU, phone handling cannot be
    seen, and harsh events come from GPS alone."""
    events = {kind: {"precision": round(v["precision"], 3), "recall": round(v["recall"], 3),
                     "truth": v["truth"]} for kind, v in report["events"].items()
              if imu or kind != "phone_handling"}
    return {"events": events, "sensors": "GPS and IMU" if imu else "GPS only",
            "distance_median_abs_rel_error": round(report["distance"]["median_abs_rel_error"], 5),
            "car_trips_scored": round(report["mode"]["car_driver_scored_share"], 3),
            "bus_train_walk_not_scored": round(report["mode"]["other_not_scored_share"], 3)}


def print_summary(summary: dict[str, Any], workbench_url: str) -> None:
    rows = [
        ("drivers", f"{summary['drivers']} over {summary['days']} days"),
        ("trips (counted)", f"{summary['trips']} ({summary['counted_trips']})"),
        ("counted km", f"{summary['counted_km']:,.0f}"),
        ("events", ", ".join(f"{k} {v}" for k, v in summary["events"].items()) or "none"),
        ("uploads", f"{summary['uploads']['requests']} requests, "
                    f"{summary['uploads']['samples_stored']:,} samples stored"),
        ("plan", f"{summary['plan_version']} (held-out Gini {summary['validation']['gini']})"),
        ("premiums", ", ".join(f"{k} {v}" for k, v in summary["premiums"].items())),
        (f"truth: events ({summary['truth_recovery']['sensors']})", ", ".join(
            f"{k} P {v['precision']} R {v['recall']}"
            for k, v in summary["truth_recovery"]["events"].items())),
        ("truth: distance", f"median error {summary['truth_recovery']['distance_median_abs_rel_error']:.3%}"),
        ("truth: mode", f"car scored {summary['truth_recovery']['car_trips_scored']:.1%}, "
                        f"bus/train/walk not scored "
                        f"{summary['truth_recovery']['bus_train_walk_not_scored']:.1%}"),
        ("wall time", f"{summary['wall_time_s']} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"\n  workbench: run `ubi serve` and open {workbench_url}")
