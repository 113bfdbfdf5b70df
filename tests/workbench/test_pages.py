"""The workbench and the driver view over HTTP: auth on every page, the waterfall, the
privacy-trimmed route, review decisions in the audit trail and the replay button."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from html import unescape

import httpx
import numpy as np
import psycopg
import pytest

from pricing.plan import default_plan
from pricing.rating import reprice
from telematics.service.charts import RouteFrame
from telematics.store import workbench as wb_sql
from telematics.store.repository import GPS, read_samples
from tests.service.conftest import DeviceCreds, ServerThread, Tokens, idem, register
from tests.service.payloads import batches, drive
from tests.workbench.premiums import add_policies, portfolio, write_premiums

pytestmark = pytest.mark.db

PERIOD = (date(2026, 10, 1), date(2026, 10, 31))
NEXT_PERIOD = (date(2026, 10, 31), date(2026, 11, 30))


@contextlib.contextmanager
def staff_client(server: ServerThread, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/workbench/login", data={"token": token, "next": "/workbench/"})
        assert r.status_code == 303, r.text
        yield c


@contextlib.contextmanager
def driver_client(server: ServerThread, device: DeviceCreds) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/driver/login", data={"token": device.api_key})
        assert r.status_code == 303, r.text
        yield c


def scored_trip(client: httpx.Client, device: DeviceCreds, trip_id: str, seed: int = 0) -> None:
    for body in batches(device.device_id, trip_id, drive(900, seed=seed), 2):
        r = client.post(f"/v1/trips/{trip_id}/batches", json=body,
                        headers={**device.headers, **idem()})
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def priced(server: ServerThread, tokens: Tokens, db_url: str) -> dict[str, object]:
    """A registered driver with a scored trip and two periods' premiums, among a small book
    with claims."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        device = register(c, tokens)
        scored_trip(c, device, "wb-trip-1")
    others = [f"wb-{uuid.uuid4().hex[:8]}" for _ in range(11)]
    ids = [device.policy_id, *others]
    first = portfolio(ids, seed=7)
    second = portfolio(ids, seed=8)
    with psycopg.connect(db_url) as conn:
        add_policies(conn, others)
        write_premiums(conn, first, PERIOD)
        premium_ids = write_premiums(conn, second, NEXT_PERIOD, previous=first)
        for i, policy_id in enumerate(ids[::3]):
            conn.execute("INSERT INTO claims (claim_id, policy_id, occurred_at, amount)"
                         " VALUES (%s, %s, '2026-11-10', %s)",
                         (f"c-{uuid.uuid4().hex[:8]}", policy_id, 400 + 350 * i))
    return {"device": device, "frame": second, "premium_ids": premium_ids}


PAGES = ["/workbench/", "/workbench/reviews", "/workbench/policies/{policy}",
         "/workbench/trips/{device}/wb-trip-1"]
ACTIONS = ["/workbench/reviews/1/decision", "/workbench/relabels/{device}/wb-trip-1/decision",
           "/workbench/trips/{device}/wb-trip-1/label", "/workbench/premiums/1/replay"]


def test_every_page_needs_an_underwriter(server: ServerThread, tokens: Tokens,
                                         priced: dict[str, object]) -> None:
    device = priced["device"]
    assert isinstance(device, DeviceCreds)
    fill = {"policy": device.policy_id, "device": device.device_id}
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        for page in PAGES:
            url = page.format(**fill)
            r = anon.get(url)
            assert r.status_code == 303, url
            assert r.headers["location"] == f"/workbench/login?next={url}"
            # a device key is refused, as a bearer header and as a session cookie
            assert anon.get(url, headers=device.headers).status_code == 403, url
            r = anon.get(url, headers={"Cookie": f"ubi_staff={device.api_key}"})
            assert r.status_code == 303, url
        for action in ACTIONS:
            url = action.format(**fill)
            assert anon.post(url, data={"decision": "accepted", "note": "x"}).status_code == 401
            assert anon.post(url, data={"decision": "accepted", "note": "x"},
                             headers=device.headers).status_code == 403
        r = anon.post("/workbench/login", data={"token": device.api_key})
        assert r.status_code == 403 and "device key" in r.text
        assert "set-cookie" not in r.headers
        assert anon.post("/workbench/login", data={"token": "ubt_nope"}).status_code == 401
    with staff_client(server, tokens.underwriter) as uw:
        cookie = next(c for c in uw.cookies.jar if c.name == "ubi_staff")
        assert cookie.path == "/workbench"
        assert cookie.has_nonstandard_attr("HttpOnly")
        assert cookie.get_nonstandard_attr("SameSite") == "strict"
        for page in PAGES:
            r = uw.get(page.format(**fill))
            assert r.status_code == 200, (page, r.text[:500])
            assert r.headers["cache-control"] == "no-store"
        assert uw.post("/workbench/logout").status_code == 303
        assert uw.get("/workbench/").status_code == 303


def test_driver_sees_only_his_own_policy(server: ServerThread, tokens: Tokens,
                                         priced: dict[str, object]) -> None:
    device = priced["device"]
    assert isinstance(device, DeviceCreds)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        other = register(c, tokens)
        own = c.get(f"/v1/driver/policies/{device.policy_id}", headers=device.headers)
        assert own.status_code == 200, own.text
        assert c.get(f"/v1/driver/policies/{device.policy_id}",
                     headers=other.headers).status_code == 404
        assert c.get(f"/v1/driver/policies/{device.policy_id}").status_code == 401
        assert c.get(f"/v1/driver/policies/{device.policy_id}", headers={
            "Authorization": f"Bearer {tokens.underwriter}"}).status_code == 403
        r = c.get("/driver/")
        assert r.status_code == 303 and r.headers["location"] == "/driver/login"
        r = c.post("/driver/trips/wb-trip-1/label", data={"label": "passenger"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.post("/driver/login", data={"token": tokens.underwriter}).status_code == 401
        # the other driver's page shows his policy only, and cannot relabel this trip
        with driver_client(server, other) as mine:
            page = mine.get("/driver/")
            assert other.policy_id in page.text and device.policy_id not in page.text
            r = mine.post("/driver/trips/wb-trip-1/label", data={"label": "passenger"})
            assert r.status_code == 404
    body = own.json()
    frame = priced["frame"]
    expected = reprice(frame, default_plan())  # type: ignore[arg-type]
    cents = int(expected.loc[expected["policy_id"] == device.policy_id, "premium_cents"].iloc[0])
    assert body["premium"]["premium_cents"] == cents
    assert body["premium"]["period_start"] == NEXT_PERIOD[0].isoformat()
    assert body["changes"]["since_period_start"] == PERIOD[0].isoformat()
    assert {b["behaviour"] for b in body["behaviour_costs"]} == set(default_plan().behaviour_names)
    assert body["coaching"]["next_best_action"] in {*default_plan().behaviour_names, "none"}
    assert [t["trip_id"] for t in body["trips"]] == ["wb-trip-1"]
    assert set(body["transparency"]["categories"]) == {"location", "motion", "phone_use", "obd"}


def money(text: str) -> Decimal:
    return Decimal(unescape(text).replace(",", "").replace("\u2212", "-").strip())


def test_waterfall_sums_to_the_premium_shown(server: ServerThread, tokens: Tokens,
                                             priced: dict[str, object]) -> None:
    device = priced["device"]
    assert isinstance(device, DeviceCreds)
    with staff_client(server, tokens.underwriter) as uw:
        html = uw.get(f"/workbench/policies/{device.policy_id}").text
    shown = re.search(r'id="premium-shown" data-cents="(\d+)">([^<]+)<', html)
    assert shown is not None
    table = html[html.index('id="waterfall"'):html.index("</table>", html.index('id="waterfall"'))]
    rows = re.findall(r'data-line="([^"]+)" data-cents="(-?\d+)"><td>[^<]*</td>'
                      r'<td class="num amount">([^<]+)</td>', table)
    plan = default_plan()
    assert [r[0] for r in rows][:1] == ["base"]
    assert len(rows) == 1 + len(plan.factor_names) + 1 + len(plan.behaviour) + 3
    assert sum(int(r[1]) for r in rows) == int(shown.group(1))
    assert sum(money(r[2]) for r in rows) == money(shown.group(2))
    expected = reprice(priced["frame"], plan)  # type: ignore[arg-type]
    assert int(shown.group(1)) == int(
        expected.loc[expected["policy_id"] == device.policy_id, "premium_cents"].iloc[0])
    assert "<svg" in html and "Premium waterfall" in html


def test_trip_route_shows_only_privacy_trimmed_positions(server: ServerThread, tokens: Tokens,
                                                        priced: dict[str, object],
                                                        db_url: str) -> None:
    device = priced["device"]
    assert isinstance(device, DeviceCreds)
    with staff_client(server, tokens.underwriter) as uw:
        html = uw.get(f"/workbench/trips/{device.device_id}/wb-trip-1").text
    svg = html[html.index('<svg class="route"'):]
    svg = svg[:svg.index("</svg>")]
    drawn = {tuple(map(float, p.split(","))) for p in
             re.search(r'<polyline class="path" points="([^"]+)"', svg).group(1).split()}  # type: ignore[union-attr]
    with psycopg.connect(db_url) as conn:
        path = wb_sql.get_trip_path(conn, device.device_id, "wb-trip-1")
        raw = read_samples(conn, GPS, device.device_id, "wb-trip-1")
    assert path is not None
    assert 0 < path.lat_deg.size < raw["lat_deg"].size
    frame = RouteFrame.fit(path.lat_deg, path.lon_deg, 640.0, 420.0)
    x, y = frame.project(path.lat_deg, path.lon_deg)
    visible = set(zip(x.tolist(), y.tolist(), strict=True))
    assert drawn == visible
    hidden = ~np.isin(raw["lat_deg"], path.lat_deg)
    assert hidden.sum() == raw["lat_deg"].size - path.lat_deg.size
    hx, hy = frame.project(raw["lat_deg"][hidden], raw["lon_deg"][hidden])
    assert not drawn & set(zip(hx.tolist(), hy.tolist(), strict=True))
    # the trip's true ends (inside the zones) appear nowhere in the page
    for lat, lon in ((raw["lat_deg"][0], raw["lon_deg"][0]),
                     (raw["lat_deg"][-1], raw["lon_deg"][-1])):
        assert f"{lat:.5f}" not in html and f"{lon:.5f}" not in html


def audit_actions(db_url: str, subject: str) -> list[tuple[str, str, dict]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT actor, action, detail FROM audit_log WHERE subject = %s"
                            " ORDER BY audit_id", (subject,)).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_review_decisions_land_in_the_audit_trail(server: ServerThread, tokens: Tokens,
                                                  db_url: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        device = register(c, tokens)
        trips = [f"rl-{uuid.uuid4().hex[:6]}" for _ in range(2)]
        for n, trip_id in enumerate(trips):
            scored_trip(c, device, trip_id, seed=n)
            r = c.post(f"/v1/trips/{trip_id}/label", json={"label": "passenger",
                                                           "reason": "my wife drove"},
                       headers={**device.headers, **idem()})
            assert r.status_code == 200, r.text
        r = c.post(f"/v1/policies/{device.policy_id}/reviews",
                   json={"kind": "premium", "reason": "why did it go up?"},
                   headers={**device.headers, **idem()})
        review_id = r.json()["review_id"]
    with staff_client(server, tokens.underwriter) as uw:
        queue = uw.get("/workbench/reviews").text
        assert all(t in queue for t in trips) and "why did it go up?" in queue
        # Each row's form posts its decision to its own endpoint.
        assert all(f'action="/workbench/relabels/{device.device_id}/{t}/decision"' in queue
                   for t in trips)
        assert f'action="/workbench/reviews/{review_id}/decision"' in queue
        for trip_id, decision in zip(trips, ("accepted", "rejected"), strict=True):
            r = uw.post(f"/workbench/relabels/{device.device_id}/{trip_id}/decision",
                        data={"decision": decision, "note": f"{decision} after a call"})
            assert r.status_code == 303, r.text
        r = uw.post(f"/workbench/reviews/{review_id}/decision",
                    data={"decision": "rejected", "note": "the premium is right"})
        assert r.status_code == 303, r.text
        queue = uw.get("/workbench/reviews").text
        assert not any(t in queue for t in trips) and "why did it go up?" not in queue
        assert uw.post(f"/workbench/reviews/{review_id}/decision",
                       data={"decision": "accepted", "note": "again"}).status_code == 404
        assert uw.post(f"/workbench/reviews/{review_id}/decision",
                       data={"decision": "maybe", "note": "x"}).status_code == 422
    accepted = audit_actions(db_url, trips[0])
    rejected = audit_actions(db_url, trips[1])
    assert accepted[-1][:2] == ("staff:test-underwriter", "trip.label.accept")
    assert accepted[-1][2]["note"] == "accepted after a call"
    assert rejected[-1][:2] == ("staff:test-underwriter", "trip.label.reject")
    decided = audit_actions(db_url, str(review_id))
    assert decided[-1][1] == "review.decide" and decided[-1][2]["decision"] == "rejected"
    with psycopg.connect(db_url) as conn:
        labels = dict(conn.execute("SELECT trip_id, label FROM trips WHERE trip_id = ANY(%s)",
                                   (trips,)).fetchall())
        status = conn.execute("SELECT status FROM review_requests WHERE review_id = %s",
                              (review_id,)).fetchone()
    assert labels == {trips[0]: "passenger", trips[1]: None}
    assert status == ("rejected",)


def test_replay_reports_identical_and_catches_a_change(server: ServerThread, tokens: Tokens,
                                                      priced: dict[str, object],
                                                      db_url: str) -> None:
    premium_ids = priced["premium_ids"]
    assert isinstance(premium_ids, dict)
    device = priced["device"]
    assert isinstance(device, DeviceCreds)
    premium_id = premium_ids[device.policy_id]
    with staff_client(server, tokens.underwriter) as uw:
        page = uw.get(f"/workbench/policies/{device.policy_id}").text
        assert f"/workbench/premiums/{premium_id}/replay" in page
        r = uw.post(f"/workbench/premiums/{premium_id}/replay")
        assert r.status_code == 200, r.text
        assert 'data-identical="true"' in r.text and "Identical" in r.text
        assert "record hash matches" in r.text and "plan hash matches" in r.text
        # an edited input (more km) no longer replays to the stored premium
        with psycopg.connect(db_url) as conn:
            conn.execute("UPDATE premiums SET inputs = jsonb_set(inputs, '{dist_km}',"
                         " to_jsonb((inputs->>'dist_km')::float8 + 500)) WHERE premium_id = %s",
                         (premium_id,))
        try:
            r = uw.post(f"/workbench/premiums/{premium_id}/replay")
        finally:
            with psycopg.connect(db_url) as conn:
                conn.execute("UPDATE premiums SET inputs = jsonb_set(inputs, '{dist_km}',"
                             " to_jsonb((inputs->>'dist_km')::float8 - 500))"
                             " WHERE premium_id = %s", (premium_id,))
        assert 'data-identical="false"' in r.text and "premium_cents" in r.text
        assert "record hash does not match" in r.text
    replays = audit_actions(db_url, str(premium_id))
    assert [a[1] for a in replays[-2:]] == ["premium.replay", "premium.replay"]
    assert replays[-2][2]["identical"] is True and replays[-1][2]["identical"] is False


def test_portfolio_shows_the_book(server: ServerThread, tokens: Tokens,
                                  priced: dict[str, object]) -> None:
    frame = priced["frame"]
    with staff_client(server, tokens.underwriter) as uw:
        html = uw.get("/workbench/").text
    for policy_id in frame["policy_id"]:  # type: ignore[index]
        assert f'href="/workbench/policies/{policy_id}"' in html
    assert re.search(r'id="plan-in-force">default v1<', html) and 'id="gini"' in html
    assert html.count("<svg") == 4
    assert "Loss ratio by premium-rate decile" in html
