"""Uploads over real HTTP into the real TimescaleDB: idempotency, partial acceptance, limits."""

from __future__ import annotations

import gzip
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import psycopg
import pytest

from tests.service.conftest import DeviceCreds, idem
from tests.service.payloads import batches, drive

pytestmark = pytest.mark.db


def stored_rows(db_url: str, device_id: str, table: str = "gps_samples") -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE device_id = %s",
                           (device_id,)).fetchone()
    assert row is not None
    return int(row[0])


def one_batch(device: DeviceCreds, trip_id: str = "trip-1", seconds: int = 120,
              **kwargs: object) -> dict:
    return batches(device.device_id, trip_id, drive(seconds, **kwargs), 1, final=False)[0]


def test_upload_stores_every_sample_once(client: httpx.Client, device: DeviceCreds,
                                         db_url: str) -> None:
    body = one_batch(device, imu_hz=10)
    r = client.post("/v1/trips/trip-1/batches", json=body, headers={**device.headers, **idem()})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["gps"] == {"received": 120, "accepted": 120, "stored": 120, "already_stored": 0,
                          "duplicates_in_batch": 0, "rejected": 0}
    assert out["imu"]["stored"] == 1200
    again = client.post("/v1/trips/trip-1/batches", json=body,
                        headers={**device.headers, **idem()})
    assert again.json()["gps"]["already_stored"] == 120
    assert stored_rows(db_url, device.device_id) == 120
    assert stored_rows(db_url, device.device_id, "imu_samples") == 1200


def test_rebatched_resend_days_later_is_a_no_op(client: httpx.Client, device: DeviceCreds,
                                                db_url: str) -> None:
    trip = drive(300)
    for body in batches(device.device_id, "trip-r", trip, 3, final=False):
        assert client.post("/v1/trips/trip-r/batches", json=body,
                           headers={**device.headers, **idem()}).status_code == 200
    with psycopg.connect(db_url) as conn:  # the idempotency records have long expired
        conn.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 day'"
                     " WHERE device_id = %s", (device.device_id,))
    for body in batches(device.device_id, "trip-r", trip, 5, final=False):
        r = client.post("/v1/trips/trip-r/batches", json=body, headers={**device.headers, **idem()})
        assert r.json()["gps"]["stored"] == 0
    assert stored_rows(db_url, device.device_id) == 300


@pytest.mark.parametrize(("key", "code"), [(None, "idempotency_key_missing"),
                                           ("not-a-uuid", "idempotency_key_malformed")])
def test_idempotency_key_is_required_and_a_uuid(client: httpx.Client, device: DeviceCreds,
                                                key: str | None, code: str) -> None:
    headers = dict(device.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    r = client.post("/v1/trips/t/batches", json=one_batch(device, "t"), headers=headers)
    assert r.status_code == 400
    assert r.json()["code"] == code
    assert r.headers["content-type"] == "application/problem+json"


def test_sequential_replay_returns_the_identical_response(client: httpx.Client,
                                                          device: DeviceCreds, db_url: str) -> None:
    body = one_batch(device, "trip-x")
    headers = {**device.headers, **idem()}
    first = client.post("/v1/trips/trip-x/batches", json=body, headers=headers)
    for _ in range(20):
        again = client.post("/v1/trips/trip-x/batches", json=body, headers=headers)
        assert again.status_code == first.status_code
        assert again.content == first.content
    assert stored_rows(db_url, device.device_id) == 120


def test_same_key_with_another_body_is_refused(client: httpx.Client, device: DeviceCreds) -> None:
    headers = {**device.headers, **idem()}
    assert client.post("/v1/trips/a/batches", json=one_batch(device, "a"),
                       headers=headers).status_code == 200
    r = client.post("/v1/trips/a/batches", json=one_batch(device, "a", seconds=60),
                    headers=headers)
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_key_reused"


def test_fifty_concurrent_duplicates_execute_once(server, device: DeviceCreds,
                                                  db_url: str) -> None:
    body = orjson.dumps(one_batch(device, "trip-c", seconds=600))
    headers = {**device.headers, **idem(), "Content-Type": "application/json"}

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post("/v1/trips/trip-c/batches", content=body, headers=headers)

    with ThreadPoolExecutor(max_workers=25) as pool:
        responses = list(pool.map(post, range(50)))
    statuses = sorted({r.status_code for r in responses})
    assert set(statuses) <= {200, 409}, statuses
    executed = [r for r in responses if r.status_code == 200
                and r.headers.get("Idempotent-Replayed") != "true"]
    assert len(executed) == 1
    replays = [r for r in responses if r.status_code == 200 and r not in executed]
    assert all(r.content == executed[0].content for r in replays)
    assert stored_rows(db_url, device.device_id) == 600


def test_partial_acceptance_names_each_rejected_sample(client: httpx.Client,
                                                       device: DeviceCreds, db_url: str) -> None:
    body = one_batch(device, "trip-p", seconds=20)
    gps = body["gps"]
    now_us = time.time_ns() // 1000
    gps["lat_deg"][1] = None
    gps["lat_deg"][2] = 95.0
    gps["lon_deg"][3] = -181.0
    gps["accuracy_m"][4] = -2.0
    gps["t_us"][5] = now_us + 3600 * 1_000_000
    gps["t_us"][6] = now_us - 400 * 86_400 * 1_000_000
    gps["speed_mps"][7] = None  # optional: stored as NULL, not rejected
    for col in gps.values():  # a duplicate of sample 10, and the batch out of order
        col.append(col[10])
    for col in gps.values():
        col.reverse()
    r = client.post("/v1/trips/trip-p/batches", json=body, headers={**device.headers, **idem()})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["gps"]["received"] == 21
    assert out["gps"]["rejected"] == 6
    assert out["gps"]["duplicates_in_batch"] == 1
    assert out["gps"]["stored"] == 14
    reasons = {(x["seq"], x["field"], x["reason"]) for x in out["rejected"]}
    assert reasons == {
        (1, "gps.lat_deg", "missing value"), (2, "gps.lat_deg", "outside [-90.0, 90.0]"),
        (3, "gps.lon_deg", "outside [-180.0, 180.0]"), (4, "gps.accuracy_m", "negative"),
        (5, "gps.t_us", "more than 5 minutes in the future"),
        (6, "gps.t_us", "older than the retention window"),
    }
    with psycopg.connect(db_url) as conn:
        seqs = [r[0] for r in conn.execute(
            "SELECT seq FROM gps_samples WHERE device_id = %s ORDER BY time", (device.device_id,))]
    assert seqs == sorted(seqs) and len(seqs) == 14


@pytest.mark.parametrize(("mutate", "status", "code", "field"), [
    (lambda b: b["gps"].pop("lat_deg"), 422, "missing_field", "gps.lat_deg"),
    (lambda b: b["gps"]["lon_deg"].pop(), 422, "length_mismatch", "gps.lon_deg"),
    (lambda b: b["gps"].__setitem__("t_us", ["soon"] * 120), 422, "bad_type", "gps.t_us"),
    (lambda b: b.__setitem__("colour", "red"), 422, "unknown_field", "colour"),
    (lambda b: b.__setitem__("device_id", "someone-else"), 403, "device_mismatch", "device_id"),
])
def test_malformed_batches_are_refused_whole(client: httpx.Client, device: DeviceCreds,
                                             mutate, status: int, code: str, field: str,
                                             db_url: str) -> None:
    body = one_batch(device, "trip-m")
    mutate(body)
    r = client.post("/v1/trips/trip-m/batches", json=body, headers={**device.headers, **idem()})
    assert r.status_code == status, r.text
    assert (r.json()["code"], r.json()["field"]) == (code, field)
    assert stored_rows(db_url, device.device_id) == 0


def test_not_json_is_a_400(client: httpx.Client, device: DeviceCreds) -> None:
    r = client.post("/v1/trips/t/batches", content=b"{nope",
                    headers={**device.headers, **idem(), "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["code"] == "bad_json"


def test_gzip_body_is_accepted(client: httpx.Client, device: DeviceCreds) -> None:
    body = gzip.compress(orjson.dumps(one_batch(device, "trip-z")))
    r = client.post("/v1/trips/trip-z/batches", content=body,
                    headers={**device.headers, **idem(), "Content-Encoding": "gzip",
                             "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["gps"]["stored"] == 120


def test_size_limits_and_gzip_bomb(client: httpx.Client, device: DeviceCreds) -> None:
    headers = {**device.headers, "Content-Type": "application/json"}
    big = b" " * (21 * 1024 * 1024)
    r = client.post("/v1/trips/t/batches", content=big, headers={**headers, **idem()})
    assert r.status_code == 413
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]")
    assert len(bomb) < 1024 * 1024
    r = client.post("/v1/trips/t/batches", content=bomb,
                    headers={**headers, **idem(), "Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert r.json()["code"] == "body_too_large"
    n = 250_001
    many = {"device_id": device.device_id, "gps": {"seq": list(range(n)), "t_us": [0] * n,
                                                   "lat_deg": [0.0] * n, "lon_deg": [0.0] * n}}
    r = client.post("/v1/trips/t/batches", json=many, headers={**headers, **idem()})
    assert r.status_code == 413
    assert r.json()["code"] == "too_many_samples"


def test_gpx_import_round_trip(client: httpx.Client, device: DeviceCreds, db_url: str) -> None:
    import numpy as np

    from telematics.service.uploads import write_gpx

    trip = drive(90)["gps"]
    gpx = write_gpx("hike", np.array(trip["t_us"]), np.array(trip["lat_deg"]),
                    np.array(trip["lon_deg"]))
    r = client.post("/v1/trips/gpx-1/gpx", content=gpx,
                    headers={**device.headers, **idem(), "Content-Type": "application/gpx+xml"})
    assert r.status_code == 200, r.text
    assert r.json()["gps"]["stored"] == 90
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM time) * 1e6)::bigint, lat_deg, lon_deg FROM gps_samples"
            " WHERE device_id = %s AND trip_id = 'gpx-1' ORDER BY time",
            (device.device_id,)).fetchall()
    assert [r[0] for r in rows] == trip["t_us"]
    assert [r[1] for r in rows] == trip["lat_deg"]
    assert [r[2] for r in rows] == trip["lon_deg"]
    r = client.post("/v1/trips/gpx-2/gpx", content=b"<gpx><trk><trkseg><trkpt lat='1' lon='2'/>"
                    b"</trkseg></trk></gpx>", headers={**device.headers, **idem()})
    assert r.status_code == 422
    assert r.json()["field"] == "trkpt[0].time"


def test_obd_feed_is_stored_in_si_units(client: httpx.Client, device: DeviceCreds,
                                        db_url: str) -> None:
    start = time.time_ns() // 1000 - 3_600_000_000
    body = {"device_id": device.device_id, "feed_id": "feed-1", "obd": {
        "seq": [0, 1, 2], "t_us": [start, start + 1_000_000, start + 2_000_000],
        "speed_kmh": [0, 36, 72], "rpm": [800.0, 1500.0, 2200.0],
        "odometer_km": [1000.0, 1000.0, 1000.1], "ignition": [True, True, True]}}
    r = client.post("/v1/obd/feeds", json=body, headers={**device.headers, **idem()})
    assert r.status_code == 200, r.text
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT speed_mps, odometer_m, ignition FROM obd_samples"
                            " WHERE device_id = %s ORDER BY seq", (device.device_id,)).fetchall()
    assert rows == [(0.0, 1_000_000.0, True), (10.0, 1_000_000.0, True),
                    (20.0, pytest.approx(1_000_100.0), True)]


def test_unknown_trip_reads_are_404(client: httpx.Client, device: DeviceCreds) -> None:
    r = client.get(f"/v1/trips/{uuid.uuid4().hex}", headers=device.headers)
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
