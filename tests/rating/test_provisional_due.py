"""Provisional premiums marked due by scored trips and repriced together in the background."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from telematics import provisional
from telematics.rating import provisional_premium, provisional_premiums
from tests.rating.conftest import add_policy, add_trip, at, trip_features

pytestmark = pytest.mark.db

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _provisional(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    rows = conn.execute("SELECT policy_id, amount, sha256 FROM premiums"
                        " WHERE kind = 'provisional' ORDER BY policy_id").fetchall()
    return {r[0]: (round(r[1] * 100), r[2]) for r in rows}


def _due(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute("SELECT policy_id FROM provisional_due ORDER BY 1")]


def _fleet(conn: psycopg.Connection[Any], n: int) -> list[str]:
    ids = []
    for i in range(n):
        policy_id = f"Q{i:03d}"
        # Policies across the date line: Auckland is already in the next local day.
        add_policy(conn, policy_id, time_zone="Pacific/Auckland" if i % 3 == 0 else "Europe/Amsterdam")
        km = 10.0 + 7.0 * i
        add_trip(conn, policy_id, "t1", at(10, month=11), km,
                 features=trip_features(km, brakes=i % 4, night_km=km * (i % 5) / 10))
        ids.append(policy_id)
    return ids


def test_a_batch_prices_each_policy_as_it_would_be_priced_alone(conn: psycopg.Connection[Any]) -> None:
    ids = _fleet(conn, 12)
    alone = {}
    for policy_id in ids:
        result = provisional_premium(conn, policy_id, NOW)
        assert result is not None
        alone[policy_id] = result
    stored_alone = _provisional(conn)
    together = provisional_premiums(conn, [*ids, "nobody"], NOW)
    assert set(together) == set(ids)
    for policy_id in ids:
        assert together[policy_id] == alone[policy_id]
    assert _provisional(conn) == stored_alone
    periods = {r["period_end"] for r in together.values()}
    assert periods == {"2026-11-21", "2026-11-22"}  # Auckland's month so far is a day longer


def test_marks_are_repriced_once_and_removed(conn: psycopg.Connection[Any]) -> None:
    ids = _fleet(conn, 5)
    for policy_id in ids + ids[:2]:
        provisional.mark_due(conn, policy_id)
    assert _due(conn) == ids
    assert provisional.reprice_all_due(conn, NOW) == 5
    assert _due(conn) == [] and sorted(_provisional(conn)) == ids
    assert provisional.reprice_due(conn, now=NOW) == 0
    # A trip scored later marks the policy again and raises its premium.
    before = _provisional(conn)["Q001"][0]
    add_trip(conn, "Q001", "t2", at(12, month=11), 90.0, features=trip_features(90.0, brakes=9))
    provisional.mark_due(conn, "Q001")
    assert provisional.flush(conn, "Q001", NOW) is True
    assert _provisional(conn)["Q001"][0] > before
    assert provisional.flush(conn, "Q001", NOW) is False


def test_one_failing_policy_does_not_hold_back_the_others(conn: psycopg.Connection[Any]) -> None:
    ids = _fleet(conn, 4)
    # A rating factor level the plan has no relativity for: pricing this policy raises.
    conn.execute("UPDATE policies SET rating_factors = rating_factors || '{\"region\": \"mars\"}'"
                 " WHERE policy_id = 'Q002'")
    for policy_id in ids:
        provisional.mark_due(conn, policy_id)
    assert provisional.reprice_all_due(conn, NOW) == 4
    assert sorted(_provisional(conn)) == ["Q000", "Q001", "Q003"]
    assert _due(conn) == []  # logged; it waits for the next trip or the period's repricing


def test_a_failed_round_keeps_its_marks(conn: psycopg.Connection[Any], rating_url: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _fleet(conn, 3)
    for policy_id in ids:
        provisional.mark_due(conn, policy_id)

    def connection_lost(*args: Any, **kwargs: Any) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("telematics.rating.provisional_premiums", connection_lost)
    with psycopg.connect(rating_url) as other, pytest.raises(psycopg.OperationalError):
        provisional.reprice_due(other, now=NOW)
    assert _due(conn) == ids and _provisional(conn) == {}
    monkeypatch.undo()
    assert provisional.reprice_all_due(conn, NOW) == 3 and sorted(_provisional(conn)) == ids


def test_two_workers_never_claim_the_same_policy(rating_url: str, conn: psycopg.Connection[Any]) -> None:
    ids = _fleet(conn, 30)
    for policy_id in ids:
        provisional.mark_due(conn, policy_id)
    claimed: list[int] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        with psycopg.connect(rating_url) as own:
            barrier.wait()
            total = 0
            while n := provisional.reprice_due(own, limit=4, now=NOW):
                total += n
            claimed.append(total)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(claimed) == 30 and _due(conn) == []
    audits = conn.execute("SELECT policy_id, count(*) FROM audit_log WHERE action = 'premium.provisional'"
                          " GROUP BY 1").fetchall()
    assert sorted(p for p, _ in audits) == ids and {c for _, c in audits} == {1}
