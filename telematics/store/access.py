"""SQL for credentials and idempotency records."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg


def hash_secret(secret: str) -> bytes:
    """API keys and tokens are random 256-bit strings, so a plain SHA-256 is the right hash."""
    return hashlib.sha256(secret.encode()).digest()


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class DeviceCredential:
    device_id: str
    policy_id: str
    kind: str


@dataclass(frozen=True)
class StaffCredential:
    name: str
    scopes: tuple[str, ...]


def find_device_by_key(conn: psycopg.Connection[Any], key_hash: bytes) -> DeviceCredential | None:
    row = conn.execute(
        "SELECT device_id, policy_id, kind FROM devices"
        " WHERE api_key_hash = %s AND revoked_at IS NULL", (key_hash,)).fetchone()
    return DeviceCredential(*row) if row else None


def find_staff_by_token(conn: psycopg.Connection[Any], token_hash: bytes) -> StaffCredential | None:
    row = conn.execute(
        "SELECT name, scopes FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL",
        (token_hash,)).fetchone()
    return StaffCredential(row[0], tuple(row[1])) if row else None


def create_staff_token(conn: psycopg.Connection[Any], name: str, scopes: list[str]) -> str:
    token = new_secret("ubt")
    conn.execute("INSERT INTO api_tokens (token_hash, name, scopes) VALUES (%s, %s, %s)",
                 (hash_secret(token), name, scopes))
    return token


@dataclass(frozen=True)
class StoredResponse:
    request_sha256: bytes
    status: int
    body: bytes


def lock_and_find_idempotency_record(conn: psycopg.Connection[Any], device_id: str, key: str
                                     ) -> tuple[bool, StoredResponse | None]:
    """Try to take the transaction-scoped lock of (device, key) (False while another
    request holds it) and look up the stored response, in one round trip: the lookup runs
    after the lock is taken, in a snapshot of its own, so it sees a record that the
    request which held the lock before has committed."""
    with conn.pipeline():
        lock = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s), hashtext(%s))",
                            (device_id, key))
        found = conn.execute(
            "SELECT request_sha256, response_status, response_body FROM idempotency_keys"
            " WHERE device_id = %s AND idempotency_key = %s AND expires_at > now()",
            (device_id, key))
    locked = lock.fetchone()
    row = found.fetchone()
    return (bool(locked and locked[0]),
            StoredResponse(bytes(row[0]), int(row[1]), bytes(row[2])) if row else None)


def save_idempotency_record(conn: psycopg.Connection[Any], device_id: str, key: str,
                            request_sha256: bytes, status: int, body: bytes,
                            ttl_s: int) -> None:
    conn.execute(
        "INSERT INTO idempotency_keys (device_id, idempotency_key, request_sha256,"
        " response_status, response_body, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
        " ON CONFLICT (device_id, idempotency_key) DO UPDATE SET"
        " request_sha256 = EXCLUDED.request_sha256, response_status = EXCLUDED.response_status,"
        " response_body = EXCLUDED.response_body, created_at = now(),"
        " expires_at = EXCLUDED.expires_at",
        (device_id, key, request_sha256, status, body, ttl_s))
