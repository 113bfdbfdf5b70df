"""Customer control: consent, role separation, retention, export, erasure, human review."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pricing.plan import default_plan
from telematics.maintenance import run_maintenance
from telematics.rating import publish_plan
from telematics.service.settings import Settings
from telematics.store import privacy as privacy_sql
from telematics.store.provision import as_pricing_role
from telematics.store.repository import GPS, Store
from tests.service.conftest import (
    CATEGORIES,
    RATED,
    DeviceCreds,
    Tokens,
    grant,
    idem,
    register,
)
from tests.service.payloads import batches, drive
from tests.workbench.premiums import portfolio, write_premiums

pytestmark = pytest.mark.db


def obd_body(device: DeviceCreds) -> dict:
    start = time.time_ns() // 1000 - 3_600_000_000
    return {"device_id": device.device_id, "feed_id": f"feed-{start}",
            "obd": {"seq": [0, 1], "t_us": [start, start + 1_000_000], "speed_kmh": [0, 10]}}


UPLOADS = {
    "location": lambda d: ("/v1/trips/c-1/batches",
                           {k: v for k, v in batches(d.device_id, "c-1", drive(30), 1,
                                                     final=False)[0].items() if k != "imu"}),
    "motion": lambda d: ("/v1/trips/c-2/batches",
                         {"device_id": d.device_id, **{k: v for k, v in drive(
                             5, imu_hz=10).items() if k == "imu"}}),
    "obd": lambda d: ("/v1/obd/feeds", obd_body(d)),
}


@pytest.mark.parametrize("category", sorted(UPLOADS))
@pytest.mark.parametrize("state", ["never", "granted", "withdrawn"])
def test_consent_matrix_for_uploads(client: httpx.Client, tokens: Tokens, category: str,
                                    state: str) -> None:
    dev = register(client, tokens, consent=False)
    others = tuple(c for c in CATEGORIES if c != category)
    grant(client, dev, others)
    if state in ("granted", "withdrawn"):
        grant(client, dev, (category,))
    if state == "withdrawn":
        grant(client, dev, (category,), granted=False)
    path, body = UPLOADS[category](dev)
    r = client.post(path, json=body, headers={**dev.headers, **idem()})
    if state == "granted":
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "consent_missing"
        assert r.json()["category"] == category


@pytest.mark.parametrize("state", ["granted", "withdrawn"])
def test_consent_for_pricing_decides_what_the_score_uses(client: httpx.Client, tokens: Tokens,
                                                         state: str) -> None:
    dev = register(client, tokens)
    for body in batches(dev.device_id, "t-s", drive(900), 2):
        assert client.post("/v1/trips/t-s/batches", json=body,
                           headers={**dev.headers, **idem()}).status_code == 200
    if state == "withdrawn":
        grant(client, dev, ("location",), granted=False, purposes=("pricing",))
    for who in (dev.headers, {"Authorization": f"Bearer {tokens.underwriter}"}):
        score = client.get(f"/v1/policies/{dev.policy_id}/score", headers=who).json()
        if state == "granted":
            assert (score["basis"], score["trips"]) == ("driving", 1)
        else:
            assert (score["basis"], score["trips"], score["rates"]) == (
                "missing_data_rule", 0, {})
    consents = client.get(f"/v1/policies/{dev.policy_id}/consents", headers=dev.headers).json()
    location_pricing = next(c for c in consents["consents"]
                            if (c["category"], c["purpose"]) == ("location", "pricing"))
    assert location_pricing["granted"] is (state == "granted")


def test_transparency_names_every_category(client: httpx.Client) -> None:
    out = client.get("/v1/transparency").json()
    assert set(out["categories"]) == set(CATEGORIES)
    for text in out["categories"].values():
        assert {"collected", "kept", "price_effect"} <= set(text)


@pytest.mark.parametrize("table", ["gps_samples", "imu_samples", "obd_samples",
                                   "privacy_keys", "idempotency_keys", "api_tokens"])
def test_pricing_role_cannot_read_raw_or_secret_tables(db_url: str, table: str) -> None:
    with psycopg.connect(as_pricing_role(db_url)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(table)))


def test_the_pricing_connection_is_derived_once_from_the_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The main database as ubi_pricing (another user's password is not sent for it),
    unless UBI_PRICING_DATABASE_URL names the pricing side's connection."""
    settings = Settings(database_url="postgresql://postgres:secret@db.example:5433/ubi")
    assert psycopg.conninfo.conninfo_to_dict(settings.pricing_database_url) == {
        "user": "ubi_pricing", "host": "db.example", "port": "5433", "dbname": "ubi"}
    monkeypatch.setenv("UBI_DATABASE_URL", "postgresql://postgres@db.example/ubi")
    monkeypatch.delenv("UBI_PRICING_DATABASE_URL", raising=False)
    assert psycopg.conninfo.conninfo_to_dict(Settings.from_env().pricing_database_url) == {
        "user": "ubi_pricing", "host": "db.example", "dbname": "ubi"}
    own = "postgresql://ubi_pricing:its-own@pricing.example/ubi"
    monkeypatch.setenv("UBI_PRICING_DATABASE_URL", own)
    assert Settings.from_env().pricing_database_url == own
    assert (psycopg.conninfo.conninfo_to_dict(as_pricing_role(own))
            == psycopg.conninfo.conninfo_to_dict(own))  # its own password is kept


def test_pricing_connections_that_can_read_raw_samples_are_refused(db_url: str) -> None:
    with privacy_sql.connect_pricing(as_pricing_role(db_url)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("ubi_pricing",)
    with pytest.raises(privacy_sql.PricingRoleError, match="gps_samples"):
        privacy_sql.connect_pricing(db_url)


def test_pricing_role_reads_aggregates(db_url: str) -> None:
    with psycopg.connect(as_pricing_role(db_url)) as conn:
        for table in ("trip_features", "events", "trip_paths", "premiums", "policies"):
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(table)))
        conn.execute("SELECT policy_id, status, label FROM trips LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT n_gps FROM trips LIMIT 1")


@pytest.mark.parametrize("column", ["status", "n_gps", "policy_id", "started_at"])
def test_pricing_role_changes_only_the_labels_of_trips(db_url: str, column: str) -> None:
    with psycopg.connect(as_pricing_role(db_url)) as conn:
        conn.execute("UPDATE trips SET label = label, label_set_at = label_set_at WHERE false")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("UPDATE trips SET {0} = {0} WHERE false").format(
                sql.Identifier(column)))


def test_retention_drops_old_raw_chunks_and_keeps_features(db_url: str) -> None:
    now = datetime.now(UTC)
    device, policy = f"ret-{now.timestamp():.0f}", f"ret-p-{now.timestamp():.0f}"
    with Store(db_url) as store:
        store.upsert_policy(policy, "UTC")
        store.register_device(device, policy)
        for age_days, trip in ((120, "old"), (10, "recent")):
            start_us = int((now - timedelta(days=age_days)).timestamp() * 1e6)
            n = 60
            store.insert_samples(GPS, {
                "time": start_us + np.arange(n, dtype=np.int64) * 1_000_000,
                "device_id": np.full(n, device, dtype=object),
                "trip_id": np.full(n, trip, dtype=object), "seq": np.arange(n),
                "lat_deg": np.full(n, 52.0), "lon_deg": np.linspace(4.0, 4.01, n)})
        with store.connection() as conn:
            for age_days, trip in ((120, "old"), (10, "recent")):
                conn.execute(
                    "INSERT INTO trips (device_id, trip_id, policy_id, started_at, ended_at)"
                    " VALUES (%s, %s, %s, now() - make_interval(days => %s),"
                    " now() - make_interval(days => %s))", (device, trip, policy, age_days,
                                                              age_days))
                conn.execute(
                    "INSERT INTO trip_paths (device_id, trip_id, policy_id, t_s, lat_deg, lon_deg,"
                    " speed_mps, zone_start_m, zone_end_m) VALUES (%s, %s, %s, '{1}', '{52}',"
                    " '{4}', '{10}', 500, 500)", (device, trip, policy))
            conn.execute(
                "INSERT INTO trip_features (device_id, trip_id, policy_id, started_at, ended_at,"
                " scored, distance_m, duration_s, features, code_version) VALUES"
                " (%s, 'old', %s, now() - interval '120 days', now() - interval '120 days',"
                " true, 700, 60, '{}', 'test')", (device, policy))
            conn.commit()

    def raw(trip: str) -> int:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT count(*) FROM gps_samples WHERE device_id = %s"
                               " AND trip_id = %s", (device, trip)).fetchone()
        assert row is not None
        return int(row[0])

    def path(trip: str) -> bool:
        with psycopg.connect(db_url) as conn:
            return conn.execute("SELECT 1 FROM trip_paths WHERE device_id = %s AND trip_id = %s",
                                (device, trip)).fetchone() is not None

    report = run_maintenance(db_url, now=now)
    assert report["raw_chunks_dropped"]["gps_samples"] >= 1
    assert (raw("old"), raw("recent")) == (0, 60)
    # Shown positions go with the raw samples they came from.
    assert report["trip_paths_deleted"] >= 1 and (path("old"), path("recent")) == (False, True)
    run_maintenance(db_url, now=now + timedelta(days=81))  # the clock moves on
    assert raw("recent") == 0
    with psycopg.connect(db_url) as conn:
        kept = conn.execute("SELECT count(*) FROM trip_features WHERE device_id = %s",
                            (device,)).fetchone()
    assert kept == (1,)
    assert run_maintenance(db_url, now=now)["raw_chunks_dropped"]["gps_samples"] == 0


def test_idempotency_records_expire(db_url: str, client: httpx.Client,
                                    device: DeviceCreds) -> None:
    body = batches(device.device_id, "t-e", drive(30), 1, final=False)[0]
    client.post("/v1/trips/t-e/batches", json=body, headers={**device.headers, **idem()})
    report = run_maintenance(db_url, now=datetime.now(UTC) + timedelta(days=8))
    assert report["idempotency_records_deleted"] >= 1


def test_maintenance_runs_one_at_a_time_and_keeps_the_upload_window(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from telematics.maintenance import _LOCK_KEY, RetentionPolicy

    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        busy = run_maintenance(db_url)
        other.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    assert "skipped" in busy and "raw_chunks_dropped" not in busy
    assert "skipped" not in run_maintenance(db_url)
    # Without a policy given, raw samples are kept as long as uploads are accepted.
    monkeypatch.setenv("UBI_RETENTION_DAYS", "30")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert RetentionPolicy.from_env().raw_days == 30
    assert run_maintenance(db_url, now=now)["raw_cutoff"] == "2026-11-01T00:00:00+00:00"


def user_tables(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        " AND table_type = 'BASE TABLE'")}


def test_export_covers_every_table_of_the_schema(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        tables = user_tables(conn)
    covered = set(privacy_sql.EXPORT_QUERIES) | set(privacy_sql.NOT_EXPORTED)
    assert tables - covered == set(), "a table is neither exported nor explained"
    assert covered - tables == set()


def scored_driver(client: httpx.Client, tokens: Tokens, trip_id: str = "trip-x") -> DeviceCreds:
    dev = register(client, tokens)
    for body in batches(dev.device_id, trip_id, drive(900, imu_hz=5), 2):
        assert client.post(f"/v1/trips/{trip_id}/batches", json=body,
                           headers={**dev.headers, **idem()}).status_code == 200
    client.post("/v1/obd/feeds", json=obd_body(dev), headers={**dev.headers, **idem()})
    client.post(f"/v1/policies/{dev.policy_id}/reviews", json={"reason": "why so high?"},
                headers={**dev.headers, **idem()})
    return dev


def test_export_streams_everything_held(client: httpx.Client, tokens: Tokens,
                                        db_url: str) -> None:
    dev = scored_driver(client, tokens)
    with client.stream("GET", f"/v1/policies/{dev.policy_id}/export",
                       headers=dev.headers) as r:
        assert r.status_code == 200
        chunks = list(r.iter_bytes())
    import orjson

    doc = orjson.loads(b"".join(chunks))
    sections = doc["sections"]
    assert set(sections) == set(privacy_sql.EXPORT_QUERIES)
    assert len(sections["gps_samples"]) == 900
    assert len(sections["imu_samples"]) == 900 * 5
    assert len(sections["obd_samples"]) == 2
    assert len(sections["trips"]) == 3  # the trip, the OBD feed and the trip found in it
    assert sections["trip_features"][0]["trip_id"] == "trip-x"
    assert {c["category"] for c in sections["consents"]} == set(CATEGORIES)
    assert sections["review_requests"][0]["reason"] == "why so high?"
    gpx = client.get(f"/v1/policies/{dev.policy_id}/trips/trip-x/gpx", headers=dev.headers)
    assert gpx.status_code == 200
    assert gpx.text.count("<trkpt") == 900
    with psycopg.connect(db_url) as conn:
        logged = conn.execute("SELECT action, subject FROM audit_log WHERE policy_id = %s"
                              " AND action IN ('policy.export', 'trip.export_gpx')"
                              " ORDER BY audit_id", (dev.policy_id,)).fetchall()
    assert logged == [("policy.export", None), ("trip.export_gpx", "trip-x")]
    other = register(client, tokens)
    assert client.get(f"/v1/policies/{dev.policy_id}/export",
                      headers=other.headers).status_code == 404


def test_erasure_leaves_nothing_identifying(client: httpx.Client, tokens: Tokens,
                                            db_url: str) -> None:
    trip_id = f"trip-{time.time_ns()}"
    dev = scored_driver(client, tokens, trip_id)
    with psycopg.connect(db_url) as conn:
        version = publish_plan(conn, default_plan())
        conn.execute(
            "INSERT INTO premiums (policy_id, period_start, period_end, kind, plan_version,"
            " amount, currency, breakdown, inputs, code_version, sha256) VALUES (%s,"
            " '2026-10-01', '2026-11-01', 'period', %s, 42.10, 'EUR', '{}', %s,"
            " 'test', 'h')", (dev.policy_id, version,
                              Jsonb({"policy_id": dev.policy_id, "trip_ids": [trip_id],
                                     "km": 12.5})))
    r = client.post(f"/v1/policies/{dev.policy_id}/erase", headers={**dev.headers, **idem()})
    assert r.status_code == 200, r.text
    identifiers = [dev.policy_id, dev.device_id, trip_id, dev.api_key]
    with psycopg.connect(db_url) as conn:
        for table in sorted(user_tables(conn)):
            text = conn.execute(sql.SQL("SELECT coalesce(string_agg(t::text, ' '), '')"
                                        " FROM {} t").format(sql.Identifier(table))).fetchone()
            assert text is not None
            for ident in identifiers:
                assert ident not in text[0], f"{ident} remains in {table}"
        kept = conn.execute("SELECT amount, pseudonymised, inputs->>'km' FROM premiums"
                            " WHERE plan_version = %s AND code_version = 'test'"
                            " AND inputs->>'km' = '12.5'", (version,)).fetchall()
    assert [(float(a), p, km) for a, p, km in kept] == [(42.10, True, "12.5")]
    assert client.get(f"/v1/trips/{trip_id}", headers=dev.headers).status_code == 401


def test_review_request_round_trip(client: httpx.Client, tokens: Tokens) -> None:
    dev = register(client, tokens)
    r = client.post(f"/v1/policies/{dev.policy_id}/reviews",
                    json={"kind": "premium", "reason": "I was a passenger on 3 November"},
                    headers={**dev.headers, **idem()})
    assert r.status_code == 200, r.text
    review_id = r.json()["review_id"]
    uw = {"Authorization": f"Bearer {tokens.underwriter}"}
    queue = client.get("/v1/review/queue", headers=uw).json()["reviews"]
    assert review_id in [q["review_id"] for q in queue]
    assert client.get("/v1/review/queue", headers=dev.headers).status_code == 403
    d = client.post(f"/v1/review/requests/{review_id}/decision",
                    json={"decision": "accepted", "note": "trip relabelled as passenger"},
                    headers=uw)
    assert d.status_code == 200, d.text
    mine = client.get(f"/v1/policies/{dev.policy_id}/reviews", headers=dev.headers).json()
    assert mine["reviews"][0]["status"] == "accepted"
    assert mine["reviews"][0]["decision_note"] == "trip relabelled as passenger"
    again = client.post(f"/v1/review/requests/{review_id}/decision",
                        json={"decision": "rejected", "note": "changed my mind"}, headers=uw)
    assert again.status_code == 404
    # The driver view shows the decision too, without who took it.
    shown = client.get(f"/v1/driver/policies/{dev.policy_id}", headers=dev.headers).json()
    assert [(r["review_id"], r["status"], r["decision_note"]) for r in shown["reviews"]] == [
        (review_id, "accepted", "trip relabelled as passenger")]
    assert "decided_by" not in shown["reviews"][0]


def test_a_review_names_only_its_own_policys_premium_and_trip(client: httpx.Client,
                                                              tokens: Tokens,
                                                              db_url: str) -> None:
    dev, other = register(client, tokens), register(client, tokens)
    for creds, trip_id in ((dev, "rq-own"), (other, "rq-other")):
        body = batches(creds.device_id, trip_id, drive(30), 1, final=False)[0]
        r = client.post(f"/v1/trips/{trip_id}/batches", json=body,
                        headers={**creds.headers, **idem()})
        assert r.status_code == 200, r.text
    with psycopg.connect(db_url) as conn:
        theirs = write_premiums(conn, portfolio([other.policy_id], seed=3),
                                (date(2026, 10, 1), date(2026, 11, 1)))[other.policy_id]
        mine = write_premiums(conn, portfolio([dev.policy_id], seed=3),
                              (date(2026, 10, 1), date(2026, 11, 1)))[dev.policy_id]
    bad = {"premium_id": [theirs, 2**62], "trip_id": ["rq-other", "no-such-trip"]}
    for field, values in bad.items():
        for value in values:
            r = client.post(f"/v1/policies/{dev.policy_id}/reviews",
                            json={"kind": "premium", "reason": "x", field: value},
                            headers={**dev.headers, **idem()})
            assert r.status_code == 422, (field, value, r.text)
            assert r.json()["field"] == field and r.json()["code"] == "invalid_reference"
    r = client.post(f"/v1/policies/{dev.policy_id}/reviews",
                    json={"kind": "event", "reason": "x", "premium_id": mine,
                          "trip_id": "rq-own"}, headers={**dev.headers, **idem()})
    assert r.status_code == 200, r.text
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT premium_id, device_id, trip_id FROM review_requests"
                              " WHERE policy_id = %s", (dev.policy_id,)).fetchall()
    assert stored == [(mine, dev.device_id, "rq-own")]


def wait_until_repriced(db_url: str, policy_id: str, timeout_s: float = 20.0) -> None:
    """Until no provisional repricing of the policy is pending (the repricer's claim and
    its premium commit together)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with psycopg.connect(db_url) as conn:
            if conn.execute("SELECT 1 FROM provisional_due WHERE policy_id = %s",
                            (policy_id,)).fetchone() is None:
                return
        time.sleep(0.2)
    raise AssertionError(f"policy {policy_id} still waits for its provisional premium")


def months_around(day: date) -> tuple[tuple[date, date], tuple[date, date]]:
    """The month of `day` and the month before it."""
    this = day.replace(day=1)
    after = (this.replace(year=this.year + 1, month=1) if this.month == 12
             else this.replace(month=this.month + 1))
    before = (this.replace(year=this.year - 1, month=12) if this.month == 1
              else this.replace(month=this.month - 1))
    return (before, this), (this, after)


def test_the_review_queue_carries_the_breakdown_and_the_evidence(
        client: httpx.Client, tokens: Tokens, db_url: str) -> None:
    dev = register(client, tokens, rating_factors=RATED)
    now_us = time.time_ns() // 1000
    for trip_id, start_us in (("rq-1", now_us - 4_500_000_000), ("rq-2", now_us - 9_000_000_000)):
        for body in batches(dev.device_id, trip_id, drive(900, start_us=start_us), 2):
            r = client.post(f"/v1/trips/{trip_id}/batches", json=body,
                            headers={**dev.headers, **idem()})
            assert r.status_code == 200, r.text
    r = client.post("/v1/trips/rq-2/label", json={"label": "passenger", "reason": "not me"},
                    headers={**dev.headers, **idem()})
    assert r.status_code == 200, r.text
    zone = ZoneInfo("Europe/Amsterdam")
    with psycopg.connect(db_url) as conn:
        trips = conn.execute("SELECT trip_id, started_at FROM trips WHERE policy_id = %s",
                             (dev.policy_id,)).fetchall()
        first = min(s for _, s in trips).astimezone(zone).date()
        previous, current = months_around(first)
        earlier_id = write_premiums(conn, portfolio([dev.policy_id], seed=4),
                                    previous)[dev.policy_id]
        write_premiums(conn, portfolio([dev.policy_id], seed=5), current)
    wait_until_repriced(db_url, dev.policy_id)
    asks = {"trip": {"kind": "event", "trip_id": "rq-1", "reason": "that braking was a cat"},
            "latest": {"kind": "premium", "reason": "what raised my premium?"},
            "named": {"kind": "premium", "premium_id": earlier_id, "reason": "and this one?"}}
    review_ids = {}
    for name, body in asks.items():
        r = client.post(f"/v1/policies/{dev.policy_id}/reviews", json=body,
                        headers={**dev.headers, **idem()})
        assert r.status_code == 200, r.text
        review_ids[name] = r.json()["review_id"]
    uw = {"Authorization": f"Bearer {tokens.underwriter}"}
    r = client.get("/v1/review/queue", headers=uw)
    assert r.status_code == 200, r.text
    queue = {q["review_id"]: q for q in r.json()["reviews"]}
    entries = {name: queue[review_id] for name, review_id in review_ids.items()}
    with psycopg.connect(db_url) as conn:
        latest_id, latest_doc, latest_start, latest_end = conn.execute(
            "SELECT premium_id, breakdown, period_start, period_end FROM premiums"
            " WHERE policy_id = %s ORDER BY updated_at DESC, premium_id DESC LIMIT 1",
            (dev.policy_id,)).fetchone()
        features = conn.execute("SELECT distance_m, features FROM trip_features"
                                " WHERE device_id = %s AND trip_id = 'rq-1'",
                                (dev.device_id,)).fetchone()
        events = conn.execute("SELECT event_no, kind FROM events WHERE device_id = %s"
                              " AND trip_id = 'rq-1' ORDER BY event_no",
                              (dev.device_id,)).fetchall()
    # The breakdown in money: the premium contested, else the latest, line by line.
    for name in ("trip", "latest"):
        premium = entries[name]["premium"]
        assert premium["premium_id"] == latest_id and premium["named"] is False
        assert premium["premium_cents"] == latest_doc["premium_cents"]
        assert [line["amount_cents"] for line in premium["lines"]] == [
            line["amount_cents"] for line in latest_doc["lines"]]
        assert sum(Decimal(line["amount"]) for line in premium["lines"]) == Decimal(
            premium["amount"])
        assert premium["previous"]["premium_id"] == earlier_id
        assert Decimal(premium["change"]) == Decimal(premium["amount"]) - Decimal(
            premium["previous"]["amount"])
    named = entries["named"]["premium"]
    assert named["premium_id"] == earlier_id and named["named"] is True
    assert named["period_start"] == previous[0].isoformat() and named["previous"] is None
    # The evidence: the named trip's features and events ...
    evidence = entries["trip"]["evidence"]
    assert evidence["scope"] == "trip" and evidence["trip"]["device_id"] == dev.device_id
    assert evidence["trip"]["features"] == features[1]
    assert evidence["trip"]["distance_km"] == pytest.approx(features[0] / 1000, abs=1e-3)
    assert [(e["event_no"], e["kind"]) for e in evidence["events"]] == events and events
    # ... else the trips of the premium's period, the relabelled one not counted.
    def in_period(start: date, end: date) -> set[str]:
        return {t for t, s in trips if start <= s.astimezone(zone).date() < end}

    evidence = entries["latest"]["evidence"]
    assert evidence["scope"] == "period"
    assert (evidence["since"], evidence["until"]) == (latest_start.isoformat(),
                                                      latest_end.isoformat())
    assert {t["trip_id"] for t in evidence["trips"]} == in_period(latest_start, latest_end)
    counted = {t["trip_id"]: t["counted"] for t in evidence["trips"]}
    assert counted.get("rq-2") in (None, False) and counted.get("rq-1") in (None, True)
    if "rq-1" in counted:
        assert evidence["totals"]["km"] == pytest.approx(features[0] / 1000, abs=1e-3)
        assert evidence["totals"]["events"] == dict(Counter(k for _, k in events))
    assert {t["trip_id"] for t in entries["named"]["evidence"]["trips"]} == in_period(*previous)
