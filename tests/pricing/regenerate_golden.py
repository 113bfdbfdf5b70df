"""Regenerate the pricing golden master: ``python -m tests.pricing.regenerate_golden``.

The frozen portfolio (portfolio.csv) and plan (plan.json) are created once and then kept;
only the expected premiums and breakdowns (premiums.csv) are rewritten. Run it only when a
change to the premiums is intended, and review the diff of premiums.csv.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pricing.breakdown import factor_names, price_with_breakdown
from pricing.plan import Plan, default_plan, load_plan
from pricing.synthetic import synthetic_portfolio

GOLDEN_DIR = Path(__file__).with_name("golden")
PORTFOLIO_PATH = GOLDEN_DIR / "portfolio.csv"
PLAN_PATH = GOLDEN_DIR / "plan.json"
PREMIUMS_PATH = GOLDEN_DIR / "premiums.csv"


def load_portfolio() -> pd.DataFrame:
    return pd.read_csv(PORTFOLIO_PATH, dtype={"policy_id": str})


def expected_columns(plan: Plan) -> list[str]:
    return ["policy_id", "premium_cents", "new_business_premium_cents", "base_cents",
            *[f"contribution_{name}_cents" for name in factor_names(plan)]]


def golden_premiums(portfolio: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    return price_with_breakdown(portfolio, plan)[expected_columns(plan)]


def main() -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    if not PLAN_PATH.exists():
        default_plan().save(PLAN_PATH)
    plan = load_plan(PLAN_PATH)
    if not PORTFOLIO_PATH.exists():
        synthetic_portfolio(1_000, plan, seed=20261201).to_csv(PORTFOLIO_PATH, index=False)
    golden_premiums(load_portfolio(), plan).to_csv(PREMIUMS_PATH, index=False)
    print(f"wrote {PREMIUMS_PATH}")


if __name__ == "__main__":
    main()
