"""Authorization matrix: every endpoint x every role x own and other policy."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.service.conftest import DeviceCreds, Tokens, idem, register
from tests.service.payloads import batches, drive

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def world(server, tokens: Tokens):
    """Two policies with a device each; each device uploads one trip of its own."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        own, other = register(c, tokens), register(c, tokens)
        for dev, trip_id in ((own, "trip-1"), (other, "victim-trip")):
            body = batches(dev.device_id, trip_id, drive(60), 1, final=False)[0]
            r = c.post(f"/v1/trips/{trip_id}/batches", json=body,
                       headers={**dev.headers, **idem()})
            assert r.status_code == 200, r.text
    return own, other, tokens


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
]


def body_for(kind: str | None, own: DeviceCreds) -> dict | None:
    u = uuid.uuid4().hex[:8]
    return {
        None: None,
        "empty": None,
        "batch": {k: v for k, v in batches(own.device_id, "x", drive(30), 1, final=False)[0].items()
                  if k != "trip_id"},
        "label": {"label": "passenger"},
        "obd": {"device_id": own.device_id, "feed_id": f"f-{u}",
                "obd": {"seq": [0], "t_us": [drive(1)["gps"]["t_us"][0]], "speed_kmh": [0]}},
        "policy": {"policy_id": f"pol-new-{u}", "time_zone": "Europe/Paris"},
        "device": {"device_id": f"dev-new-{u}", "policy_id": own.policy_id},
    }[kind]


CASES = [pytest.param(role, target, entry, id=f"{entry[0]} {entry[1]} {target} {role}")
         for entry in MATRIX for target in ("own", "other") for role in ROLES
         if target == "own" or entry[4] is not None]


@pytest.mark.parametrize(("role", "target", "entry"), CASES)
def test_authorization_matrix(server, world, role: str, target: str, entry) -> None:
    own, other, tokens = world
    method, template, kind, expect_own, expect_other = entry
    victim = own if target == "own" else other
    trip_id = "trip-1" if target == "own" else "victim-trip"
    path = template.format(p=victim.policy_id, d=victim.device_id, t=trip_id,
                           u=uuid.uuid4().hex[:8])
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.request(method, path, json=body_for(kind, own),
                      headers={**headers_for(role, own, tokens), **idem()})
    expected = 401 if role in ("none", "bad", "malformed") else (
        expect_own if target == "own" else expect_other)[role]
    assert r.status_code == expected, (role, target, path, r.text)
    if expected >= 400:
        assert r.json()["code"] in {"unauthorized", "forbidden", "not_found"}


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
