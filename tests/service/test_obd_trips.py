"""A dongle's continuous OBD feed: trips found by ignition or motion, scored as it arrives."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from tests.service.conftest import DeviceCreds, Tokens, idem, register

pytestmark = pytest.mark.db


def drive_profile(cruise_kmh: float, minutes: int, brake_at_s: int | None = None) -> np.ndarray:
    """1 Hz speeds in km/h: 20 s up to cruise, cruise, then down to 0 over the last 20 s;
    optionally a harsh stop (-5 m/s^2, 18 km/h per second) at ``brake_at_s``."""
    n = minutes * 60
    v = np.full(n, cruise_kmh)
    v[:20] = np.linspace(0.0, cruise_kmh, 20)
    v[-20:] = np.linspace(cruise_kmh, 0.0, 20)
    if brake_at_s is not None:
        steps = int(np.ceil(cruise_kmh / 18.0))
        v[brake_at_s:brake_at_s + steps] = np.maximum(cruise_kmh - 18.0 * np.arange(1, steps + 1),
                                                      0.0)
        v[brake_at_s + steps:brake_at_s + steps + 30] = 0.0
        v[brake_at_s + steps + 30:brake_at_s + steps + 50] = np.linspace(0.0, cruise_kmh, 20)
    return v


def feed_body(device: DeviceCreds, feed_id: str) -> dict[str, Any]:
    """Two trips 10 and 15 minutes long, ignition off for 20 minutes between them."""
    start_us = (time.time_ns() // 1000 // 1_000_000) * 1_000_000 - 6 * 3600 * 1_000_000
    first = drive_profile(54.0, 10, brake_at_s=300)
    second = drive_profile(90.0, 15)
    parked = np.zeros(20 * 60)
    speed = np.concatenate([first, parked, second, np.zeros(60)])
    ignition = np.concatenate([np.ones(first.size), np.zeros(parked.size), np.ones(second.size),
                               np.zeros(60)])
    odometer = 12_345.0 + np.floor(np.cumsum(speed / 3.6) / 100.0) / 10.0
    n = speed.size
    return {"device_id": device.device_id, "feed_id": feed_id, "obd": {
        "seq": list(range(n)), "t_us": [start_us + i * 1_000_000 for i in range(n)],
        "speed_kmh": speed.round().tolist(), "odometer_km": odometer.round(1).tolist(),
        "ignition": [bool(x) for x in ignition], "rpm": (800 + 30 * speed).tolist()}}


def stored_trips(db_url: str, device_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT t.trip_id, t.status, t.source, f.distance_m, f.features->>'n_braking'"
            " FROM trips t LEFT JOIN trip_features f USING (device_id, trip_id)"
            " WHERE t.device_id = %s ORDER BY t.source, t.started_at",
            (device_id,)).fetchall()


@pytest.fixture()
def dongle(client: httpx.Client, tokens: Tokens) -> DeviceCreds:
    return register(client, tokens, kind="obd")


def test_feed_is_split_into_scored_trips(client: httpx.Client, dongle: DeviceCreds,
                                         db_url: str) -> None:
    body = feed_body(dongle, "feed-a")
    r = client.post("/v1/obd/feeds", json=body, headers={**dongle.headers, **idem()})
    assert r.status_code == 200, r.text
    trips = r.json()["trips"]
    assert [t["status"] for t in trips] == ["scored", "scored"]
    rows = stored_trips(db_url, dongle.device_id)
    obd = [row for row in rows if row[2] == "obd"]
    assert [row[2] for row in rows].count("obd_feed") == 1
    assert len(obd) == 2
    speeds = np.array(body["obd"]["speed_kmh"]) / 3.6
    # Each trip's distance is the odometer's (0.1 km resolution) and close to the speed sum.
    first_truth = speeds[:600].sum()
    assert obd[0][3] == pytest.approx(first_truth, abs=150.0)
    assert int(obd[0][4]) == 1  # the harsh stop
    assert int(obd[1][4]) == 0
    r = client.get(f"/v1/policies/{dongle.policy_id}/score", headers=dongle.headers)
    assert r.status_code == 200, r.text
    assert r.json()["trips"] == 2


def test_feed_in_parts_and_resent_gives_the_same_trips(client: httpx.Client,
                                                       dongle: DeviceCreds, db_url: str,
                                                       tokens: Tokens) -> None:
    whole = feed_body(dongle, "feed-b")
    r = client.post("/v1/obd/feeds", json=whole, headers={**dongle.headers, **idem()})
    assert r.status_code == 200, r.text
    expected = [(row[0], row[1], row[3], row[4]) for row in stored_trips(db_url,
                                                                         dongle.device_id)]

    other = register(client, tokens, kind="obd")
    body = feed_body(other, "feed-b")
    body["obd"] = {k: v for k, v in whole["obd"].items()}
    n = len(body["obd"]["seq"])
    cut = 900  # inside the parked stretch: the first trip is finished, the second not begun
    for lo, hi in ((cut, n), (0, cut), (0, n)):  # late first half, then a full re-send
        part = {**body, "obd": {k: v[lo:hi] for k, v in body["obd"].items()}}
        r = client.post("/v1/obd/feeds", json=part, headers={**other.headers, **idem()})
        assert r.status_code == 200, r.text
    got = [(row[0], row[1], row[3], row[4]) for row in stored_trips(db_url, other.device_id)]
    assert got == expected
    with psycopg.connect(db_url) as conn:
        n_stored = conn.execute("SELECT count(*) FROM obd_samples WHERE device_id = %s",
                                (other.device_id,)).fetchone()
    assert n_stored == (n,)


def test_a_trip_still_running_is_not_scored_yet(client: httpx.Client, dongle: DeviceCreds,
                                                db_url: str) -> None:
    body = feed_body(dongle, "feed-c")
    n = 600 + 1200 + 300  # stops five minutes into the second trip, ignition still on
    body["obd"] = {k: v[:n] for k, v in body["obd"].items()}
    r = client.post("/v1/obd/feeds", json=body, headers={**dongle.headers, **idem()})
    assert r.status_code == 200, r.text
    assert [t["status"] for t in r.json()["trips"]] == ["scored", "open"]


def test_a_dongle_without_ignition_is_cut_by_motion(client: httpx.Client, dongle: DeviceCreds,
                                                    db_url: str) -> None:
    body = feed_body(dongle, "feed-d")
    del body["obd"]["ignition"]
    r = client.post("/v1/obd/feeds", json=body, headers={**dongle.headers, **idem()})
    assert r.status_code == 200, r.text
    assert [t["status"] for t in r.json()["trips"]] == ["scored", "open"]  # no stop after it
    with psycopg.connect(db_url) as conn:
        by_ignition = conn.execute(
            "SELECT features->>'by_ignition' FROM trip_features WHERE device_id = %s",
            (dongle.device_id,)).fetchall()
    assert by_ignition == [("false",)]


def test_a_drive_recorded_by_phone_and_dongle_counts_once(client: httpx.Client, tokens: Tokens,
                                                          db_url: str) -> None:
    from tests.service.payloads import batches, drive

    phone = register(client, tokens)
    r = client.post("/v1/devices", json={"device_id": f"{phone.device_id}-obd",
                                         "policy_id": phone.policy_id, "kind": "obd"},
                    headers={"Authorization": f"Bearer {tokens.admin}"})
    assert r.status_code == 201, r.text
    dongle = DeviceCreds(f"{phone.device_id}-obd", phone.policy_id, r.json()["api_key"])
    feed = feed_body(dongle, "feed-e")
    # The phone records the dongle's first trip (the same 10 minutes), not the second.
    start_us = feed["obd"]["t_us"][0]
    trip = drive(600, start_us=start_us)
    for body in batches(phone.device_id, "phone-trip", trip, 1):
        r = client.post("/v1/trips/phone-trip/batches", json=body,
                        headers={**phone.headers, **idem()})
        assert r.status_code == 200 and r.json()["trip"]["status"] == "scored", r.text
    r = client.post("/v1/obd/feeds", json=feed, headers={**dongle.headers, **idem()})
    assert [t["status"] for t in r.json()["trips"]] == ["scored", "scored"]
    with psycopg.connect(db_url) as conn:
        rows = dict(conn.execute(
            "SELECT t.source, f.distance_m FROM trip_features f JOIN trips t"
            " USING (device_id, trip_id) WHERE f.policy_id = %s AND t.source = 'phone'",
            (phone.policy_id,)).fetchall())
        second = conn.execute(
            "SELECT f.distance_m FROM trip_features f JOIN trips t USING (device_id, trip_id)"
            " WHERE f.policy_id = %s AND t.source = 'obd' ORDER BY f.started_at DESC LIMIT 1",
            (phone.policy_id,)).fetchone()
    assert second is not None
    score = client.get(f"/v1/policies/{phone.policy_id}/score", headers=phone.headers).json()
    assert score["trips"] == 2  # the phone's trip and the dongle's second trip
    assert score["distance_km"] == pytest.approx((rows["phone"] + second[0]) / 1000, abs=1e-3)
