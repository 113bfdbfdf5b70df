"""Authorization matrix: every endpoint x every role x own and other policy."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest

from telematics.service.uploads import write_gpx
from tests.service.conftest import DeviceCreds, Tokens, idem, register
from tests.service.payloads import batches, drive

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def world(server, tokens: Tokens):
    """Two policies with a device each; each device uploads one trip of its own."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        own, other = register(c, tokens), register(c, tokens)
        upload_trip(c, own, "trip-1")
        upload_trip(c, other, "victim-trip")
    return own, other, tokens


def upload_trip(c: httpx.Client, device: DeviceCreds, trip_id: str) -> None:
    body = batches(device.device_id, trip_id, drive(60), 1, final=False)[0]
    r = c.post(f"/v1/trips/{trip_id}/batches", json=body, headers={**device.headers, **idem()})
    assert r.status_code == 200, r.text


def headers_for(role: str, own: DeviceCreds, tokens: Tokens) -> dict[str, str]:
    return {
        "none": {},
        "bad": {"Authorization": "Bearer ubk_not-a-real-key"},
        "malformed": {"Authorization": "Basic abc"},
        "device": own.headers,
        "underwriter": {"Authorization": f"Bearer {tokens.underwriter}"},
        "admin": {"Authorization": f"Bearer {tokens.admin}"},
    }[role]


ROLES = ["none", "bad", "malformed", "device", "underwriter", "admin"]

# (method, path template, body kind, expected status per role for OWN, for OTHER target)
# {p}/{d} are the target policy/device; device writes target the caller's own device.
MATRIX = [
    ("POST", "/v1/trips/new-{u}/batches", "batch",
     {"device": 200, "underwriter": 403, "admin": 403}, None),
    ("POST", "/v1/trips/{t}/close", "empty", {"device": 200, "underwriter": 403, "admin": 403},
     {"device": 404, "underwriter": 403, "admin": 403}),
    ("POST", "/v1/trips/{t}/label", "label", {"device": 200, "underwriter": 403, "admin": 403},
     {"device": 404, "underwriter": 403, "admin": 403}),
    ("POST", "/v1/obd/feeds", "obd", {"device": 200, "underwriter": 403, "admin": 403}, None),
    ("GET", "/v1/trips/{t}", None, {"device": 200, "underwriter": 403, "admin": 403},
     {"device": 404, "underwriter": 403, "admin": 403}),
    ("GET", "/v1/policies/{p}/score", None, {"device": 200, "underwriter": 200, "admin": 200},
     {"device": 404, "underwriter": 200, "admin": 200}),
    ("GET", "/v1/policies/{p}/trips", None, {"device": 200, "underwriter": 200, "admin": 200},
     {"device": 404, "underwriter": 200, "admin": 200}),
    ("POST", "/v1/review/trips/{d}/{t}/label", "label",
     {"device": 403, "underwriter": 200, "admin": 200}, None),
    ("POST", "/v1/policies", "policy", {"device": 403, "underwriter": 403, "admin": 201}, None),
    ("POST", "/v1/devices", "device", {"device": 403, "underwriter": 403, "admin": 201}, None),
    ("POST", "/v1/trips/gpx-{u}/gpx", "gpx", {"device": 200, "underwriter": 403, "admin": 403},
     None),
    ("POST", "/v1/policies/{p}/consents", "consent",
     {"device": 200, "underwriter": 403, "admin": 403},
     {"device": 404, "underwriter": 403, "admin": 403}),
    ("GET", "/v1/policies/{p}/consents", None, {"device": 200, "underwriter": 200, "admin": 200},
     {"device": 404, "underwriter": 200, "admin": 200}),
    ("GET", "/v1/policies/{p}/export", None, {"device": 200, "underwriter": 403, "admin": 403},
     {"device": 404, "underwriter": 403, "admin": 403}),
    ("GET", "/v1/policies/{p}/trips/{t}/gpx", None,
     {"device": 200, "underwriter": 403, "admin": 403},
     {"device": 404, "underwriter": 403, "admin": 403}),
    ("POST", "/v1/policies/{p}/erase", "empty", {"device": 200, "underwriter": 403, "admin": 200},
     {"device": 404, "underwriter": 403, "admin": 200}),
    ("POST", "/v1/policies/{p}/reviews", "review",
     {"device": 200, "underwriter": 403, "admin": 403},
     {"device": 404, "underwriter": 403, "admin": 403}),
    ("GET", "/v1/policies/{p}/reviews", None, {"device": 200, "underwriter": 200, "admin": 200},
     {"device": 404, "underwriter": 200, "admin": 200}),
    ("GET", "/v1/review/queue", None, {"device": 403, "underwriter": 200, "admin": 200}, None),
    ("POST", "/v1/review/requests/{r}/decision", "decision",
     {"device": 403, "underwriter": 200, "admin": 200},
     {"device": 403, "underwriter": 200, "admin": 200}),
    ("GET", "/v1/driver/policies/{p}", None, {"device": 200, "underwriter": 403, "admin": 403},
     {"device": 404, "underwriter": 403, "admin": 403}),
]
# Erasing succeeds for some roles, so its cases run on two throwaway policies of their own.
DESTRUCTIVE = {"/v1/policies/{p}/erase"}


def request_body(kind: str | None, own: DeviceCreds) -> dict:
    """httpx keyword arguments for the body of an entry's kind."""
    u = uuid.uuid4().hex[:8]
    if kind == "gpx":
        gps = drive(30)["gps"]
        return {"content": write_gpx("hike", np.array(gps["t_us"]), np.array(gps["lat_deg"]),
                                     np.array(gps["lon_deg"])),
                "headers": {"Content-Type": "application/gpx+xml"}}
    return {"json": {
        None: None,
        "empty": None,
        "batch": {k: v for k, v in batches(own.device_id, "x", drive(30), 1, final=False)[0].items()
                  if k != "trip_id"},
        "label": {"label": "passenger"},
        "obd": {"device_id": own.device_id, "feed_id": f"f-{u}",
                "obd": {"seq": [0], "t_us": [drive(1)["gps"]["t_us"][0]], "speed_kmh": [0]}},
        "policy": {"policy_id": f"pol-new-{u}", "time_zone": "Europe/Paris"},
        "device": {"device_id": f"dev-new-{u}", "policy_id": own.policy_id},
        "consent": {"category": "location", "purpose": "pricing", "granted": True,
                    "text_version": "2026-11"},
        "review": {"kind": "premium", "reason": "my premium went up after a trip I did not drive"},
        "decision": {"decision": "rejected", "note": "the trip was driven by the policyholder"},
    }[kind]}


def open_review(c: httpx.Client, device: DeviceCreds) -> int:
    r = c.post(f"/v1/policies/{device.policy_id}/reviews", **request_body("review", device),
               headers={**device.headers, **idem()})
    assert r.status_code == 200, r.text
    return int(r.json()["review_id"])


def still_there(c: httpx.Client, device: DeviceCreds, tokens: Tokens) -> bool:
    """The device's policy and credentials survive."""
    staff = c.get(f"/v1/policies/{device.policy_id}/trips",
                  headers={"Authorization": f"Bearer {tokens.admin}"})
    own = c.get(f"/v1/policies/{device.policy_id}/consents", headers=device.headers)
    return staff.status_code == own.status_code == 200 and bool(own.json()["consents"])


CASES = [pytest.param(role, target, entry, id=f"{entry[0]} {entry[1]} {target} {role}")
         for entry in MATRIX for target in ("own", "other") for role in ROLES
         if target == "own" or entry[4] is not None]


@pytest.mark.parametrize(("role", "target", "entry"), CASES)
def test_authorization_matrix(server, world, role: str, target: str, entry) -> None:
    own, other, tokens = world
    method, template, kind, expect_own, expect_other = entry
    with httpx.Client(base_url=server.url, timeout=60) as c:
        if template in DESTRUCTIVE:
            own, other = register(c, tokens), register(c, tokens)
        victim = own if target == "own" else other
        trip_id = "trip-1" if target == "own" else "victim-trip"
        if template in DESTRUCTIVE:
            upload_trip(c, victim, trip_id)
        path = template.format(p=victim.policy_id, d=victim.device_id, t=trip_id,
                               u=uuid.uuid4().hex[:8],
                               r=open_review(c, victim) if "{r}" in template else "")
        body = request_body(kind, own)
        headers = {**headers_for(role, own, tokens), **idem(), **body.pop("headers", {})}
        r = c.request(method, path, headers=headers, **body)
        expected = 401 if role in ("none", "bad", "malformed") else (
            expect_own if target == "own" else expect_other)[role]
        assert r.status_code == expected, (role, target, path, r.text)
        if expected >= 400:
            assert r.json()["code"] in {"unauthorized", "forbidden", "not_found"}
        if template in DESTRUCTIVE:
            assert still_there(c, other, tokens) is (target == "own" or expected != 200)
            assert still_there(c, own, tokens) is (target == "other" or expected != 200)


@pytest.mark.parametrize("zone", ["Europe/Nowhere", "/etc/localtime", "o" * 300,
                                  "\u1e70\u033a" * 150, "../../etc/passwd"])
def test_a_policy_with_no_real_time_zone_is_refused_naming_the_field(
        server, tokens: Tokens, zone: str) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/policies", json={"policy_id": f"tz-{uuid.uuid4().hex[:8]}",
                                         "time_zone": zone},
                   headers={"Authorization": f"Bearer {tokens.admin}", **idem()})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "bad_time_zone"
    assert problem["field"] == "time_zone"
