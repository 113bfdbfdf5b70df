"""The workbench's arithmetic without a server: deciles, the route projection, breakdown
checks, changes and replay, each against an independent reference."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from pricing.plan import default_plan
from pricing.rating import reprice
from pricing.validate import lift_table
from telematics.service import charts, pages
from telematics.service.auth import Principal
from telematics.service.premium_view import (
    BreakdownError,
    changes_between,
    premium_view,
    replay_premium,
)
from telematics.service.workbench import (
    loss_ratio_by_decile,
    plan_in_force,
    portfolio_context,
    rate_deciles,
)
from telematics.store import workbench as wb_sql
from telematics.store.workbench import PlanRow, PremiumRow
from tests.workbench.premiums import contract_rows, portfolio, stored_version

PLAN = default_plan()
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def premium_row(row: dict[str, Any], premium_id: int = 1, kind: str = "period",
                period: tuple[date, date] = (date(2026, 10, 1), date(2026, 11, 1))) -> PremiumRow:
    return PremiumRow(premium_id=premium_id, policy_id=row["policy_id"], period_start=period[0],
                      period_end=period[1], kind=kind, plan_version=stored_version(PLAN),
                      amount=row["amount"], currency=row["currency"], breakdown=row["breakdown"],
                      inputs=row["inputs"], code_version=row["code_version"], sha256=row["sha256"],
                      created_at=NOW, updated_at=NOW)


PLAN_ROW = PlanRow(stored_version(PLAN), PLAN.to_dict(), PLAN.sha256, NOW)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return contract_rows(portfolio([f"P{i}" for i in range(30)], seed=5), PLAN)


@pytest.mark.parametrize("seed", range(5))
def test_loss_ratio_by_decile_matches_lift_table(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 200))
    premium = rng.gamma(2.0, 50.0, n)
    exposure = rng.uniform(0.05, 1.0, n)
    claims = np.where(rng.random(n) < 0.3, rng.gamma(1.0, 200.0, n), 0.0)
    claims[0] = 100.0
    premium[: n // 4] = premium[0]  # ties in rate keep their input order
    exposure[: n // 4] = exposure[0]
    table = loss_ratio_by_decile(premium, claims, exposure)
    reference = lift_table(claims, premium, exposure, 10)
    portfolio_lr = claims.sum() / premium.sum()
    assert [d["decile"] for d in table] == list(reference.index)
    for d in table:
        expected = reference.loc[d["decile"]]
        assert d["exposure_years"] == pytest.approx(expected["exposure"])
        assert d["claims"] == pytest.approx(expected["observed"])
        assert d["loss_ratio"] == pytest.approx(expected["observed_over_expected"] * portfolio_lr)
    assert sum(d["policies"] for d in table) == n
    assert rate_deciles(premium, exposure).min() >= 1


def test_route_projection_matches_a_pointwise_reference() -> None:
    rng = np.random.default_rng(1)
    lat = 52.3 + np.cumsum(rng.normal(0, 1e-4, 500))
    lon = 4.9 + np.cumsum(rng.normal(0, 1e-4, 500))
    frame = charts.RouteFrame.fit(lat, lon, 640.0, 420.0)
    x, y = frame.project(lat, lon)
    lat0, lon0 = float(np.mean(lat)), float(np.mean(lon))
    for i in range(0, 500, 37):
        north = math.radians(lat[i] - lat0) * charts.EARTH_RADIUS_M
        east = (math.radians(lon[i] - lon0) * charts.EARTH_RADIUS_M
                * math.cos(math.radians(lat0)))
        assert x[i] == round(frame.pad + (east - frame.east_min_m) * frame.scale, 1)
        assert y[i] == round(frame.pad + (frame.north_max_m - north) * frame.scale, 1)
    assert x.min() == pytest.approx(16.0, abs=0.1) or y.min() == pytest.approx(16.0, abs=0.1)
    assert x.max() <= 624.05 and y.max() <= 404.05 and x.min() >= 15.95 and y.min() >= 15.95


def test_route_draws_every_position_up_to_the_limit_and_keeps_the_ends() -> None:
    assert charts.route_sample(3).tolist() == [0, 1, 2]
    n = charts.MAX_ROUTE_POINTS * 3 + 7
    picked = charts.route_sample(n)
    assert picked[0] == 0 and picked[-1] == n - 1 and picked.size <= charts.MAX_ROUTE_POINTS + 1
    assert (np.diff(picked) > 0).all()
    one = charts.route(np.array([52.0]), np.array([4.0]), [])
    assert "privacy zones" in one and "<polyline" not in one


def test_breakdown_view_reconciles_and_names_bad_fields(rows: list[dict[str, Any]]) -> None:
    priced = reprice(portfolio([f"P{i}" for i in range(30)], seed=5), PLAN)
    for i, row in enumerate(rows):
        view = premium_view(premium_row(row), PLAN)
        assert view.problems == ()
        assert view.lines_total_cents == view.premium_cents == int(priced["premium_cents"][i])
        assert view.lines[0].line == "base" and view.lines[0].amount_cents == view.base_cents
        assert {line.line for line in view.behaviour_lines} == set(PLAN.behaviour_names)
        expected = math.prod(line.factor or 1.0 for line in view.behaviour_lines) * next(
            line.factor for line in view.lines if line.line == "telematics_band")
        assert view.telematics_factor == pytest.approx(expected)
    doc = rows[0]["breakdown"]
    broken = {**doc, "lines": [*doc["lines"][:2], {**doc["lines"][2], "amount_cents": "12"}]}
    with pytest.raises(BreakdownError, match=r"breakdown\.lines\[2\]\.amount_cents"):
        premium_view(premium_row({**rows[0], "breakdown": broken}), PLAN)
    with pytest.raises(BreakdownError, match=r"breakdown\.premium_cents: required"):
        premium_view(premium_row({**rows[0], "breakdown": {
            k: v for k, v in doc.items() if k != "premium_cents"}}), PLAN)
    off = {**doc, "lines": [*doc["lines"][:-1], {**doc["lines"][-1], "amount_cents":
                                                  doc["lines"][-1]["amount_cents"] + 1}]}
    view = premium_view(premium_row({**rows[0], "breakdown": off}), PLAN)
    assert any("sum to" in p for p in view.problems)
    view = premium_view(premium_row({**rows[0], "amount": rows[0]["amount"] + Decimal("0.01")}),
                        PLAN)
    assert any("stored amount" in p for p in view.problems)


def test_changes_are_stored_or_computed_line_by_line() -> None:
    ids = [f"P{i}" for i in range(8)]
    first, second = portfolio(ids, seed=1), portfolio(ids, seed=2)
    stored = contract_rows(second, PLAN, previous=first)
    before = [premium_view(premium_row(r), PLAN) for r in contract_rows(first, PLAN)]
    plain = contract_rows(second, PLAN)
    for i in range(len(ids)):
        with_stored = premium_view(premium_row(stored[i]), PLAN)
        computed = premium_view(premium_row(plain[i]), PLAN)
        assert changes_between(with_stored, before[i]) == {
            k: v for k, v in changes_between(computed, before[i]).items() if k != "base"}
        assert sum(changes_between(computed, before[i]).values()) == (
            computed.premium_cents - before[i].premium_cents)
    assert changes_between(premium_view(premium_row(plain[0]), PLAN), None) == {}


def test_replay_is_identical_and_reports_each_difference(rows: list[dict[str, Any]]) -> None:
    view = premium_view(premium_row(rows[3]), PLAN)
    outcome = replay_premium(view, PLAN_ROW)
    assert outcome.identical and outcome.record_hash_ok and outcome.plan_hash_ok
    assert outcome.premium_cents == view.premium_cents
    inputs = {**rows[3]["inputs"], "dist_km": rows[3]["inputs"]["dist_km"] + 300.0}
    changed = replay_premium(premium_view(premium_row({**rows[3], "inputs": inputs}), PLAN),
                             PLAN_ROW)
    assert not changed.identical and not changed.record_hash_ok
    fields = {d["field"] for d in changed.differences}
    assert {"premium_cents", "breakdown_cents.usage"} <= fields
    assert changed.premium_cents is not None and changed.premium_cents > view.premium_cents
    bad_inputs = {k: v for k, v in rows[3]["inputs"].items() if k != "region"}
    failed = replay_premium(premium_view(premium_row({**rows[3], "inputs": bad_inputs}), PLAN),
                            PLAN_ROW)
    assert failed.error is not None and "region" in failed.error
    other = dataclasses.replace(PLAN_ROW, sha256="0" * 64)
    assert replay_premium(view, other).plan_hash_ok is False
    assert replay_premium(view, None).error is not None


def test_plan_in_force_is_the_latest_published() -> None:
    later = PLAN.new_version(description="recalibrated", effective_from=date(2027, 1, 1))
    rows = [PlanRow("default-v2", later.to_dict(), later.sha256, NOW), PLAN_ROW]
    shown = plan_in_force(rows, date(2026, 11, 23))
    assert shown is not None and shown["version"] == "default-v2" and not shown["in_force"]
    assert plan_in_force(rows[1:], date(2026, 12, 1))["in_force"]  # type: ignore[index]
    assert plan_in_force([], date(2026, 12, 1)) is None


def test_charts_are_svg_and_cached() -> None:
    labels = ["base", "region", "usage", "increase_cap"]
    svg = charts.waterfall(labels, [1000, 250, -100, 0], 2, "EUR")
    assert svg.startswith("<svg") and "Premium waterfall" in svg
    assert "increase cap" not in svg  # zero lines stay in the table only
    assert charts.waterfall(labels, [1000, 250, -100, 0], 2, "EUR") is svg
    speed = charts.speed_chart(np.arange(10.0), np.full(10, 50.0),
                               [charts.SpanMark(2.0, 2.1, "braking")])
    assert "braking" in speed


def test_a_book_without_claims_renders_without_a_lorenz_curve(
        rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    book = [(premium_row(r, premium_id=i + 1), Decimal(0)) for i, r in enumerate(rows)]
    monkeypatch.setattr(wb_sql, "premiums_in_force", lambda conn: book)
    monkeypatch.setattr(wb_sql, "rating_plans", lambda conn: [PLAN_ROW])
    monkeypatch.setattr(wb_sql, "get_plan", lambda conn, version: PLAN_ROW)
    context = portfolio_context(None)
    assert context["book_size"] == len(rows) and context["gini"] is None
    html = bytes(pages.render("portfolio.html", title="Portfolio", nav="portfolio",
                              who=Principal("staff", "uw", ("underwriter",)),
                              **context).body).decode()
    assert 'id="lorenz"' not in html and html.count("<svg") >= 3
