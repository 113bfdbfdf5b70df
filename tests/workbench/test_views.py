"""The workbench's arithmetic without a server: deciles, the route projection, breakdown
checks, changes and replay, each against an independent reference."""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from pricing.plan import default_plan
from pricing.rating import reprice
from pricing.validate import lift_table
from telematics.service import charts, pages, review_view, trip_view
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


def local_m(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """Pointwise equirectangular metres (north, east), the reference for the route's."""
    return np.array([[math.radians(a - lat0) * charts.EARTH_RADIUS_M,
                      math.radians(b - lon0) * charts.EARTH_RADIUS_M
                      * math.cos(math.radians(lat0))] for a, b in zip(lat, lon, strict=True)])


def drive_along(along_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions at the given distances along a fixed curve (a quarter circle of 2 km radius
    from 52.30 N 4.90 E), so that two speed profiles drive the same road."""
    angle = along_m / 2000.0
    north, east = 2000.0 * np.sin(angle), 2000.0 * (1.0 - np.cos(angle))
    lat = 52.30 + np.degrees(north / charts.EARTH_RADIUS_M)
    lon = 4.90 + np.degrees(east / (charts.EARTH_RADIUS_M * math.cos(math.radians(52.30))))
    return lat, lon


def test_the_route_is_drawn_evenly_in_distance_whatever_the_speed() -> None:
    rng = np.random.default_rng(4)
    slow = np.cumsum(np.r_[0.0, rng.uniform(3.0, 9.0, 599)])  # one position a second
    fast = np.cumsum(np.r_[0.0, rng.uniform(20.0, 35.0, 200)])
    fast = np.r_[fast[fast < slow[-1]], slow[-1]]
    stops = np.r_[slow[:100], np.full(30, slow[100]), slow[100:]]  # half a minute standing
    drawn = [charts.route_resample(*drive_along(d)) for d in (slow, fast, stops)]
    for lat, lon in drawn[1:]:  # the same road: the same points, whatever the speed
        assert lat.size == drawn[0][0].size
        assert np.allclose(lat, drawn[0][0], atol=1e-9) and np.allclose(lon, drawn[0][1],
                                                                          atol=1e-9)
    lat, lon = drawn[0]
    metres = local_m(lat, lon, 52.30, 4.90)
    spacing = np.hypot(*np.diff(metres, axis=0).T)
    # chords of a 2 km circle are a hair shorter than their 10 m of arc
    assert np.allclose(spacing[:-1], charts.ROUTE_STEP_M, rtol=1e-4)
    assert 0 < spacing[-1] <= charts.ROUTE_STEP_M + 1e-6
    road_lat, road_lon = drive_along(slow)
    assert (lat[0], lon[0]) == (road_lat[0], road_lon[0])
    assert (lat[-1], lon[-1]) == (road_lat[-1], road_lon[-1])


def test_the_route_keeps_gaps_unfilled_and_bounds_its_points() -> None:
    along = np.r_[np.arange(0.0, 500.0, 8.0), np.arange(900.0, 1400.0, 8.0)]  # 404 m gap
    lat, lon = drive_along(along)
    out_lat, out_lon = charts.route_resample(lat, lon)
    metres = local_m(out_lat, out_lon, 52.30, 4.90)
    distance = 2000.0 * np.arcsin(np.clip(metres[:, 0] / 2000.0, -1, 1))
    assert not ((distance > 496.0 + 1e-6) & (distance < 900.0 - 1e-6)).any()
    assert np.isclose(distance, 496.0).any() and np.isclose(distance, 900.0).any()
    long_lat, long_lon = drive_along(np.arange(0.0, 60_000.0, 20.0))  # 60 km, five laps
    drawn = charts.route_resample(long_lat, long_lon)[0].size
    assert charts.MAX_ROUTE_POINTS <= drawn <= charts.MAX_ROUTE_POINTS + 1
    one = charts.route_resample(np.array([52.0]), np.array([4.0]))
    assert one[0].tolist() == [52.0] and one[1].tolist() == [4.0]
    assert "privacy zones" in charts.route(np.array([52.0]), np.array([4.0]), [])
    svg = charts.route(lat, lon, [charts.PointMark(float(lat[3]), float(lon[3]), "braking",
                                                   "event 1: braking (hard)")])
    assert "<polyline" in svg and "km/h" not in svg and "data-t" not in svg


def reference_profile(t_s: np.ndarray, speed_mps: np.ndarray,
                      origin_s: float) -> dict[int, float]:
    """Minute by minute with plain Python: the median of each minute that is covered for at
    least half of it, in km/h rounded to 5."""
    minutes: dict[int, list[tuple[float, float]]] = {}
    for t, v in zip(t_s.tolist(), speed_mps.tolist(), strict=True):
        if math.isfinite(t) and math.isfinite(v):
            minutes.setdefault(math.floor((t - origin_s) / 60.0), []).append((t, v))
    out = {}
    for minute, samples in minutes.items():
        times = [t for t, _ in samples]
        if max(times) - min(times) >= 30.0:
            out[minute] = round(float(np.median([v for _, v in samples])) * 3.6 / 5.0) * 5.0
    return out


@pytest.mark.parametrize("case", ["drive", "empty", "one", "nan", "unsorted", "sparse", "early"])
def test_speed_profile_has_one_value_a_minute(case: str) -> None:
    rng = np.random.default_rng(9)
    origin = 1_790_000_000.0
    t = origin + 75.0 + np.arange(1200, dtype=np.float64)
    v = np.clip(12.0 + np.cumsum(rng.normal(0, 0.4, t.size)), 0.0, 40.0)
    if case == "empty":
        t, v = t[:0], v[:0]
    elif case == "one":
        t, v = t[:1], v[:1]
    elif case == "nan":
        v[100:400] = np.nan
        t[700] = np.nan
    elif case == "unsorted":
        order = rng.permutation(t.size)
        t, v = t[order], v[order]
    elif case == "sparse":
        keep = rng.random(t.size) < 0.1
        t, v = t[keep], v[keep]
    elif case == "early":  # a clock that starts before the trip's start
        t = t - 200.0
    profile = trip_view.speed_profile(t, v, origin)
    expected = reference_profile(t, v, origin)
    assert profile.minute.tolist() == sorted(expected)
    assert profile.speed_kmh.tolist() == [expected[m] for m in sorted(expected)]
    assert np.unique(profile.minute).size == profile.minute.size
    assert (np.mod(profile.speed_kmh, 5.0) == 0).all()


def test_event_evidence_is_the_few_seconds_around_the_event() -> None:
    t = 1_000.0 + np.arange(600, dtype=np.float64)
    v = np.linspace(0.0, 30.0, t.size)
    braking = trip_view.event_evidence(t, v, 1_200.0, 1_203.0)
    assert braking.t_s.tolist() == list(np.arange(-10.0, 14.0))
    assert braking.speed_kmh == pytest.approx(v[190:214] * 3.6)
    assert (braking.from_s, braking.to_s) == (-10.0, 13.0)
    long = trip_view.event_evidence(t, v, 1_100.0, 1_400.0)  # five minutes of speeding
    assert long.t_s[0] == -10.0 and long.t_s[-1] == trip_view.EVIDENCE_MAX_S + 10.0
    assert trip_view.event_evidence(t, v, 5_000.0, 5_002.0).t_s.size == 0  # in a zone
    assert "no visible positions" in charts.evidence_trace(np.empty(0), np.empty(0), 2.0,
                                                           "braking")
    svg = charts.evidence_trace(braking.t_s, braking.speed_kmh, 3.0, "braking")
    points = re.search(r'class="trace" points="([^"]+)"', svg)
    assert points is not None and len(points.group(1).split()) == 24


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
    speed = charts.speed_chart(np.array([0, 1, 3]), np.full(3, 50.0),
                               [charts.SpanMark(2.0, 2.1, "braking")])
    assert "braking" in speed
    assert re.findall(r'id="speed-minute-(\d+)"', speed) == ["0", "1", "3"]


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


def test_a_review_carries_the_premium_line_by_line_in_money() -> None:
    ids = [f"P{i}" for i in range(6)]
    first, second = portfolio(ids, seed=1), portfolio(ids, seed=2)
    before = contract_rows(first, PLAN)
    after = contract_rows(second, PLAN, previous=first)
    for i in range(len(ids)):
        previous = premium_view(premium_row(before[i], premium_id=1), PLAN)
        current = premium_view(premium_row(after[i], premium_id=2, period=(
            date(2026, 11, 1), date(2026, 12, 1))), PLAN)
        shown = review_view.premium_breakdown(current, previous, named=False)
        assert shown["premium_id"] == 2 and shown["named"] is False
        assert sum(line["amount_cents"] for line in shown["lines"]) == shown["premium_cents"]
        assert sum(Decimal(line["amount"]) for line in shown["lines"]) == Decimal(shown["amount"])
        assert shown["lines"][-1]["running_total"] == shown["amount"] == shown["lines_total"]
        assert Decimal(shown["amount"]) == after[i]["amount"]
        assert shown["change_cents"] == current.premium_cents - previous.premium_cents
        assert Decimal(shown["change"]) == Decimal(shown["amount"]) - Decimal(
            shown["previous"]["amount"])
        changes = changes_between(current, previous)
        assert {c["line"]: c["amount_cents"] for c in shown["change_lines"]} == {
            k: v for k, v in changes.items() if v}
        assert {line["line"]: line["change_cents"] for line in shown["lines"]} == {
            line.line: changes.get(line.line) for line in current.lines}
    alone = review_view.premium_breakdown(current, None, named=True)
    assert alone["previous"] is None and alone["change"] is None and alone["named"] is True
