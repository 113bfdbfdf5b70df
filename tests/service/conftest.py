"""A real uvicorn server on loopback over the test database, and credentials for it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from telematics.service.server import ServerThread
from telematics.service.settings import Settings
from telematics.store.access import create_staff_token


@pytest.fixture(scope="session")
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, rate_per_s=1000.0, rate_burst=1000)


@pytest.fixture(scope="session")
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(settings) as running:
        yield running


@dataclass(frozen=True)
class Tokens:
    admin: str
    underwriter: str


@pytest.fixture(scope="session")
def tokens(db_url: str) -> Tokens:
    with psycopg.connect(db_url) as conn:
        admin = create_staff_token(conn, "test-admin", ["admin"])
        underwriter = create_staff_token(conn, "test-underwriter", ["underwriter"])
    return Tokens(admin, underwriter)


@pytest.fixture()
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@dataclass(frozen=True)
class DeviceCreds:
    device_id: str
    policy_id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


CATEGORIES = ("location", "motion", "phone_use", "obd")


def grant(client: httpx.Client, device: DeviceCreds, categories: tuple[str, ...] = CATEGORIES,
          granted: bool = True, purposes: tuple[str, ...] = ("pricing", "coaching")) -> None:
    for category in categories:
        for purpose in purposes:
            r = client.post(f"/v1/policies/{device.policy_id}/consents",
                            json={"category": category, "purpose": purpose, "granted": granted,
                                  "text_version": "2026-11"},
                            headers={**device.headers, **idem()})
            assert r.status_code == 200, r.text


RATED = {"region": "urban", "vehicle_group": "C", "age_band": "25-34"}  # the default plan's


def register(client: httpx.Client, tokens: Tokens, kind: str = "phone",
             time_zone: str = "Europe/Amsterdam", consent: bool = True,
             rating_factors: dict[str, str] | None = None) -> DeviceCreds:
    suffix = uuid.uuid4().hex[:10]
    admin = {"Authorization": f"Bearer {tokens.admin}"}
    policy_id, device_id = f"pol-{suffix}", f"dev-{suffix}"
    r = client.post("/v1/policies", json={"policy_id": policy_id, "time_zone": time_zone,
                                          "rating_factors": rating_factors or {"region": "urban"}},
                    headers=admin)
    assert r.status_code == 201, r.text
    r = client.post("/v1/devices", json={"device_id": device_id, "policy_id": policy_id,
                                         "kind": kind}, headers=admin)
    assert r.status_code == 201, r.text
    creds = DeviceCreds(device_id, policy_id, r.json()["api_key"])
    if consent:
        grant(client, creds)
    return creds


@pytest.fixture()
def device(client: httpx.Client, tokens: Tokens) -> DeviceCreds:
    return register(client, tokens)


def idem() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}
