"""Uploads over real HTTP into the real TimescaleDB: idempotency, partial acceptance, limits."""

from __future__ import annotations

import gzip
import json
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import psycopg
import pytest

from telematics.ingest import MAX_SAMPLES_PER_BATCH, WireError
from telematics.service.auth import Principal
from telematics.service.settings import Settings
from telematics.service.uploads import parse_trip_batch
from tests.service.conftest import DeviceCreds, idem
from tests.service.payloads import batches, drive

pytestmark = pytest.mark.db


def stored_seqs(db_url: str, device_id: str, table: str) -> list[int]:
    """Every stored sample's seq, repeats included, in order."""
    with psycopg.connect(db_url) as conn:
        return [r[0] for r in conn.execute(f"SELECT seq FROM {table} WHERE device_id = %s"
                                           " ORDER BY seq", (device_id,))]


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


def waits_for_a_trip_lock(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT count(*) > 0 FROM pg_stat_activity"
                       " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                       " AND query LIKE '%FROM trips%FOR UPDATE%'").fetchone()
    return bool(row and row[0])


def test_same_key_while_the_first_is_still_running_is_a_409(server, client: httpx.Client,
                                                            device: DeviceCreds,
                                                            db_url: str) -> None:
    first, second = batches(device.device_id, "trip-w", drive(60), 2, final=False)
    assert client.post("/v1/trips/trip-w/batches", json=first,
                       headers={**device.headers, **idem()}).status_code == 200
    headers = {**device.headers, **idem()}
    running: list[httpx.Response] = []

    def post_second() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            running.append(c.post("/v1/trips/trip-w/batches", json=second, headers=headers))

    with psycopg.connect(db_url) as holder, psycopg.connect(db_url, autocommit=True) as watch:
        # The upload takes its key's lock, then waits for this lock on its trip's row.
        holder.execute("SELECT 1 FROM trips WHERE device_id = %s AND trip_id = 'trip-w'"
                       " FOR UPDATE", (device.device_id,))
        upload = threading.Thread(target=post_second)
        upload.start()
        deadline = time.monotonic() + 30
        while not waits_for_a_trip_lock(watch):
            if time.monotonic() > deadline:
                holder.rollback()
                pytest.fail("the first upload never reached the trip's lock")
            time.sleep(0.01)
        duplicate = client.post("/v1/trips/trip-w/batches", json=second, headers=headers)
        assert duplicate.status_code == 409, duplicate.text
        assert duplicate.json()["code"] == "idempotency_in_progress"
        assert duplicate.headers["Retry-After"] == "1"
        holder.rollback()
    upload.join(timeout=60)
    assert running and running[0].status_code == 200, running
    assert running[0].json()["gps"]["stored"] == 30
    retry = client.post("/v1/trips/trip-w/batches", json=second, headers=headers)
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == running[0].content
    assert stored_rows(db_url, device.device_id) == 60


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


def post_json_text(client: httpx.Client, device: DeviceCreds, path: str, text: bytes,
                   headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(path, content=text, headers={
        **device.headers, **(headers or idem()), "Content-Type": "application/json"})


def test_nan_and_infinite_samples_are_rejected_one_by_one(client: httpx.Client,
                                                          device: DeviceCreds,
                                                          db_url: str) -> None:
    body = one_batch(device, "trip-nan", seconds=20, imu_hz=2)
    gps, imu = body["gps"], body["imu"]
    gps["heading_deg"] = [90.0] * 20
    gps["lat_deg"][3] = math.nan
    gps["speed_mps"][5] = math.inf
    gps["accuracy_m"][7] = -math.inf
    gps["speed_mps"][8] = math.nan  # optional, but NaN is a bad value, not a missing one
    gps["lat_deg"][9] = None
    gps["heading_deg"][11] = 123456.5  # becomes 1e999 below: beyond the float range
    imu["acc_x_mps2"][4] = math.nan
    imu["acc_z_mps2"][6] = -math.inf
    imu["acc_y_mps2"][12] = 1e308 * 10  # json.dumps writes Infinity
    text = json.dumps(body).replace("123456.5", "1e999").encode()  # Python's NaN, Infinity
    assert b"NaN" in text and b"-Infinity" in text and text.count(b"1e999") == 1
    headers = idem()
    r = post_json_text(client, device, "/v1/trips/trip-nan/batches", text, headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert {(x["seq"], x["field"], x["reason"]) for x in out["rejected"]} == {
        (3, "gps.lat_deg", "NaN value"), (5, "gps.speed_mps", "infinite value"),
        (7, "gps.accuracy_m", "infinite value"), (8, "gps.speed_mps", "NaN value"),
        (9, "gps.lat_deg", "missing value"), (11, "gps.heading_deg", "infinite value"),
        (4, "imu.acc_x_mps2", "NaN value"), (6, "imu.acc_z_mps2", "infinite value"),
        (12, "imu.acc_y_mps2", "infinite value"),
    }
    assert (out["gps"]["received"], out["gps"]["rejected"], out["gps"]["stored"]) == (20, 6, 14)
    assert (out["imu"]["received"], out["imu"]["rejected"], out["imu"]["stored"]) == (40, 3, 37)
    good_gps = sorted(set(range(20)) - {3, 5, 7, 8, 9, 11})
    good_imu = sorted(set(range(40)) - {4, 6, 12})
    assert stored_seqs(db_url, device.device_id, "gps_samples") == good_gps
    assert stored_seqs(db_url, device.device_id, "imu_samples") == good_imu
    again = post_json_text(client, device, "/v1/trips/trip-nan/batches", text, headers)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == r.content
    assert stored_seqs(db_url, device.device_id, "gps_samples") == good_gps
    assert stored_seqs(db_url, device.device_id, "imu_samples") == good_imu


def test_nan_in_an_obd_feed_rejects_that_sample(client: httpx.Client, device: DeviceCreds,
                                               db_url: str) -> None:
    start = time.time_ns() // 1000 - 3_600_000_000
    body = {"device_id": device.device_id, "feed_id": "feed-nan", "obd": {
        "seq": [0, 1, 2], "t_us": [start, start + 1_000_000, start + 2_000_000],
        "speed_kmh": [0, 36, 72], "rpm": [800.0, math.nan, 2200.0],
        "ignition": [True, True, True]}}
    r = post_json_text(client, device, "/v1/obd/feeds", json.dumps(body).encode())
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == [{"index": 1, "seq": 1, "field": "obd.rpm",
                                     "reason": "NaN value"}]
    assert stored_seqs(db_url, device.device_id, "obd_samples") == [0, 2]


@pytest.mark.parametrize(("text", "status", "code", "field"), [
    (b"{nope", 400, "bad_json", "body"),
    (b'{"gps": {"seq": [0, NaN], "t_us": [1, 2]', 400, "bad_json", "body"),  # truncated
    (b'{"device_id": "\\ud800", "x": NaN}', 400, "bad_json", "body"),  # unpaired surrogate
    (b'\xff{"x": NaN}', 400, "bad_json", "body"),  # not UTF-8
    (b"[" * 5000 + b"NaN" + b"]" * 5000, 400, "bad_json", "body"),
    (b'{"x": nan}', 400, "bad_json", "body"),
    (b"[NaN]", 422, "bad_type", "body"),
    (b'{"device_id": "{dev}", "gps": {"seq": [0, NaN], "t_us": [1, 2], "lat_deg": [1, 2],'
     b' "lon_deg": [1, 2]}}', 422, "bad_type", "gps.seq"),
    (b'{"device_id": "{dev}", "gps": {"seq": [0, 1], "t_us": [1, Infinity], "lat_deg": [1, 2],'
     b' "lon_deg": [1, 2]}}', 422, "bad_type", "gps.t_us"),
    (b'{"device_id": "{dev}", "batch_no": NaN}', 422, "bad_type", "batch_no"),
    (b'{"device_id": "{dev}", "gps": {"seq": [0], "t_us": [1], "lat_deg": [' + b"[" * 1000
     + b"]" * 1000 + b'], "lon_deg": [1]}}', 422, "bad_type", "gps.lat_deg"),
])
def test_bodies_that_are_not_json_or_misuse_nan_are_refused_whole(
        client: httpx.Client, device: DeviceCreds, db_url: str, text: bytes, status: int,
        code: str, field: str) -> None:
    text = text.replace(b"{dev}", device.device_id.encode())
    r = post_json_text(client, device, "/v1/trips/t/batches", text)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert (r.json()["code"], r.json()["field"]) == (code, field)
    assert stored_rows(db_url, device.device_id) == 0


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


def test_too_many_samples_counts_every_stream_of_the_batch(client: httpx.Client,
                                                           device: DeviceCreds,
                                                           db_url: str) -> None:
    n_gps, n_imu = 150_000, 100_001  # each under the limit, together one over
    many = {"device_id": device.device_id,
            "gps": {"seq": list(range(n_gps)), "t_us": [0] * n_gps, "lat_deg": [0.0] * n_gps,
                    "lon_deg": [0.0] * n_gps},
            "imu": {"seq": list(range(n_imu)), "t_us": [0] * n_imu,
                    "acc_x_mps2": [0.0] * n_imu, "acc_y_mps2": [0.0] * n_imu,
                    "acc_z_mps2": [0.0] * n_imu}}
    r = client.post("/v1/trips/t/batches", content=orjson.dumps(many),
                    headers={**device.headers, **idem(), "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert (problem["code"], problem["limit"], problem["samples"]) == (
        "too_many_samples", MAX_SAMPLES_PER_BATCH, 250_001)
    assert "250000 samples per batch" in problem["detail"]
    assert stored_rows(db_url, device.device_id) == 0


def test_the_sample_limit_is_a_setting(device: DeviceCreds,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UBI_MAX_SAMPLES_PER_BATCH", "30")
    settings = Settings.from_env()
    assert settings.max_samples_per_batch == 30
    who = Principal("device", device.device_id, ("device",), device.device_id, device.policy_id)
    body = one_batch(device, "trip-l", seconds=20, imu_hz=1)
    body["imu"] = {k: v[:10] for k, v in body["imu"].items()}
    gps, imu = parse_trip_batch(orjson.dumps(body), "trip-l", who, settings)[2:]
    assert gps is not None and imu is not None and gps.received + imu.received == 30
    body["imu"] = {k: v + v[:1] for k, v in body["imu"].items()}
    with pytest.raises(WireError) as refused:
        parse_trip_batch(orjson.dumps(body), "trip-l", who, settings)
    assert (refused.value.status, refused.value.code, refused.value.extra) == (
        413, "too_many_samples", {"limit": 30, "samples": 31})


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
