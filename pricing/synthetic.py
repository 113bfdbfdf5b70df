"""Synthetic rating inputs (policy periods, no claims) for demos, benchmarks and tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pricing.plan import Plan


def synthetic_portfolio(n_policies: int, plan: Plan, *, seed: int, renewal_share: float = 0.7,
                        period_days: int = 30) -> pd.DataFrame:
    """One monthly period per policy with plausible km, behaviour counts and history.

    Every a priori level of the plan appears; behaviour numerators are drawn around the
    middle of each table; some policies have no scored km (missing telematics data).
    """
    if n_policies < 1:
        raise ValueError(f"n_policies: must be positive, got {n_policies}")
    if not 0.0 <= renewal_share <= 1.0:
        raise ValueError(f"renewal_share: must be in [0, 1], got {renewal_share}")
    rng = np.random.default_rng(seed)
    frame: dict[str, object] = {"policy_id": np.char.add("P", np.arange(n_policies).astype(str)).astype(object)}
    frame["period_days"] = np.full(n_policies, period_days, dtype=np.int64)
    for table in plan.a_priori:
        levels = np.asarray([level for level, _ in table.relativities], dtype=object)
        frame[table.name] = pd.Categorical(levels[rng.integers(0, len(levels), n_policies)], categories=levels)
    dist_km = rng.gamma(2.0, 500.0, n_policies) * period_days / 30.0
    dist_km[rng.random(n_policies) < 0.02] = 0.0
    frame["dist_km"] = dist_km
    scored = dist_km * rng.uniform(0.6, 1.0, n_policies)
    scored[rng.random(n_policies) < 0.03] = np.nan
    frame["scored_dist_km"] = scored
    frame["experience_dist_km"] = np.nan_to_num(scored) + rng.gamma(1.0, 3000.0, n_policies)
    for behaviour in plan.behaviour:
        middle = behaviour.edges[len(behaviour.edges) // 2]
        level = rng.gamma(2.0, middle / 2.0, n_policies)
        if behaviour.unit == "share_of_km":
            numerator = np.minimum(level, 1.0) * np.nan_to_num(scored)
        else:
            numerator = rng.poisson(level * np.nan_to_num(scored) / 100.0).astype(np.float64)
        frame[behaviour.numerator] = np.where(np.isnan(scored), np.nan, numerator)
    renewing = rng.random(n_policies) < renewal_share
    usage_years = period_days / 365.0 * rng.uniform(1.2, 3.0, n_policies)
    frame["previous_premium_cents"] = np.where(renewing, np.round(rng.uniform(2000, 12000, n_policies)), np.nan)
    frame["previous_usage_exposure_years"] = np.where(renewing, usage_years, np.nan)
    return pd.DataFrame(frame)
