"""The workbench and the driver view over HTTP: auth on every page, the waterfall, the
privacy-trimmed route, review decisions in the audit trail and the replay button."""

from __future__ import annotations

import contextlib
import math
import re
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from html import unescape
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from pricing.plan import default_plan
from pricing.rating import reprice
from telematics.service import charts, trip_view
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
    device = priced_device(priced)
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
    device = priced_device(priced)
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
    device = priced_device(priced)
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


def priced_device(priced: dict[str, object]) -> DeviceCreds:
    """The priced fixture's device."""
    device = priced["device"]
    assert isinstance(device, DeviceCreds)
    return device


def trip_page(server: ServerThread, tokens: Tokens, device: DeviceCreds, db_url: str,
              trip_id: str = "wb-trip-1") -> tuple[str, wb_sql.TripPath, dict[str, np.ndarray]]:
    with staff_client(server, tokens.underwriter) as uw:
        html = uw.get(f"/workbench/trips/{device.device_id}/{trip_id}").text
    with psycopg.connect(db_url) as conn:
        path = wb_sql.get_trip_path(conn, device.device_id, trip_id)
        raw = read_samples(conn, GPS, device.device_id, trip_id)
    assert path is not None
    return html, path, raw


def element(html: str, start: str, end: str) -> str:
    at = html.index(start)
    return html[at:html.index(end, at) + len(end)]


def distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Each point's distance to the nearest segment of the polyline (same units)."""
    a, b = line[:-1], line[1:]
    ab = b - a
    length2 = np.maximum((ab ** 2).sum(axis=1), 1e-12)
    ap = points[:, None, :] - a[None, :, :]
    u = np.clip((ap * ab[None]).sum(axis=2) / length2[None], 0.0, 1.0)
    nearest = a[None] + u[..., None] * ab[None]
    return np.sqrt(((points[:, None, :] - nearest) ** 2).sum(axis=2)).min(axis=1)


def drawn_route(html: str, path: Any) -> tuple[str, RouteFrame, np.ndarray]:
    """The route's SVG, the frame it is drawn in and the points of its path in SVG units."""
    svg = element(html, '<svg class="route"', "</svg>")
    points = re.search(r'<polyline class="path" points="([^"]+)"', svg)
    assert points is not None, "no route path drawn"
    drawn = np.array([tuple(map(float, p.split(","))) for p in points.group(1).split()])
    return svg, RouteFrame.fit(path.lat_deg, path.lon_deg, 640.0, 420.0), drawn


def test_trip_route_shows_only_privacy_trimmed_positions(server: ServerThread, tokens: Tokens,
                                                        priced: dict[str, object],
                                                        db_url: str) -> None:
    device = priced_device(priced)
    html, path, raw = trip_page(server, tokens, device, db_url)
    _, frame, drawn = drawn_route(html, path)
    assert 0 < path.lat_deg.size < raw["lat_deg"].size
    stored = np.column_stack(frame.project(path.lat_deg, path.lon_deg))
    # every point drawn lies on the stored, privacy-trimmed path, from its first to its last
    assert distance_to_polyline(drawn, stored).max() < 0.15
    assert drawn[0].tolist() == stored[0].tolist() and drawn[-1].tolist() == stored[-1].tolist()
    # the trip's true ends (inside the zones) appear nowhere in the page
    for lat, lon in ((raw["lat_deg"][0], raw["lon_deg"][0]),
                     (raw["lat_deg"][-1], raw["lon_deg"][-1])):
        assert f"{lat:.5f}" not in html and f"{lon:.5f}" not in html


def test_the_route_carries_no_speed_or_time(server: ServerThread, tokens: Tokens,
                                            priced: dict[str, object], db_url: str) -> None:
    device = priced_device(priced)
    html, path, _ = trip_page(server, tokens, device, db_url)
    svg, frame, drawn = drawn_route(html, path)
    # The stored positions are a second apart (their spacing is the speed); the drawn ones
    # are those of route_resample, evenly spaced in distance whatever the speed (tested
    # in test_views), so their spacing is the step, to the SVG's rounding.
    expected = np.column_stack(frame.project(*charts.route_resample(path.lat_deg, path.lon_deg)))
    assert drawn.tolist() == expected.tolist()
    spacing_m = np.hypot(*np.diff(drawn, axis=0).T)[:-1] / frame.scale
    assert abs(float(np.median(spacing_m)) - charts.ROUTE_STEP_M) < 0.15 / frame.scale
    assert "km/h" not in svg and "m/s" not in svg and not re.search(r"\d:\d\d", svg)
    assert set(re.findall(r"\s(data-[a-z-]+)=", svg)) <= {"data-kind"}
    titles = re.findall(r"<title>([^<]*)</title>", svg)
    assert all(re.fullmatch(r"(first|last) visible position|event \d+: \w+ \(\w+\)", t)
               for t in titles), titles


def test_speed_with_place_is_shown_only_as_event_evidence(server: ServerThread, tokens: Tokens,
                                                          priced: dict[str, object],
                                                          db_url: str) -> None:
    device = priced_device(priced)
    html, path, _ = trip_page(server, tokens, device, db_url)
    assert "What this page shows of speed and place, and why" in html
    # The speed chart: at most one value per minute, and nothing drawn at a finer grain.
    minutes = [int(m) for m in re.findall(r'<tr data-minute="(-?\d+)">', html)]
    assert minutes and len(set(minutes)) == len(minutes)
    chart = element(html, '<figure class="chart wide" id="speed-chart">', "</figure>")
    bars = [int(m) for m in re.findall(r'id="speed-minute-(-?\d+)"', chart)]
    assert bars == minutes
    vertices = [len(re.findall(r"[MLCQ] ", d)) for d in re.findall(r'<path d="([^"]+)"', chart)]
    assert vertices and max(vertices) <= 6, max(vertices)  # bars and shading; no trace
    duration_min = (path.t_s[-1] - path.t_s[0]) / 60.0
    assert len(minutes) <= math.ceil(duration_min) + 1
    # Every event with its evidence: its position, and its speed second by second over
    # the few seconds around it (only there is speed shown at full resolution).
    with psycopg.connect(db_url) as conn:
        events = conn.execute("SELECT event_no, kind, extract(epoch FROM start_at),"
                              " extract(epoch FROM end_at), lat_deg, lon_deg FROM events"
                              " WHERE device_id = %s AND trip_id = 'wb-trip-1'",
                              (device.device_id,)).fetchall()
    assert events
    traced = 0
    for event_no, kind, start_s, end_s, lat, lon in events:
        row = element(html, f'<tr id="event-{event_no}"', "</tr>")
        cell = element(row, '<td class="position">', "</td>")
        if lat is not None:
            assert f"{lat:.5f}" in cell and f"{lon:.5f}" in cell
        else:
            assert "inside a privacy zone" in cell
        if kind not in trip_view.TRACED_KINDS:
            continue
        lo, hi = trip_view.evidence_window(float(start_s), float(end_s))
        in_window = int(((path.t_s >= lo) & (path.t_s <= hi)).sum())
        assert in_window <= hi - lo + 1 <= 2 * trip_view.EVIDENCE_PAD_S + 61
        trace = re.search(r'<svg class="evidence".*?</svg>', row)
        assert trace is not None, row
        points = re.search(r'class="trace" points="([^"]+)"', trace.group(0))
        assert (len(points.group(1).split()) if points else 0) == (in_window if in_window > 1
                                                                   else 0)
        traced += in_window > 1
    assert traced >= 1


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
    device = priced_device(priced)
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


def test_the_review_queue_shows_each_requests_breakdown_and_evidence(
        server: ServerThread, tokens: Tokens, priced: dict[str, object], db_url: str) -> None:
    device = priced["device"]
    premium_ids = priced["premium_ids"]
    assert isinstance(device, DeviceCreds) and isinstance(premium_ids, dict)
    premium_id = premium_ids[device.policy_id]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post(f"/v1/policies/{device.policy_id}/reviews",
                   json={"kind": "event", "premium_id": premium_id, "trip_id": "wb-trip-1",
                         "reason": "I braked for a child"}, headers={**device.headers, **idem()})
        assert r.status_code == 200, r.text
        review_id = r.json()["review_id"]
    with staff_client(server, tokens.underwriter) as uw:
        page = uw.get("/workbench/reviews").text
        policy = uw.get(f"/workbench/policies/{device.policy_id}").text
    article = element(page, f'<article class="card review" id="review-{review_id}"', "</article>")
    assert "I braked for a child" in article
    assert f'action="/workbench/reviews/{review_id}/decision"' in article
    # the contested premium line by line, as the policy page's waterfall shows it
    shown = re.search(r'class="premium" data-cents="(\d+)">([^<]+)<', article)
    assert shown is not None
    rows = re.findall(r'<tr data-line="([^"]+)" data-cents="(-?\d+)"><td>[^<]*</td>'
                      r'<td class="num amount">([^<]+)</td>', article)
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT breakdown FROM premiums WHERE premium_id = %s",
                              (premium_id,)).fetchone()
        events = conn.execute("SELECT event_no FROM events WHERE device_id = %s"
                              " AND trip_id = 'wb-trip-1'", (device.device_id,)).fetchall()
    assert stored is not None and events
    assert int(shown.group(1)) == stored[0]["premium_cents"]
    assert sum(int(cents) for _, cents, _ in rows) == int(shown.group(1))
    assert sum(money(text) for _, _, text in rows) == money(shown.group(2).split()[0])
    assert [(line, int(cents)) for line, cents, _ in rows] == [
        (line["line"], line["amount_cents"]) for line in stored[0]["lines"]]
    waterfall = element(policy, 'id="waterfall"', "</table>")
    assert [line for line, _, _ in rows] == re.findall(r'data-line="([^"]+)"', waterfall)
    # the named trip's events and features
    assert f'href="/workbench/trips/{device.device_id}/wb-trip-1"' in article
    assert {int(n) for n in re.findall(r'<tr data-event="(\d+)">', article)} == {
        e[0] for e in events}
    assert "The trip&#39;s features" in article or "The trip's features" in article
