"""Shared fixtures of the pricing suite."""

from __future__ import annotations

import pandas as pd
import pytest

from pricing.plan import Plan, default_plan
from pricing.synthetic import synthetic_portfolio


@pytest.fixture(scope="session")
def plan() -> Plan:
    return default_plan()


@pytest.fixture(scope="session")
def portfolio(plan: Plan) -> pd.DataFrame:
    return synthetic_portfolio(2_000, plan, seed=20261123)
