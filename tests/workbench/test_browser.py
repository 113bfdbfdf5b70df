"""The workbench and the driver view in a real headless Chromium (Debian's `chromium`):
log in, walk portfolio -> policy -> trip, relabel a trip from the driver view and see the
premium change in the workbench. Screenshots go to docs/img/ for the README."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pricing.plan import default_plan
from tests.service.conftest import DeviceCreds, ServerThread, Tokens, idem, register
from tests.service.payloads import batches, drive
from tests.workbench.premiums import add_policies, portfolio, write_premiums

pytestmark = pytest.mark.db

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"
VIEWPORT = {"width": 1366, "height": 900}

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium: apt-get install -y chromium chromium-driver",
                allow_module_level=True)


def upload(client: httpx.Client, device: DeviceCreds, trip_id: str, start_us: int,
           seed: int) -> None:
    for body in batches(device.device_id, trip_id, drive(900, start_us=start_us, seed=seed), 2):
        r = client.post(f"/v1/trips/{trip_id}/batches", json=body,
                        headers={**device.headers, **idem()})
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def driver(server: ServerThread, tokens: Tokens, db_url: str) -> DeviceCreds:
    """A driver with two trips today, last month's period premium and a provisional one,
    in a book of 40 priced policies with claims."""
    from telematics.rating import provisional_premium, publish_plan

    now = datetime.now(UTC)
    start_us = int(now.timestamp() * 1e6) - 3 * 3600 * 1_000_000
    with httpx.Client(base_url=server.url, timeout=30) as c:
        device = register(c, tokens)
        upload(c, device, "commute-am", start_us, seed=1)
        upload(c, device, "commute-pm", start_us + 1200 * 1_000_000, seed=2)
    month = now.date().replace(day=1)
    last_month = (month.replace(year=month.year - 1, month=12) if month.month == 1
                  else month.replace(month=month.month - 1))
    book = [f"bk-{uuid.uuid4().hex[:6]}" for _ in range(40)]
    rng = np.random.default_rng(3)
    with psycopg.connect(db_url) as conn:
        publish_plan(conn, default_plan())
        conn.execute("UPDATE policies SET rating_factors = %s, start_date = %s"
                     " WHERE policy_id = %s", (Jsonb({"vehicle_group": "C", "region": "urban",
                                                      "age_band": "25-34"}), last_month,
                                               device.policy_id))
        add_policies(conn, book)
        write_premiums(conn, portfolio([device.policy_id, *book], seed=11),
                       (last_month, month))
        for policy_id in book:
            for _ in range(rng.poisson(0.6)):
                conn.execute("INSERT INTO claims (claim_id, policy_id, occurred_at, amount)"
                             " VALUES (%s, %s, %s, %s)",
                             (f"c-{uuid.uuid4().hex[:8]}", policy_id,
                              datetime.combine(last_month, datetime.min.time(), UTC),
                              round(float(rng.gamma(1.5, 40.0)), 2)))
        assert provisional_premium(conn, device.policy_id) is not None
    return device


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--headless", "--no-sandbox"])
        yield chromium
        chromium.close()


def shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def waterfall_check(page: object) -> int:
    """The waterfall's lines sum to the premium shown, in cents and in the text shown."""
    cents = page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#waterfall tbody tr", "rows => rows.map(r => Number(r.dataset.cents))")
    texts = page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#waterfall tbody td.amount", "cells => cells.map(c => c.textContent)")
    shown = page.locator("#premium-shown")  # type: ignore[attr-defined]
    shown_cents = int(shown.get_attribute("data-cents"))
    assert sum(cents) == shown_cents
    assert sum(Decimal(t.replace(",", "")) for t in texts) == Decimal(
        shown.text_content().replace(",", ""))
    return shown_cents


def test_underwriter_and_driver_in_a_browser(server: ServerThread, tokens: Tokens,
                                             driver: DeviceCreds, browser: object) -> None:
    uw = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page = uw.new_page()
    page.goto(f"{server.url}/workbench/policies/{driver.policy_id}")
    assert "/workbench/login" in page.url
    page.fill("#token", tokens.underwriter)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/workbench/policies/{driver.policy_id}")
    page.click("text=Portfolio")
    page.wait_for_selector("#book")
    assert page.locator("#book tbody tr").count() >= 41
    assert page.locator("figure.chart svg").count() == 4
    page.click("#book thead th:nth-child(5)")  # sort by premium
    first = page.eval_on_selector_all("#book tbody td:nth-child(5)",
                                      "cells => cells.map(c => Number(c.dataset.sort))")
    assert first == sorted(first)
    shot(page, "portfolio")

    page.click(f"#book a[href='/workbench/policies/{driver.policy_id}']")
    page.wait_for_selector("#waterfall")
    before = waterfall_check(page)
    shot(page, "policy")

    page.click("#trips a >> nth=0")
    page.wait_for_selector("svg.route")
    assert page.locator("svg.route polyline.path").count() == 1
    shot(page, "trip")

    app = browser.new_context(viewport={"width": 1024, "height": 900})  # type: ignore[attr-defined]
    phone = app.new_page()
    phone.goto(f"{server.url}/driver/")
    phone.fill("#token", driver.api_key)
    phone.click("button[type=submit]")
    phone.wait_for_selector("#driver-premium")
    assert int(phone.locator("#driver-premium").get_attribute("data-cents")) == before
    shot(phone, "driver")
    row = phone.locator("#trip-commute-pm")
    row.locator("select").select_option("passenger")
    row.locator("button").click()
    phone.wait_for_selector("#driver-premium")
    after_driver = int(phone.locator("#driver-premium").get_attribute("data-cents"))
    assert after_driver < before  # fewer km driven: a lower pay-per-km premium
    app.close()

    page.goto(f"{server.url}/workbench/policies/{driver.policy_id}")
    after = waterfall_check(page)
    assert after == after_driver
    page.click("#replay-current")
    page.wait_for_selector("#replay-result")
    assert page.locator("#replay-result").get_attribute("data-identical") == "true"
    shot(page, "replay")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post(f"/v1/policies/{driver.policy_id}/reviews",
                   json={"kind": "event", "trip_id": "commute-am",
                         "reason": "The first hard stop was for a child crossing the road."},
                   headers={**driver.headers, **idem()})
        assert r.status_code == 200, r.text
        review_id = r.json()["review_id"]
    page.goto(f"{server.url}/workbench/reviews")
    assert page.locator("#relabels tr", has_text="commute-pm").count() == 1
    review = page.locator(f"#review-{review_id}")
    cents = review.locator("table.breakdown tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.cents))")
    assert sum(cents) == int(review.locator(".premium").get_attribute("data-cents")) == after
    assert review.locator("table.evidence-events tbody tr").count() >= 1
    shot(page, "reviews")
    uw.close()
