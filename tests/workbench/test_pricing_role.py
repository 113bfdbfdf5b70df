"""The pricing side at run time: the service's second pool is the role ubi_pricing, and the
workbench, the underwriter API and repricing work through it although that role cannot
read a raw sample; a pricing connection whose role could is refused."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from telematics import rating
from telematics.service.server import ServerThread
from telematics.service.settings import Settings
from telematics.store.repository import Store
from tests.service.conftest import RATED, Tokens, register
from tests.workbench.test_pages import scored_trip, staff_client

pytestmark = pytest.mark.db


def pool(server: ServerThread, name: str) -> Store:
    store: Store = getattr(server.app.state, name)
    return store


def provisional_cents(db_url: str, policy_id: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT (breakdown ->> 'premium_cents')::bigint FROM premiums"
                           " WHERE policy_id = %s AND kind = 'provisional'", (policy_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_the_pricing_pool_is_the_pricing_role_and_serves_the_workbench(
        server: ServerThread, tokens: Tokens, db_url: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        device = register(c, tokens, rating_factors=RATED)
        scored_trip(c, device, "pr-trip")
    with psycopg.connect(db_url) as conn:
        raw = conn.execute("SELECT count(*) FROM gps_samples WHERE device_id = %s",
                           (device.device_id,)).fetchone()
    assert raw is not None and raw[0] > 0
    with pool(server, "store").connection() as conn:
        assert conn.execute("SELECT current_user").fetchone() != ("ubi_pricing",)
        conn.rollback()
    with pool(server, "pricing_store").connection() as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("ubi_pricing",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("SELECT count(*) FROM gps_samples WHERE device_id = %s",
                         (device.device_id,))
        conn.rollback()
        with conn.transaction():
            priced = rating.provisional_premium(conn, device.policy_id)
    assert priced is not None and priced["premium_cents"] > 0
    driven = provisional_cents(db_url, device.policy_id)
    with staff_client(server, tokens.underwriter) as uw:
        for page in ("/workbench/", "/workbench/reviews", f"/workbench/policies/{device.policy_id}",
                     f"/workbench/trips/{device.device_id}/pr-trip"):
            r = uw.get(page)
            assert r.status_code == 200, (page, r.text[:500])
        # The relabel is written and the premium repriced in one transaction as ubi_pricing.
        r = uw.post(f"/workbench/trips/{device.device_id}/pr-trip/label",
                    data={"label": "passenger", "reason": "the pricing role relabels"})
        assert r.status_code == 303, r.text
    assert provisional_cents(db_url, device.policy_id) < driven
    uw_headers = {"Authorization": f"Bearer {tokens.underwriter}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=uw_headers) as c:
        assert c.get("/v1/review/queue").status_code == 200
        score = c.get(f"/v1/policies/{device.policy_id}/score")
        assert score.status_code == 200 and score.json()["trips"] == 0


def test_a_pricing_connection_that_can_read_raw_samples_is_refused(db_url: str,
                                                                   tokens: Tokens) -> None:
    settings = Settings(database_url=db_url, pricing_database_url=db_url, pool_timeout_s=1.0,
                        rate_per_s=1000.0, rate_burst=1000)
    uw = {"Authorization": f"Bearer {tokens.underwriter}"}
    with ServerThread(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for path in ("/v1/health", "/v1/review/queue", "/workbench/reviews"):
            r = c.get(path, headers=uw)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["code"] == "database_unavailable"
