"""Pricing on the database: inputs from stored trips, stored premiums, replay, plans, provisional."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from pricing.audit import audit_records
from pricing.breakdown import coach, factor_names, price_with_breakdown
from pricing.plan import PlanError, default_plan
from telematics.rating import (
    NUMERATORS,
    coach_towards,
    coaching_targets_of,
    load_published_plan,
    plan_in_force,
    plan_key,
    provisional_premium,
    publish_plan,
    rating_inputs,
    replay_stored,
    reprice_partition,
    reprice_period,
)
from telematics.store.provision import as_pricing_role
from tests.rating.conftest import FACTORS, add_policy, add_trip, at, set_consent, trip_features

pytestmark = pytest.mark.db

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
NOVEMBER = (date(2026, 11, 1), date(2026, 12, 1))
LINE_KEYS = {"line", "amount_cents", "factor", "numerator", "scored_dist_km", "value", "relativity", "credibility_z"}
BREAKDOWN_KEYS = {"currency", "premium_cents", "base_cents", "lines", "credibility_z", "changes", "change_text",
                  "coaching", "record_sha256"}


def _portfolio(conn: psycopg.Connection[Any], n: int, seed: int) -> list[str]:
    """n policies with a few October trips each, behaviour varying by policy."""
    rng = np.random.default_rng(seed)
    groups, regions, ages = list("ABCDE"), ["rural", "suburban", "urban"], ["18-24", "25-34", "35-54", "55-69", "70+"]
    ids = []
    for i in range(n):
        policy_id = f"P{i:03d}"
        add_policy(conn, policy_id, factors={"vehicle_group": groups[i % 5], "region": regions[i % 3],
                                             "age_band": ages[i % 5]})
        for k in range(int(rng.integers(1, 5))):
            km = float(rng.uniform(5, 120))
            add_trip(conn, policy_id, f"t{k}", at(2 + 6 * k), km, features=trip_features(
                km, brakes=int(rng.poisson(km / 40)), accels=int(rng.poisson(km / 80)), corners=int(rng.poisson(km / 90)),
                night_km=km * float(rng.uniform(0, 0.3)), urban_km=km * 0.4, motorway_km=km * float(rng.uniform(0, 0.5)),
                speeding_s=float(rng.uniform(0, 200)), phone_s=float(rng.uniform(0, 120))))
        ids.append(policy_id)
    return ids


def _stored(conn: psycopg.Connection[Any], kind: str = "period") -> pd.DataFrame:
    rows = conn.execute("SELECT premium_id, policy_id, period_start, period_end, plan_version, amount, currency,"
                        " breakdown, inputs, code_version, sha256, usage_exposure_years FROM premiums"
                        " WHERE kind = %s ORDER BY policy_id, period_start", (kind,)).fetchall()
    return pd.DataFrame(rows, columns=["premium_id", "policy_id", "period_start", "period_end", "plan_version", "amount",
                                       "currency", "breakdown", "inputs", "code_version", "sha256", "usage"])


def test_inputs_sum_the_trips_that_count_against_the_driver(conn: psycopg.Connection[Any]) -> None:
    add_policy(conn, "A")
    add_trip(conn, "A", "driven1", at(3), 40.0, features=trip_features(
        40.0, brakes=2, accels=1, corners=1, night_km=4.0, urban_km=10.0, motorway_km=20.0, speeding_s=60.0,
        phone_s=90.0, moving_s=2400.0))
    add_trip(conn, "A", "driven2", at(20), 10.0, features=trip_features(10.0, brakes=1, night_km=1.0))
    add_trip(conn, "A", "passenger", at(5), 300.0, label="passenger", features=trip_features(300.0, brakes=30))
    add_trip(conn, "A", "bus", at(6), 25.0, transport_mode="bus", features=trip_features(25.0, brakes=9))
    add_trip(conn, "A", "short", at(7), 0.3, scored=False, features=trip_features(0.3, brakes=4))
    add_trip(conn, "A", "september", at(28, month=9), 70.0, features=trip_features(70.0, brakes=7))
    add_trip(conn, "A", "november", at(2, month=11), 5.0, features=trip_features(5.0, brakes=5))
    # 23:30 UTC on 31 October is 00:30 local on 1 November: not October's.
    add_trip(conn, "A", "local_november", datetime(2026, 10, 31, 23, 30, tzinfo=UTC), 8.0)
    inputs = rating_inputs(conn, *OCTOBER, plan=default_plan()).set_index("policy_id")
    row = inputs.loc["A"]
    assert row["period_days"] == 31
    # The 0.3 km trip too short to score was still driven: billed, but not rated on.
    assert row["dist_km"] == pytest.approx(50.3) and row["scored_dist_km"] == pytest.approx(50.0)
    assert row["experience_dist_km"] == pytest.approx(120.0)
    assert row["harsh_brake_count"] == 3 and row["harsh_accel_count"] == 1 and row["harsh_corner_count"] == 1
    assert row["night_dist_km"] == pytest.approx(5.0)
    assert row["urban_dist_km"] == pytest.approx(10.0) and row["motorway_dist_km"] == pytest.approx(20.0)
    assert row["speeding_dist_km"] == pytest.approx(60.0 * 40_000.0 / 2400.0 / 1000.0)
    assert row["phone_handling_min"] == pytest.approx(1.5)
    assert [row[f] for f in ("vehicle_group", "region", "age_band")] == [FACTORS[f] for f in
                                                                         ("vehicle_group", "region", "age_band")]
    assert np.isnan(row["previous_premium_cents"]) and np.isnan(row["previous_usage_exposure_years"])
    assert set(NUMERATORS) <= set(inputs.columns)


def test_a_passenger_trip_changes_nothing_against_the_driver(conn: psycopg.Connection[Any]) -> None:
    plan = default_plan()
    for policy_id in ("with", "without"):
        add_policy(conn, policy_id)
        add_trip(conn, policy_id, "drive", at(4), 60.0, features=trip_features(60.0, brakes=1, night_km=2.0))
    add_trip(conn, "with", "ride", at(9), 400.0, label="passenger",
             features=trip_features(400.0, brakes=40, night_km=300.0))
    add_trip(conn, "with", "train", at(10), 200.0, transport_mode="train", features=trip_features(200.0, brakes=20))
    add_trip(conn, "with", "not_me", at(11), 150.0, label="not_me", features=trip_features(150.0, brakes=15))
    reprice_period(conn, plan, *OCTOBER)
    stored = _stored(conn).set_index("policy_id")
    assert stored.loc["with", "amount"] == stored.loc["without", "amount"]
    assert stored.loc["with", "breakdown"]["lines"] == stored.loc["without", "breakdown"]["lines"]


def test_withdrawn_consent_applies_the_missing_data_rule(conn: psycopg.Connection[Any]) -> None:
    plan = default_plan()
    add_policy(conn, "W")
    add_policy(conn, "never", consent=None)
    for policy_id in ("W", "never"):
        add_trip(conn, policy_id, "drive", at(4), 300.0, features=trip_features(300.0, brakes=30, night_km=150.0))
    set_consent(conn, "W", False)
    inputs = rating_inputs(conn, *OCTOBER, plan=plan).set_index("policy_id")
    for policy_id in ("W", "never"):
        row = inputs.loc[policy_id]
        assert np.isnan(row["scored_dist_km"]) and np.isnan(row["experience_dist_km"])
        assert all(np.isnan(row[b.numerator]) for b in plan.behaviour)
        assert row["dist_km"] == pytest.approx(300.0)
    reprice_period(conn, plan, *OCTOBER)
    breakdown = _stored(conn).set_index("policy_id").loc["W", "breakdown"]
    neutral = 1.0 if plan.missing_data.behaviour == "neutral" else None
    for line in breakdown["lines"]:
        if line["line"] in plan.behaviour_names:
            assert line["factor"] == neutral and line["value"] is None
    assert breakdown["credibility_z"] == 0.0
    set_consent(conn, "W", True)
    assert rating_inputs(conn, *OCTOBER, plan=plan).set_index("policy_id").loc["W", "harsh_brake_count"] == 30


def test_reprice_stores_breakdowns_that_sum_to_the_premium(conn: psycopg.Connection[Any]) -> None:
    plan = default_plan()
    ids = _portfolio(conn, 40, seed=1)
    assert reprice_period(conn, plan, *OCTOBER) == 40
    stored = _stored(conn)
    assert stored["policy_id"].tolist() == ids
    expected_lines = ["base", *factor_names(plan)]
    # The same arithmetic in memory on the same inputs is the reference.
    frame = rating_inputs(conn, *OCTOBER, plan=plan)
    reference = price_with_breakdown(frame, plan)
    records = audit_records(frame, plan, reference)
    for position, row in enumerate(stored.itertuples()):
        doc = row.breakdown
        assert set(doc) == BREAKDOWN_KEYS and doc["currency"] == "EUR"
        assert [line["line"] for line in doc["lines"]] == expected_lines
        assert all(set(line) == LINE_KEYS for line in doc["lines"])
        assert doc["lines"][0]["amount_cents"] == doc["base_cents"]
        assert sum(line["amount_cents"] for line in doc["lines"]) == doc["premium_cents"]
        assert int(row.amount * 100) == doc["premium_cents"] == reference["premium_cents"].iat[position]
        assert doc["record_sha256"] == row.sha256 == records[position]["record_sha256"]
        assert row.inputs == records[position]["inputs"]
        assert doc["changes"] is None and doc["change_text"] is None
        assert set(doc["coaching"]["savings_cents"]) == set(plan.behaviour_names)
        assert row.plan_version == plan_key(plan) and row.usage > 0
        braking = next(line for line in doc["lines"] if line["line"] == "harsh_braking")
        assert braking["numerator"] == frame["harsh_brake_count"].iat[position]
        assert braking["credibility_z"] == pytest.approx(doc["credibility_z"])
    log = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'premium.period'").fetchone()
    assert log is not None and log[0] == 40


def test_rerunning_replaces_and_never_duplicates(conn: psycopg.Connection[Any]) -> None:
    plan = default_plan()
    _portfolio(conn, 10, seed=2)
    reprice_period(conn, plan, *OCTOBER)
    first = _stored(conn)
    reprice_period(conn, plan, *OCTOBER)
    reprice_period(conn, plan, *OCTOBER, ["P001", "P002"])
    again = _stored(conn)
    assert len(again) == 10 and again["premium_id"].tolist() == first["premium_id"].tolist()
    assert again["amount"].tolist() == first["amount"].tolist()
    add_trip(conn, "P003", "late", at(30), 500.0, features=trip_features(500.0, brakes=40))
    reprice_period(conn, plan, *OCTOBER, ["P003"])
    changed = _stored(conn).set_index("policy_id")
    assert len(changed) == 10 and changed.loc["P003", "amount"] > first.set_index("policy_id").loc["P003", "amount"]


def test_next_period_reports_changes_from_the_previous(conn: psycopg.Connection[Any]) -> None:
    plan = default_plan()
    _portfolio(conn, 8, seed=3)
    for k in range(3):
        add_trip(conn, "P004", f"nov{k}", at(3 + k, month=11), 90.0,
                 features=trip_features(90.0, brakes=9, night_km=40.0))
    reprice_period(conn, plan, *OCTOBER)
    reprice_period(conn, plan, *NOVEMBER)
    stored = _stored(conn)
    october = stored[stored["period_start"] == OCTOBER[0]].set_index("policy_id")
    november = stored[stored["period_start"] == NOVEMBER[0]].set_index("policy_id")
    doc = november.loc["P004", "breakdown"]
    previous = october.loc["P004", "breakdown"]
    assert sum(doc["changes"].values()) == doc["premium_cents"] - previous["premium_cents"]
    for line, now, before in zip(doc["lines"], doc["lines"], previous["lines"], strict=True):
        assert doc["changes"][line["line"]] == now["amount_cents"] - before["amount_cents"]
    assert doc["change_text"] and "night_driving +" in doc["change_text"]
    inputs = november.loc["P004", "inputs"]
    assert inputs["previous_premium_cents"] == previous["premium_cents"]
    assert inputs["previous_usage_exposure_years"] == pytest.approx(october.loc["P004", "usage"])


def test_replay_is_clean_then_finds_a_tampered_premium(conn: psycopg.Connection[Any]) -> None:
    plan = default_plan()
    _portfolio(conn, 12, seed=4)
    reprice_period(conn, plan, *OCTOBER)
    result = replay_stored(conn)
    assert result.ok and result.n_records == 12
    conn.execute("UPDATE premiums SET amount = amount + 0.01 WHERE policy_id = 'P007'")
    tampered = replay_stored(conn, period_start=OCTOBER[0], period_end=OCTOBER[1])
    assert not tampered.ok
    assert set(tampered.problems["policy_id"]) == {"P007"}
    assert {"premium_cents", "record_sha256", "breakdown.premium_cents"} <= set(tampered.problems["field"])
    conn.execute("UPDATE premiums SET amount = amount - 0.01 WHERE policy_id = 'P007'")
    conn.execute("UPDATE premiums SET inputs = jsonb_set(inputs, '{dist_km}', '9999.0') WHERE policy_id = 'P002'")
    moved = replay_stored(conn)
    assert set(moved.problems["policy_id"]) == {"P002"} and "premium_cents" in set(moved.problems["field"])


def test_plans_are_immutable(conn: psycopg.Connection[Any]) -> None:
    plan = default_plan()
    assert publish_plan(conn, plan) == "default-v1"
    assert publish_plan(conn, plan) == "default-v1"
    assert load_published_plan(conn, "default-v1").sha256 == plan.sha256
    impostor = plan.new_version(description="impostor")
    impostor = type(impostor)(**{**impostor.__dict__, "version": 1, "parent_sha256": None})
    with pytest.raises(PlanError, match="default-v1 is already published"):
        publish_plan(conn, impostor)
    with pytest.raises(psycopg.errors.RaiseException, match="immutable"):
        conn.execute("UPDATE rating_plans SET sha256 = 'x' WHERE version = 'default-v1'")
    with pytest.raises(PlanError, match="no published plan 'default-v9'"):
        load_published_plan(conn, "default-v9")
    successor = plan.new_version(description="successor")
    publish_plan(conn, successor)
    assert plan_in_force(conn).sha256 == successor.sha256


def test_an_empty_period_prices_nothing(conn: psycopg.Connection[Any]) -> None:
    add_policy(conn, "future", start=date(2027, 1, 1))
    assert reprice_period(conn, default_plan(), *OCTOBER) == 0
    assert provisional_premium(conn, "future", datetime(2026, 11, 5, tzinfo=UTC)) is None
    assert rating_inputs(conn, *OCTOBER, plan=default_plan()).empty


def test_a_policy_starting_mid_month_pays_for_its_days(conn: psycopg.Connection[Any]) -> None:
    add_policy(conn, "mid", start=date(2026, 10, 21))
    add_policy(conn, "ended", start=date(2025, 1, 1), end=date(2026, 10, 11))
    inputs = rating_inputs(conn, *OCTOBER, plan=default_plan()).set_index("policy_id")
    assert inputs.loc["mid", "period_days"] == 11 and inputs.loc["ended", "period_days"] == 10


def test_default_plan_is_published_on_first_use(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("SELECT count(*) FROM rating_plans").fetchone() == (0,)
    assert plan_in_force(conn).sha256 == default_plan().sha256
    assert conn.execute("SELECT version FROM rating_plans").fetchall() == [("default-v1",)]


def test_provisional_premium_follows_each_scored_trip(conn: psycopg.Connection[Any]) -> None:
    add_policy(conn, "V")
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert provisional_premium(conn, "nobody", now) is None
    empty = provisional_premium(conn, "V", now)
    assert empty is not None and empty["period_start"] == "2026-11-01" and empty["period_end"] == "2026-11-21"
    add_trip(conn, "V", "n1", at(10, month=11), 80.0, features=trip_features(80.0, brakes=6, night_km=30.0))
    after = provisional_premium(conn, "V", now)
    assert after is not None and after["premium_cents"] > empty["premium_cents"]
    lines = after["breakdown"]["lines"]
    assert sum(line["amount_cents"] for line in lines) == after["premium_cents"]
    rows = conn.execute("SELECT amount, period_end FROM premiums WHERE kind = 'provisional'").fetchall()
    assert len(rows) == 1 and int(rows[0][0] * 100) == after["premium_cents"]
    # The same day again is the same premium; a day later the month so far is one day longer.
    later = provisional_premium(conn, "V", datetime(2026, 11, 21, 12, tzinfo=UTC))
    assert later is not None and later["period_end"] == "2026-11-22"
    assert conn.execute("SELECT count(*) FROM premiums WHERE kind = 'provisional'").fetchone() == (1,)
    assert replay_stored(conn, kind="provisional").ok
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        provisional_premium(conn, "V", now)
        timings.append(time.perf_counter() - started)
    # About 20-40 ms on these machines; the bound catches a path that grows with the portfolio.
    assert float(np.median(timings)) < 0.25, timings


def test_provisional_premiums_inside_one_caller_transaction(rating_url: str) -> None:
    with psycopg.connect(rating_url) as conn:
        for policy_id in ("X", "Y"):
            add_policy(conn, policy_id)
        now = datetime(2026, 11, 20, 12, tzinfo=UTC)
        for policy_id in ("X", "Y", "X"):
            add_trip(conn, policy_id, f"trip-{time.perf_counter_ns()}", at(10, month=11), 30.0)
            assert provisional_premium(conn, policy_id, now) is not None
        conn.commit()
        rows = conn.execute("SELECT policy_id FROM premiums WHERE kind = 'provisional' ORDER BY 1").fetchall()
    assert rows == [("X",), ("Y",)]


def test_an_erased_policy_still_replays_under_its_pseudonym(conn: psycopg.Connection[Any]) -> None:
    from telematics.maintenance import erase_policyholder
    from telematics.rating import reseal_pseudonymised
    from telematics.store.privacy import erase_policy

    _portfolio(conn, 4, seed=8)
    reprice_period(conn, default_plan(), *OCTOBER)
    before = dict(conn.execute("SELECT policy_id, sha256 FROM premiums").fetchall())
    with conn.transaction():
        pseudonym = erase_policyholder(conn, "P002", actor="test")["pseudonym"]
    result = replay_stored(conn)
    assert result.ok and result.n_records == 4 and result.unverifiable_hashes == 0
    sha, inputs, breakdown = conn.execute(
        "SELECT sha256, inputs, breakdown FROM premiums WHERE policy_id = %s AND pseudonymised",
        (pseudonym,)).fetchone()
    # The old hash, which anyone knowing the policy id could recompute, is gone.
    assert sha != before["P002"] and breakdown["record_sha256"] == sha
    assert inputs["policy_id"] == pseudonym
    assert sha not in before.values()
    # A premium erased without resealing (as before resealing existed) cannot be
    # verified until maintenance reseals it.
    with conn.transaction():
        erase_policy(conn, "P003", actor="test")
    assert replay_stored(conn).unverifiable_hashes == 1
    with conn.transaction():
        assert reseal_pseudonymised(conn) == 1
        assert reseal_pseudonymised(conn) == 0
    result = replay_stored(conn)
    assert result.ok and result.unverifiable_hashes == 0


def test_coaching_with_fixed_targets_matches_the_library(conn: psycopg.Connection[Any]) -> None:
    plan = default_plan()
    _portfolio(conn, 30, seed=5)
    frame = rating_inputs(conn, *OCTOBER, plan=plan)
    ours = coach_towards(frame, plan, coaching_targets_of(frame, plan))
    reference = coach(frame, plan)
    for name in plan.behaviour_names:
        np.testing.assert_array_equal(ours[f"coach_{name}_saving_cents"], reference[f"coach_{name}_saving_cents"])
    assert ours["next_best_action"].tolist() == reference["next_best_action"].tolist()
    np.testing.assert_array_equal(ours["next_best_saving_cents"], reference["next_best_saving_cents"])


def test_partitions_coach_towards_the_whole_portfolio(rating_url: str, conn: psycopg.Connection[Any]) -> None:
    plan = default_plan()
    _portfolio(conn, 20, seed=6)
    reprice_period(conn, plan, *OCTOBER)
    whole = _stored(conn)[["policy_id", "breakdown", "sha256"]]
    ids = whole["policy_id"].tolist()
    pricing_url = as_pricing_role(rating_url)
    assert sum(reprice_partition(pricing_url, "default-v1", *OCTOBER, part) for part in (ids[:7], ids[7:])) == 20
    parts = _stored(conn)[["policy_id", "breakdown", "sha256"]]
    assert parts["breakdown"].tolist() == whole["breakdown"].tolist()


def test_the_pricing_role_can_price_but_not_read_raw_samples(conn: psycopg.Connection[Any]) -> None:
    _portfolio(conn, 5, seed=7)
    publish_plan(conn, default_plan())
    conn.execute("SET ROLE ubi_pricing")
    plan = plan_in_force(conn)
    assert reprice_period(conn, plan, *OCTOBER) == 5
    assert reprice_period(conn, plan, *OCTOBER) == 5
    assert provisional_premium(conn, "P001", datetime(2026, 11, 3, tzinfo=UTC)) is not None
    assert replay_stored(conn).ok
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT count(*) FROM gps_samples")
