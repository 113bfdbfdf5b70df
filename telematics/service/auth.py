"""Who is calling: devices by API key, staff by scoped bearer token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from telematics.service.problems import Problem
from telematics.store.access import find_device_by_key, find_staff_by_token, hash_secret


@dataclass(frozen=True)
class Principal:
    kind: str  # "device" or "staff"
    name: str
    scopes: tuple[str, ...]
    device_id: str | None = None
    policy_id: str | None = None

    def can_read_policy(self, policy_id: str) -> bool:
        if self.kind == "device":
            return self.policy_id == policy_id
        return bool({"underwriter", "admin"} & set(self.scopes))


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Problem(401, "unauthorized", "missing or malformed Authorization: Bearer header",
                      headers={"WWW-Authenticate": "Bearer"})
    return secret.strip()


def principal(request: Request) -> Principal:
    secret = _bearer(request)
    digest = hash_secret(secret)
    store = request.app.state.store
    with store.autocommit_connection() as conn:  # a read: no BEGIN and ROLLBACK around it
        device = find_device_by_key(conn, digest)
        staff = None if device else find_staff_by_token(conn, digest)
    if device is not None:
        return Principal("device", device.device_id, ("device",), device.device_id,
                         device.policy_id)
    if staff is not None:
        return Principal("staff", staff.name, staff.scopes)
    raise Problem(401, "unauthorized", "unknown or revoked credentials",
                  headers={"WWW-Authenticate": "Bearer"})


def require_device(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.kind != "device":
        raise Problem(403, "forbidden", "this endpoint is for devices (an API key)")
    return who


def require_scope(scope: str) -> Callable[[Principal], Principal]:
    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if scope not in who.scopes and "admin" not in who.scopes:
            raise Problem(403, "forbidden", f"requires the '{scope}' scope")
        return who
    return check


DeviceDep = Annotated[Principal, Depends(require_device)]
AnyPrincipal = Annotated[Principal, Depends(principal)]
UnderwriterDep = Annotated[Principal, Depends(require_scope("underwriter"))]
AdminDep = Annotated[Principal, Depends(require_scope("admin"))]


def session_or_login(who: Principal | None, message: str, *, login_url: str | None) -> Principal:
    """The page or form user behind a header or a session cookie. Without one, a page
    (``login_url`` given) sends the browser to log in and come back; a form post gets 401."""
    if who is not None:
        return who
    if login_url is not None:
        raise Problem(303, "login_required", message,
                      headers={"Location": login_url, "Cache-Control": "no-store"})
    raise Problem(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
