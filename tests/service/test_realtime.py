"""A trip's effect is visible right after upload: close, features, score, labels."""

from __future__ import annotations

import random
import time

import httpx
import psycopg
import pytest

from telematics.service.settings import Settings
from tests.service.conftest import RATED, DeviceCreds, ServerThread, Tokens, idem, register
from tests.service.payloads import batches, drive

pytestmark = pytest.mark.db


def upload(client: httpx.Client, device: DeviceCreds, trip_id: str, bodies: list[dict]) -> dict:
    out: dict = {}
    for body in bodies:
        r = client.post(f"/v1/trips/{trip_id}/batches", json=body,
                        headers={**device.headers, **idem()})
        assert r.status_code == 200, r.text
        out = r.json()
    return out


def test_final_batch_scores_the_trip(client: httpx.Client, device: DeviceCreds) -> None:
    out = upload(client, device, "trip-f", batches(device.device_id, "trip-f", drive(1200), 4))
    assert out["trip"]["status"] == "scored"
    assert out["trip"]["distance_m"] > 10_000
    trip = client.get("/v1/trips/trip-f", headers=device.headers).json()
    assert trip["status"] == "scored"
    assert trip["features"]["scored"] is True
    assert trip["features"]["distance_m"] == pytest.approx(out["trip"]["distance_m"])
    kinds = {e["kind"] for e in trip["events"]}
    assert "braking" in kinds  # the drive stops hard (-5 m/s^2) every five minutes
    score = client.get(f"/v1/policies/{device.policy_id}/score", headers=device.headers).json()
    assert score["trips"] == 1
    assert score["distance_km"] == pytest.approx(out["trip"]["distance_m"] / 1000, abs=1e-3)
    assert score["rates"]["braking_per_100km"] > 0


def test_out_of_order_batches_give_the_same_features(client: httpx.Client,
                                                     tokens: Tokens) -> None:
    trip = drive(1200, seed=4)
    a, b = register(client, tokens), register(client, tokens)
    upload(client, a, "trip-o", batches(a.device_id, "trip-o", trip, 6, final=False))
    shuffled = batches(b.device_id, "trip-o", trip, 6, final=False)
    random.Random(1).shuffle(shuffled)
    upload(client, b, "trip-o", shuffled + shuffled[:2])  # late duplicates too
    fa = client.post("/v1/trips/trip-o/close", headers={**a.headers, **idem()}).json()
    fb = client.post("/v1/trips/trip-o/close", headers={**b.headers, **idem()}).json()
    assert fa["trip"] == fb["trip"]
    ta = client.get("/v1/trips/trip-o", headers=a.headers).json()
    tb = client.get("/v1/trips/trip-o", headers=b.headers).json()
    for key in ("computed_at",):
        ta["features"].pop(key), tb["features"].pop(key)
    assert ta["features"] == tb["features"]
    strip = [{k: v for k, v in e.items()} for e in ta["events"]]
    assert strip == tb["events"]


def test_late_batch_after_close_rescores(client: httpx.Client, device: DeviceCreds) -> None:
    parts = batches(device.device_id, "trip-l", drive(1200), 3, final=False)
    upload(client, device, "trip-l", parts[:2])
    first = client.post("/v1/trips/trip-l/close", headers={**device.headers, **idem()}).json()
    late = upload(client, device, "trip-l", parts[2:])
    assert late["trip"]["status"] == "scored"
    assert late["trip"]["distance_m"] > first["trip"]["distance_m"] * 1.3


def test_labels_exclude_trips_and_underwriters_can_reverse(
        client: httpx.Client, device: DeviceCreds, tokens: Tokens, db_url: str) -> None:
    upload(client, device, "trip-a", batches(device.device_id, "trip-a", drive(900, seed=1), 2))
    upload(client, device, "trip-b", batches(device.device_id, "trip-b",
                                             drive(900, seed=2, start_us=time.time_ns() // 1000
                                                   - 7200 * 1_000_000), 2))
    before = client.get(f"/v1/policies/{device.policy_id}/score", headers=device.headers).json()
    assert before["trips"] == 2
    r = client.post("/v1/trips/trip-b/label", json={"label": "passenger"},
                    headers={**device.headers, **idem()})
    assert r.status_code == 200, r.text
    after = client.get(f"/v1/policies/{device.policy_id}/score", headers=device.headers).json()
    assert after["trips"] == 1
    assert after["distance_km"] < before["distance_km"]
    uw = {"Authorization": f"Bearer {tokens.underwriter}"}
    r = client.post(f"/v1/review/trips/{device.device_id}/trip-b/label",
                    json={"label": "driver", "reason": "GPS shows the phone owner's car"},
                    headers=uw)
    assert r.status_code == 200
    restored = client.get(f"/v1/policies/{device.policy_id}/score", headers=uw).json()
    assert restored["trips"] == 2
    with psycopg.connect(db_url) as conn:
        actions = [r[0] for r in conn.execute(
            "SELECT action FROM audit_log WHERE policy_id = %s AND subject = 'trip-b'"
            " ORDER BY audit_id", (device.policy_id,))]
    assert actions == ["trip.label", "trip.label.review"]


def test_label_window_is_thirty_days(client: httpx.Client, device: DeviceCreds,
                                     db_url: str) -> None:
    upload(client, device, "trip-old", batches(device.device_id, "trip-old", drive(60), 1,
                                               final=False))
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE trips SET started_at = now() - interval '31 days'"
                     " WHERE device_id = %s", (device.device_id,))
    r = client.post("/v1/trips/trip-old/label", json={"label": "not_me"},
                    headers={**device.headers, **idem()})
    assert r.status_code == 422
    assert r.json()["code"] == "label_window_closed"


def test_inactive_trips_are_closed_by_the_sweeper(db_url: str, tokens: Tokens) -> None:
    settings = Settings(database_url=db_url, inactivity_close_s=1, sweep_interval_s=1,
                        rate_per_s=1000, rate_burst=1000)
    with ServerThread(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        dev = register(c, tokens)
        upload(c, dev, "trip-i", batches(dev.device_id, "trip-i", drive(900), 2, final=False))
        deadline = time.monotonic() + 20
        status = "open"
        while status == "open" and time.monotonic() < deadline:
            time.sleep(0.5)
            status = c.get("/v1/trips/trip-i", headers=dev.headers).json()["status"]
    assert status == "scored"


def test_a_trip_and_a_label_move_the_provisional_premium(client: httpx.Client,
                                                        tokens: Tokens) -> None:
    device = register(client, tokens, rating_factors=RATED)
    score = client.get(f"/v1/policies/{device.policy_id}/score", headers=device.headers).json()
    assert score["provisional_premium"] is None  # nothing priced yet
    upload(client, device, "trip-p", batches(device.device_id, "trip-p", drive(1200), 2))
    score = client.get(f"/v1/policies/{device.policy_id}/score", headers=device.headers).json()
    after_trip = score["provisional_premium"]
    assert after_trip is not None and after_trip["currency"] == "EUR"
    assert float(after_trip["amount"]) > 0
    r = client.post("/v1/trips/trip-p/label", json={"label": "passenger"},
                    headers={**device.headers, **idem()})
    assert r.status_code == 200, r.text
    score = client.get(f"/v1/policies/{device.policy_id}/score", headers=device.headers).json()
    after_label = score["provisional_premium"]
    # The 19 km and the hard stops no longer count: the month so far costs less.
    assert float(after_label["amount"]) < float(after_trip["amount"])
