"""Phones and dongles of a simulated fleet, talking to a running service over HTTP.

The simulator plans when each upload would reach the server (most within seconds, some
hours or days late, a few posted twice after a lost acknowledgement); this module posts
them in that order from several concurrent clients, the way the app does: one
``Idempotency-Key`` per upload (a retry re-uses it), back-off on 429 and 503, the last
batch of a trip marked ``final``. Device ids are prefixed so that a fleet never collides
with other data in the same database.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import orjson
import pandas as pd

CONSENT_CATEGORIES = ("location", "motion", "phone_use", "obd")
CONSENT_PURPOSES = ("pricing", "coaching", "claims")
_KEY_NAMESPACE = uuid.UUID("6f1c1d2e-8a8b-4c1e-9d55-0d8f5e1b7a10")


class UploadError(RuntimeError):
    """An upload the service refused for a reason a retry cannot fix."""


@dataclass
class UploadStats:
    requests: int = 0
    retried: int = 0
    replayed: int = 0  # planned duplicate posts answered from the idempotency store
    answered_from_store: int = 0  # any post the service answered with its stored response
    samples_stored: int = 0
    trips_scored: int = 0
    rejected_samples: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def device_alias(prefix: str, device_id: str) -> str:
    return f"{prefix}{device_id}"


def policy_alias(prefix: str, driver_id: int) -> str:
    return f"{prefix}pol-{int(driver_id):06d}"


def idempotency_key(*parts: object) -> str:
    """The same upload always gets the same key, so a re-post is recognised as a retry."""
    return str(uuid.uuid5(_KEY_NAMESPACE, "/".join(map(str, parts))))


def post(client: httpx.Client, path: str, *, content: bytes | None = None,
         json: Any = None, headers: dict[str, str], attempts: int = 8) -> httpx.Response:
    """POST with back-off on 429/503, on a 409 for the same key still running and on
    dropped connections; other errors raise."""
    delay = 0.2
    for attempt in range(attempts):
        try:
            response = client.post(path, content=content, json=json, headers=headers)
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
        else:
            busy = (response.status_code == 409
                    and response.headers.get("content-type", "").startswith("application/")
                    and response.json().get("code") == "idempotency_in_progress")
            if response.status_code not in (429, 503) and not busy:
                if response.status_code >= 400:
                    raise UploadError(f"POST {path}: {response.status_code} {response.text}")
                return response
            delay = max(delay, float(response.headers.get("Retry-After", delay)))
        time.sleep(delay)
        delay = min(delay * 2.0, 5.0)
    raise UploadError(f"POST {path}: still refused after {attempts} attempts")


def _replayed(response: httpx.Response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


def register_fleet(base_url: str, admin_token: str, drivers: pd.DataFrame, prefix: str,
                   start_date: date | None = None, *, clients: int = 8,
                   progress: Callable[[int], None] | None = None) -> dict[str, str]:
    """Create each driver's policy (classical rating factors, time zone), register the
    phone and, where there is one, the dongle; grant the consents. Drivers are registered
    from ``clients`` threads; ``progress`` is told of each driver done. Returns the API
    keys by (prefixed) device id."""
    admin = {"Authorization": f"Bearer {admin_token}"}

    def one(row: Any) -> dict[str, str]:
        keys: dict[str, str] = {}
        policy_id = policy_alias(prefix, int(str(row.driver_id)))
        factors = {"age_band": str(row.age_band), "vehicle_group": str(row.vehicle_group),
                   "region": str(row.region)}
        with httpx.Client(base_url=base_url, timeout=120) as client:
            post(client, "/v1/policies", headers=admin, json={
                "policy_id": policy_id, "time_zone": str(row.time_zone),
                "rating_factors": factors,
                "start_date": None if start_date is None else start_date.isoformat()})
            devices = [(str(row.device_id), "phone")]
            if bool(row.has_obd):
                devices.append((str(row.obd_device_id), "obd"))
            for device_id, kind in devices:
                alias = device_alias(prefix, device_id)
                r = post(client, "/v1/devices", headers=admin,
                         json={"device_id": alias, "policy_id": policy_id, "kind": kind})
                keys[alias] = r.json()["api_key"]
            auth = {"Authorization": f"Bearer {keys[device_alias(prefix, str(row.device_id))]}"}
            for category in CONSENT_CATEGORIES:
                for purpose in CONSENT_PURPOSES:
                    post(client, f"/v1/policies/{policy_id}/consents", json={
                        "category": category, "purpose": purpose, "granted": True,
                        "text_version": "demo-2026-11"},
                        headers={**auth, "Idempotency-Key": idempotency_key(
                            policy_id, category, purpose)})
        return keys

    keys: dict[str, str] = {}
    with ThreadPoolExecutor(clients) as pool:
        for found in pool.map(one, drivers.itertuples(index=False)):
            keys.update(found)
            if progress is not None:
                progress(1)
    return keys


def upload_fleet(base_url: str, keys: dict[str, str], prefix: str,
                 deliveries: Iterable[tuple[str, str, int, dict[str, Any]]],
                 obd_feeds: Iterable[tuple[str, str, dict[str, Any]]], *,
                 clients: int = 8, progress: Callable[[int], None] | None = None
                 ) -> UploadStats:
    """Post every planned phone upload (in plan order, from ``clients`` threads) and every
    dongle feed; return what the service said it stored and scored. A response replayed
    from the idempotency store stored nothing this time, so its counts are not added."""
    stats = UploadStats()
    seen: set[tuple[str, str, int]] = set()
    seen_lock = threading.Lock()
    local = threading.local()
    opened: list[httpx.Client] = []

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, timeout=120)
            with seen_lock:
                opened.append(local.client)
        return local.client

    def send_batch(item: tuple[str, str, int, dict[str, Any]]) -> None:
        device_id, trip_id, batch_no, payload = item
        alias = device_alias(prefix, device_id)
        body = orjson.dumps({**payload, "device_id": alias},
                            option=orjson.OPT_SERIALIZE_NUMPY)
        with seen_lock:
            again = (device_id, trip_id, batch_no) in seen
            seen.add((device_id, trip_id, batch_no))
        r = post(client(), f"/v1/trips/{trip_id}/batches", content=body, headers={
            "Authorization": f"Bearer {keys[alias]}", "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(alias, trip_id, batch_no)})
        if _replayed(r):
            stats.add(requests=1, replayed=int(again), answered_from_store=1)
        else:
            out = r.json()
            stored = sum(int(out[s]["stored"]) for s in ("gps", "imu") if out.get(s))
            scored = int(bool(payload.get("final"))
                         and out.get("trip", {}).get("status") == "scored")
            stats.add(requests=1, samples_stored=stored, trips_scored=scored,
                      replayed=int(again), rejected_samples=len(out.get("rejected", [])))
        if progress is not None:
            progress(1)

    def send_feed(item: tuple[str, str, dict[str, Any]]) -> None:
        device_id, feed_id, payload = item
        alias = device_alias(prefix, device_id)
        body = orjson.dumps({**payload, "device_id": alias}, option=orjson.OPT_SERIALIZE_NUMPY)
        r = post(client(), "/v1/obd/feeds", content=body, headers={
            "Authorization": f"Bearer {keys[alias]}", "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(alias, feed_id)})
        if _replayed(r):
            stats.add(requests=1, answered_from_store=1)
        else:
            out = r.json()
            stats.add(requests=1, samples_stored=int(out["obd"]["stored"]),
                      trips_scored=sum(t["status"] == "scored" for t in out.get("trips", [])))
        if progress is not None:
            progress(1)

    try:
        with ThreadPoolExecutor(clients) as pool:
            # map() keeps the planned order of submission; the threads overlap neighbours.
            for _ in pool.map(send_batch, deliveries):
                pass
            for _ in pool.map(send_feed, obd_feeds):
                pass
    finally:
        for c in opened:
            c.close()
    return stats
