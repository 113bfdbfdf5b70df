"""Validation metrics: Gini of the ordered Lorenz curve, lift, O/E, deviance, fairness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pricing.plan import Plan
from pricing.synthetic import synthetic_portfolio
from pricing.validate import (
    fairness_audit,
    gini,
    lift_table,
    observed_over_expected,
    ordered_lorenz,
    poisson_deviance_vs_null,
    protected_columns,
    validate,
)


def test_gini_hand_computed() -> None:
    # Two equal-exposure policies; all loss on the one scored higher. The curve runs
    # (0, 0) -> (0.5, 0) -> (1, 1): area 0.25, Gini 1 - 2 * 0.25 = 0.5.
    assert gini([0.0, 10.0], [1.0, 2.0], [1.0, 1.0]) == pytest.approx(0.5)
    # A score that ranks nothing (equal rates, losses proportional to exposure) gives 0.
    assert gini([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(0.0)
    # The reverse ranking is negative.
    assert gini([10.0, 0.0], [1.0, 2.0], [1.0, 1.0]) == pytest.approx(-0.5)


def test_lorenz_curve_ends_at_one() -> None:
    curve = ordered_lorenz([1.0, 0.0, 3.0], [0.2, 0.1, 0.9], [1.0, 0.5, 2.0])
    assert curve.iloc[-1].tolist() == pytest.approx([1.0, 1.0])
    assert (np.diff(curve["exposure_share"]) > 0).all()


def test_lift_table_deciles() -> None:
    rng = np.random.default_rng(1)
    rate = rng.gamma(2.0, 0.05, 20_000)
    exposure = np.ones(20_000)
    counts = rng.poisson(rate).astype(float)
    table = lift_table(counts, rate, exposure)
    assert len(table) == 10
    assert table["exposure"].tolist() == pytest.approx([2000.0] * 10)
    assert table["observed"].sum() == pytest.approx(counts.sum())
    assert table["observed_rate_relative"].iloc[-1] > 2.0 * table["observed_rate_relative"].iloc[0]


def test_observed_over_expected_is_one_when_rates_are_right() -> None:
    table = observed_over_expected(["a", "a", "b"], [2.0, 2.0, 8.0], [1.0, 1.0, 4.0], [1.0, 1.0, 1.0])
    assert table["observed_over_expected"].tolist() == pytest.approx([1.0, 1.0])


def test_deviance_against_null() -> None:
    comparison = poisson_deviance_vs_null([0.0, 2.0], [0.0 + 1e-12, 2.0], [1.0, 1.0])
    assert comparison.deviance == pytest.approx(0.0, abs=1e-9)
    assert comparison.explained == pytest.approx(1.0)


def test_fairness_audit_by_group() -> None:
    table = fairness_audit(["f", "m", "m"], [100.0, 100.0, 200.0], [50.0, 50.0, 200.0], [1.0, 1.0, 1.0])
    assert table.loc["f", "loss_ratio"] == pytest.approx(0.5)
    assert table.loc["m", "premium_per_exposure"] == pytest.approx(150.0)
    assert protected_columns(pd.DataFrame(columns=["gender", "region", "Ethnic_Group"])) == ["gender", "Ethnic_Group"]


def test_validate_report_on_a_portfolio(plan: Plan) -> None:
    portfolio = synthetic_portfolio(5_000, plan, seed=8)
    rng = np.random.default_rng(9)
    counts = rng.poisson(0.3, len(portfolio)).astype(float)
    data = portfolio.assign(claim_count=counts, claim_amount=counts * 1000.0,
                            gender=rng.choice(["f", "m"], len(portfolio)))
    report = validate(data, plan)
    assert -1.0 < report.gini < 1.0
    assert set(report.fairness) == {"gender"}
    assert set(report.observed_over_expected) == set(plan.factor_names) | set(plan.behaviour_names)
    document = report.to_dict()
    assert len(document["lift"]) == 10
