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
shows it in the workbench afterwards; the database holds one demo data set at a time. The
state file in ``.ubi/demo/`` records which (its options and first simulated day) and the
devices' API keys. A second run with the same options re-uses that data set whatever the
date: the same simulated days, posted again, which the service answers as retries (or,
past the idempotency records' TTL, finds already stored). Other options, a
data set older than the raw samples' retention, or a database that does not hold the
recorded devices (another database, or one reset since) replace the demo's data with a
new data set simulated up to today; ``--fresh`` always does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
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
from telematics.store.privacy import connect_pricing
from telematics.store.provision import pricing_database_url, say, up
from telematics.store.trips import COUNTS_AGAINST_DRIVER

PREFIX = "demo-"
STATE_DIR = Path(".ubi") / "demo"
STATE_FILE = STATE_DIR / "data_set.json"


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
    today: date | None = None  # the UTC date the run takes as today; None: the clock's


@dataclass(frozen=True)
class DataSet:
    """What the simulated uploads depend on: the same data set is the same requests, byte
    for byte, so the service recognises every one of them as a retry."""

    drivers: int
    days: int
    seed: int
    imu: bool
    start_date: date

    @property
    def period(self) -> tuple[date, date]:
        """The pricing period: the simulated days and the two after, for late uploads."""
        return self.start_date, self.start_date + timedelta(days=self.days + 1)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "start_date": self.start_date.isoformat()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DataSet:
        return cls(drivers=int(doc["drivers"]), days=int(doc["days"]), seed=int(doc["seed"]),
                   imu=bool(doc["imu"]), start_date=date.fromisoformat(doc["start_date"]))


@dataclass
class Elapsed:
    seconds: float = 0.0


@contextmanager
def step(title: str) -> Iterator[Elapsed]:
    """Announce a step and, when it is done, its wall time (also yielded to the caller)."""
    elapsed = Elapsed()
    started = time.perf_counter()
    say(f"{title} ...")
    yield elapsed
    elapsed.seconds = time.perf_counter() - started
    say(f"{title}: done in {elapsed.seconds:.1f} s")


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


def _read_state() -> tuple[DataSet, dict[str, str]] | None:
    """The recorded data set and its API keys; None without a readable state file."""
    try:
        doc = json.loads(STATE_FILE.read_text())
        keys = {str(alias): str(key) for alias, key in doc["keys"].items()}
        return DataSet.from_dict(doc["data_set"]), keys
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_state(data_set: DataSet, keys: dict[str, str]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    partial = STATE_FILE.with_suffix(".partial")
    # The API keys are credentials: the file is the user's alone from its creation.
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump({"data_set": data_set.to_dict(), "keys": keys}, f)
    partial.replace(STATE_FILE)


def _keys_open_devices(url: str, keys: dict[str, str]) -> bool:
    """Whether every API key opens its device in this database: a database the demo did
    not register in, or one reset since, holds none of them."""
    from telematics.store.access import hash_secret

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM devices d JOIN unnest(%s::text[], %s::bytea[]) AS k(id, hash)"
            " ON d.device_id = k.id AND d.api_key_hash = k.hash WHERE d.revoked_at IS NULL",
            (list(keys), [hash_secret(key) for key in keys.values()])).fetchone()
    return bool(keys) and row == (len(keys),)


def _stored_data_set(url: str, wanted: DataSet, today: date, *,
                     fresh: bool) -> tuple[DataSet, dict[str, str] | None]:
    """The data set to run on, with its API keys when it is already registered here.

    The recorded data set is re-used when its options are the wanted ones, its days are
    still inside the raw samples' retention (older samples are refused, or dropped, so its
    uploads could not be replayed) and its keys open its devices in this database. Else
    the demo's rows are removed (an API key is issued once: a device whose key is lost
    cannot upload again) and the wanted data set, simulated up to today, is registered.
    """
    from telematics.service.settings import retention_days_from_env

    state = None if fresh else _read_state()
    reason = "--fresh" if fresh else "no demo data set is recorded here"
    if state is not None:
        stored, keys = state
        retention_days = retention_days_from_env()
        if dataclasses.replace(stored, start_date=wanted.start_date) != wanted:
            reason = f"the recorded data set has other options ({_options(stored)})"
        # A day's margin: a local day starts hours before its UTC date in the east.
        elif (today - stored.start_date).days >= retention_days - 1:
            reason = (f"the recorded data set starts on {stored.start_date}, past the "
                      f"{retention_days} days raw samples are kept")
        elif not _keys_open_devices(url, keys):
            reason = "this database does not hold the recorded devices"
        else:
            say(f"re-using the recorded data set ({_options(stored)}, "
                f"from {stored.start_date})")
            return stored, keys
    say(f"a new data set ({_options(wanted)}, from {wanted.start_date}): {reason}")
    if fresh or _demo_policies_exist(url):
        with step("removing the previous demo's data"):
            say(f"deleted {clear_demo_data(url)} rows")
    for old in STATE_DIR.glob("*.json"):  # this data set's, and older layouts' files
        old.unlink()
    return wanted, None


def _options(data_set: DataSet) -> str:
    return (f"{data_set.drivers} drivers, {data_set.days} days, seed {data_set.seed}, "
            f"IMU {'on' if data_set.imu else 'off'}")


def _demo_policies_exist(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT EXISTS (SELECT 1 FROM policies WHERE policy_id LIKE %s)",
                            (PREFIX + "%",)).fetchone() == (True,)


def _staff_token(url: str) -> str:
    from telematics.store.access import create_staff_token

    with psycopg.connect(url) as conn:
        return create_staff_token(conn, "demo", ["admin", "underwriter"])


def _bar(total: int, desc: str, unit: str) -> tuple[tqdm[Any], Callable[[int], None]]:
    """A progress bar on stderr (on a terminal only), so stdout keeps only the summary."""
    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
               disable=None, file=sys.stderr)
    return bar, bar.update


@contextmanager
def _stage_line(desc: str, stages: int) -> Iterator[Callable[[str], None]]:
    """A progress line for a step that cannot report its own progress: the stage running,
    how many are done and the time elapsed, redrawn twice a second. Yields ``begin``:
    call it with each stage's name as the stage starts."""
    bar = tqdm(total=stages, desc=desc, leave=False, dynamic_ncols=True, disable=None,
               file=sys.stderr, bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    begun = False

    def begin(stage: str) -> None:
        nonlocal begun
        if begun:
            bar.update(1)
        begun = True
        bar.set_postfix_str(stage)

    finished = threading.Event()

    def redraw() -> None:
        while not finished.wait(0.5):
            bar.refresh()

    ticker = threading.Thread(target=redraw, name="demo-stage-line", daemon=True)
    if not bar.disable:
        ticker.start()
    try:
        yield begin
    finally:
        finished.set()
        if ticker.is_alive():
            ticker.join()
        bar.close()


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
    today = options.today or datetime.now(UTC).date()
    with step("database"):
        url = up()
    wanted = DataSet(options.drivers, options.days, options.seed, options.imu,
                     start_date=today - timedelta(days=options.days + 1))
    data_set, keys = _stored_data_set(url, wanted, today, fresh=options.fresh)
    reused = keys is not None

    with step(f"simulating {data_set.drivers} drivers over {data_set.days} days "
              f"from {data_set.start_date}"), _stage_line("simulation", 3) as begin:
        begin("drivers and their trips")
        result = simulator.generate(data_set.drivers, data_set.days, data_set.seed,
                                    imu=data_set.imu, start_date=data_set.start_date)
        begin("phone uploads")
        deliveries = list(simulator.iter_deliveries(result, data_set.seed))
        begin("dongle feeds")
        feeds = list(simulator.obd_payloads(result))
    say(f"{len(result.trips)} trips, {int(result.gps.offsets[-1]):,} GPS fixes, "
        f"{len(deliveries)} phone uploads, {len(feeds)} dongle feeds")

    with step(f"calibrating a plan on {options.policies:,} simulated policy-years"), \
            _stage_line("calibration", 5) as begin:
        begin("simulating policy-years")
        train = from_simulator_layout(simulator.simulate_policies(options.policies, options.seed))
        begin("simulating held-out policy-years")
        held_out = from_simulator_layout(
            simulator.simulate_policies(max(options.policies // 4, 1000), options.seed + 1))
        begin("rating factors")
        template, _ = fit_template(default_plan(), pd.concat([train, held_out]), relevel=True)
        begin("fitting the GLMs")
        plan = calibrate(train, template,
                         description=f"demo calibration, seed {options.seed}").plan
        begin("validating on held-out policies")
        report = validate(held_out, plan)
    # The pricing side connects as the role that cannot read raw samples, like the service's.
    pricing_url = pricing_database_url(url)
    with step("publishing the plan, so that trips are priced provisionally as they arrive"), \
            connect_pricing(pricing_url) as conn:
        plan = _unpublished_version(conn, plan)
        version = publish_plan(conn, plan, actor="demo")
        conn.commit()
    env = {"UBI_DATABASE_URL": url, "UBI_RATE_PER_S": "100000", "UBI_RATE_BURST": "100000",
           "UBI_POOL_MAX_SIZE": str(max(options.clients // 2 + 2, 6))}
    token = _staff_token(url)
    with ServerProcess(env, workers=os.cpu_count() or 1) as server:
        say(f"service running at {server.url}")
        if keys is None:
            with step("registering policies, devices and consents"):
                bar, tick = _bar(len(result.drivers), "registration", "driver")
                with bar:
                    keys = register_fleet(server.url, token, result.drivers, PREFIX,
                                          data_set.start_date, clients=options.clients,
                                          progress=tick)
            _write_state(data_set, keys)
        with step(f"uploading through HTTP from {options.clients} clients") as upload:
            bar, tick = _bar(len(deliveries) + len(feeds), "uploads", "req")
            with bar:
                stats = upload_fleet(server.url, keys, PREFIX, deliveries, feeds,
                                     clients=options.clients, progress=tick)
        with connect_pricing(pricing_url) as conn:  # the service's last round, if still due
            reprice_all_due(conn)

    period = data_set.period
    with step("repricing every traced policy for the period"), \
            _stage_line("repricing", 1) as begin, connect_pricing(pricing_url) as conn:
        policy_ids = [r[0] for r in conn.execute(
            "SELECT policy_id FROM policies WHERE policy_id LIKE %s ORDER BY policy_id",
            (PREFIX + "%",)).fetchall()]
        begin(f"{len(policy_ids)} policies")
        repriced = reprice_period(conn, plan, period[0], period[1], policy_ids, actor="demo")
        conn.commit()

    with step("truth recovery: the core against the simulator's truth"), \
            _stage_line("truth recovery", 1) as begin:
        begin(f"{len(result.trips)} trips")
        recovery = recovery_report(result)

    summary: dict[str, Any] = {
        "drivers": data_set.drivers, "days": data_set.days, "imu": data_set.imu,
        "period": [str(p) for p in period], "data_set_reused": reused,
        "uploads": {"requests": stats.requests, "planned_retries_replayed": stats.replayed,
                    "answered_from_idempotency_store": stats.answered_from_store,
                    "samples_stored": stats.samples_stored,
                    "rejected_samples": stats.rejected_samples},
        **_summary_tables(url, period),
        "plan_version": version, "repriced_policies": repriced,
        "validation": {"gini": round(float(report.gini), 4),
                       "held_out_policies": len(held_out)},
        "truth_recovery": _recovery_figures(recovery, imu=data_set.imu),
        "upload_phase_s": round(upload.seconds, 1),
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
        ("drivers", f"{summary['drivers']} over {summary['days']} days from "
                    f"{summary['period'][0]}"
                    + (" (the recorded data set, re-used)" if summary["data_set_reused"] else "")),
        ("trips (counted)", f"{summary['trips']} ({summary['counted_trips']})"),
        ("counted km", f"{summary['counted_km']:,.0f}"),
        ("events", ", ".join(f"{k} {v}" for k, v in summary["events"].items()) or "none"),
        ("uploads", f"{summary['uploads']['requests']} requests "
                    f"({summary['uploads']['answered_from_idempotency_store']} answered as "
                    f"retries), {summary['uploads']['samples_stored']:,} samples stored"),
        ("plan", f"{summary['plan_version']} (held-out Gini {summary['validation']['gini']})"),
        ("premiums", ", ".join(f"{k} {v}" for k, v in summary["premiums"].items())),
        (f"truth: events ({summary['truth_recovery']['sensors']})", ", ".join(
            f"{k} P {v['precision']} R {v['recall']}"
            for k, v in summary["truth_recovery"]["events"].items())),
        ("truth: distance", f"median error {summary['truth_recovery']['distance_median_abs_rel_error']:.3%}"),
        ("truth: mode", f"car scored {summary['truth_recovery']['car_trips_scored']:.1%}, "
                        f"bus/train/walk not scored "
                        f"{summary['truth_recovery']['bus_train_walk_not_scored']:.1%}"),
        ("wall time", f"{summary['wall_time_s']} s, of which uploads "
                      f"{summary['upload_phase_s']} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print("\n  the workbench, on the demo's data:\n"
          "    TOKEN=$(.venv/bin/ubi tokens create --name me --scope underwriter)\n"
          f"    .venv/bin/ubi serve    # then open {workbench_url}/ and log in with $TOKEN")
