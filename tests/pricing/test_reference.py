"""The vectorised engine agrees with the per-policy reference loop to the cent."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from pricing.breakdown import price_with_breakdown
from pricing.plan import Plan, plan_from_dict
from pricing.synthetic import synthetic_portfolio
from tests.pricing.reference import price_policy


def _compare(policies: pd.DataFrame, plan: Plan) -> None:
    explained = price_with_breakdown(policies, plan)
    rows = policies.astype(object).where(policies.notna(), None).to_dict("records")
    expected = pd.DataFrame([price_policy(row, plan) for row in rows])
    for column in expected.columns:
        actual = explained[column].to_numpy()
        differing = actual != expected[column].to_numpy()
        assert not differing.any(), f"{column}: {int(differing.sum())} differ, first row {int(np.flatnonzero(differing)[0])}"


def test_engine_matches_reference_on_a_portfolio(plan: Plan) -> None:
    _compare(synthetic_portfolio(5_000, plan, seed=77), plan)


@pytest.mark.parametrize("missing_rule", ["neutral", "best_bin"])
def test_engine_matches_reference_with_exposure_curve(plan: Plan, missing_rule: str) -> None:
    document = copy.deepcopy(plan.to_dict())
    document["usage"] = {"model": "exposure_curve", "km_per_year": [0, 4000, 12000, 30000],
                         "relativities": [0.55, 0.8, 1.0, 1.35]}
    document["missing_data"]["behaviour"] = missing_rule
    document["currency"]["rounding"] = "ROUND_HALF_EVEN"
    _compare(synthetic_portfolio(3_000, plan, seed=78), plan_from_dict(document))
