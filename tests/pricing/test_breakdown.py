"""Money breakdowns sum to the premium to the cent; coaching finds the best single change."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pricing.breakdown
import pricing.rating
from pricing.breakdown import (
    NO_ACTION,
    allocate_contributions,
    breakdown_lines,
    change_from_previous,
    coach,
    explain,
    factor_names,
    format_change,
    price_with_breakdown,
)
from pricing.money import minor_units_to_decimal
from pricing.plan import Plan
from pricing.rating import reprice
from tests.pricing.reference import price_policy


@settings(max_examples=200, deadline=None)
@given(
    base_cents=st.integers(1, 10_000_000),
    factors=st.lists(st.floats(0.2, 5.0), min_size=1, max_size=20),
)
def test_allocation_sums_exactly(base_cents: int, factors: list[float]) -> None:
    exact = base_cents * float(np.prod(factors))
    premium_cents = max(round(exact), 1)
    contributions = allocate_contributions(
        np.asarray([base_cents]), np.asarray([premium_cents]), np.log(np.asarray([factors]))
    )
    assert contributions.sum() == premium_cents - base_cents


def test_allocation_with_cancelling_factors() -> None:
    contributions = allocate_contributions(np.asarray([10_000]), np.asarray([10_000]), np.log([[2.0, 0.5]]))
    assert contributions.tolist() == [[6931, -6931]]


@pytest.mark.parametrize("n_lines", [*range(0, 40), 64, 127, 128, 129, 300])
def test_line_sums_are_numpy_row_sums_bit_for_bit(n_lines: int) -> None:
    rng = np.random.default_rng(n_lines)
    by_policy = rng.standard_normal((500, n_lines)) * np.exp(rng.uniform(-30.0, 30.0, (500, n_lines)))
    by_policy[rng.random(by_policy.shape) < 0.2] = 0.0
    lines_first = np.ascontiguousarray(by_policy.T)
    assert (pricing.breakdown._line_sum(lines_first).view(np.uint64) == by_policy.sum(axis=1).view(np.uint64)).all()


def test_allocation_does_not_depend_on_the_callers_layout() -> None:
    rng = np.random.default_rng(5)
    log_factors = np.log(rng.uniform(0.5, 2.0, (300, 15)))
    base = rng.integers(1_000, 50_000, 300)
    premium = np.maximum(np.round(base * np.exp(log_factors.sum(axis=1))), 1).astype(np.int64)
    by_rows = allocate_contributions(base, premium, log_factors)
    by_columns = allocate_contributions(base, premium, np.asfortranarray(log_factors))
    assert (by_rows == by_columns).all()
    assert (by_rows.sum(axis=1) == premium - base).all()


@pytest.mark.parametrize("n_policies", [1, 2, 49, 50, 51, 130])
def test_cents_do_not_depend_on_blocks(portfolio: pd.DataFrame, plan: Plan, n_policies: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    policies = portfolio.iloc[:n_policies]
    whole = price_with_breakdown(policies, plan)
    monkeypatch.setattr(pricing.rating, "_BLOCK_ROWS", 7)
    monkeypatch.setattr(pricing.breakdown, "_BLOCK_ROWS", 50)
    blocked = price_with_breakdown(policies, plan)
    pd.testing.assert_frame_equal(blocked, whole, check_exact=True)
    rows = policies.astype(object).where(policies.notna(), None).to_dict("records")
    expected = pd.DataFrame([price_policy(row, plan) for row in rows], index=policies.index)
    pd.testing.assert_frame_equal(blocked[expected.columns], expected, check_dtype=False)


def test_portfolio_breakdown_sums_to_premium(portfolio: pd.DataFrame, plan: Plan) -> None:
    explained = price_with_breakdown(portfolio, plan)
    lines = [f"contribution_{name}_cents" for name in factor_names(plan)]
    total = explained["base_cents"] + explained[lines].sum(axis=1)
    assert (total == explained["premium_cents"]).all()
    # Each line has the sign of its factor.
    for name in factor_names(plan):
        factor = explained["usage_factor" if name == "usage" else f"{name}_factor"]
        contribution = explained[f"contribution_{name}_cents"]
        assert (contribution[factor > 1.001] >= 0).all()
        assert (contribution[factor < 0.999] <= 0).all()


def test_lines_are_exact_decimals_with_the_data_behind(portfolio: pd.DataFrame, plan: Plan) -> None:
    some = portfolio.iloc[:5]
    explained = price_with_breakdown(some, plan)
    lines = breakdown_lines(explained, some, plan)
    assert len(lines) == 5 * (1 + len(factor_names(plan)))
    for policy_id, group in lines.groupby("policy_id"):
        premium = explained.loc[explained["policy_id"] == policy_id, "premium_cents"].iloc[0]
        assert sum(group["amount"], Decimal(0)) == minor_units_to_decimal(int(premium))
    braking = lines[lines["line"] == "harsh_braking"].iloc[0]
    source = some.iloc[0]
    assert braking["numerator"] == source["harsh_brake_count"] or np.isnan(source["harsh_brake_count"])
    assert braking["scored_dist_km"] == source["scored_dist_km"] or np.isnan(source["scored_dist_km"])


def test_change_from_previous_period(portfolio: pd.DataFrame, plan: Plan) -> None:
    previous = explain(reprice(portfolio, plan), plan)
    more_night = portfolio.assign(night_dist_km=portfolio["scored_dist_km"] * 0.3)
    current = explain(reprice(more_night, plan), plan)
    changes = change_from_previous(current, previous, plan)
    change_lines = [f"change_{n}_cents" for n in factor_names(plan)]
    assert (changes["change_base_cents"] + changes[change_lines].sum(axis=1) == changes["change_premium_cents"]).all()
    has_data = portfolio["scored_dist_km"].fillna(0).to_numpy() >= plan.missing_data.min_scored_dist_km
    assert (changes.loc[has_data, "change_night_driving_cents"] >= 0).all()
    assert format_change(300) == "+3.00" and format_change(-70) == "-0.70"


def test_coaching_reprices_at_the_median(portfolio: pd.DataFrame, plan: Plan) -> None:
    advice = coach(portfolio, plan)
    premium = reprice(portfolio, plan)["premium_cents"]
    assert (advice["premium_cents"] == premium).all()
    savings = advice[[f"coach_{n}_saving_cents" for n in plan.behaviour_names]].to_numpy()
    assert (savings >= 0).all()
    assert (advice["next_best_saving_cents"].to_numpy() == savings.max(axis=1)).all()
    acting = advice["next_best_action"] != NO_ACTION
    assert acting.any() and (advice.loc[~acting, "next_best_saving_cents"] == 0).all()
    # The advice holds: moving the named behaviour to the median gives the quoted premium.
    row = advice[acting].iloc[0]
    name = row["next_best_action"]
    table = next(t for t in plan.behaviour if t.name == name)
    values = reprice(portfolio, plan)[f"{name}_value"]
    median = float(values.median())
    policy = portfolio[portfolio["policy_id"] == row["policy_id"]].copy()
    scale = 1.0 if table.unit == "share_of_km" else 100.0
    policy[table.numerator] = median * policy["scored_dist_km"] / scale
    moved = reprice(policy, plan)["premium_cents"].iloc[0]
    assert moved == row[f"coach_{name}_premium_cents"]
