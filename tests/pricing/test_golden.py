"""Golden master: a frozen portfolio's premiums and breakdowns under a frozen plan.

The expected file changes only through ``python -m tests.pricing.regenerate_golden``.
"""

from __future__ import annotations

import pandas as pd

from pricing.plan import load_plan
from tests.pricing.regenerate_golden import (
    PLAN_PATH,
    PREMIUMS_PATH,
    golden_premiums,
    load_portfolio,
)


def test_premiums_match_the_golden_master() -> None:
    plan = load_plan(PLAN_PATH)
    expected = pd.read_csv(PREMIUMS_PATH, dtype={"policy_id": str})
    actual = golden_premiums(load_portfolio(), plan)
    assert list(actual.columns) == list(expected.columns)
    differing = actual["premium_cents"].to_numpy() != expected["premium_cents"].to_numpy()
    assert not differing.any(), (
        f"{int(differing.sum())} premiums changed, first {actual.loc[differing, 'policy_id'].iloc[0]}; "
        "if intended, run python -m tests.pricing.regenerate_golden and review the diff"
    )
    pd.testing.assert_frame_equal(actual.reset_index(drop=True), expected, check_dtype=False)
