"""Pricing benchmark: repricing with breakdowns, vs a per-policy loop, and calibration overhead.

    python bench/pricing.py [--quick]

The last line of output is a JSON object with ``reprice_policies_per_s`` (full money
breakdowns included), ``ratio_vs_loop`` (against the per-policy reference loop of
tests/pricing/reference.py, run in the same process) and ``calibration_overhead``
(``calibrate`` end to end, standard errors and rebalancing included, over bare glum fits of
the same models, Poisson frequency plus Gamma severity, on the same design matrix).
``--quick`` uses 200,000 policies and 300,000 calibration rows instead of 1,000,000.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# This script is itself named pricing.py: drop its directory from the import path so that
# "import pricing" finds the package at the repository root, not this file.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
# glum's matrix library runs OpenMP threads; on a small shared machine oversubscribed
# threads make timings swing several-fold between runs. One thread (unless the caller sets
# OMP_NUM_THREADS) keeps both sides of each ratio comparable. Set before numpy loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from glum import GeneralizedLinearRegressor  # noqa: E402

from pricing.breakdown import price_with_breakdown  # noqa: E402
from pricing.glm import calibrate, calibration_data  # noqa: E402
from pricing.plan import Plan, default_plan  # noqa: E402
from pricing.rating import reprice  # noqa: E402
from pricing.synthetic import synthetic_portfolio  # noqa: E402
from tests.pricing.reference import price_policy  # noqa: E402


def best_time(function: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def claims_portfolio(n_rows: int, plan: Plan, seed: int) -> pd.DataFrame:
    """Policy periods with claims drawn from the plan's own relativities."""
    portfolio = synthetic_portfolio(n_rows, plan, seed=seed)
    priced = reprice(portfolio.drop(columns=["previous_premium_cents", "previous_usage_exposure_years"]), plan)
    indicated = np.ones(n_rows)
    for table in plan.behaviour:
        indicated *= priced[f"{table.name}_relativity"].to_numpy()
    rng = np.random.default_rng(seed + 1)
    counts = rng.poisson(0.9 * priced["usage_exposure_years"].to_numpy() * priced["a_priori_factor"].to_numpy() * indicated)
    amounts = np.zeros(n_rows)
    has_claims = counts > 0
    amounts[has_claims] = rng.gamma(2.0 * counts[has_claims], 400.0)
    return portfolio.assign(claim_count=counts.astype(np.float64), claim_amount=amounts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 60 s")
    args = parser.parse_args(argv)
    n_policies = 200_000 if args.quick else 1_000_000
    n_loop = 5_000 if args.quick else 20_000
    n_calibration = 300_000 if args.quick else 1_000_000
    repeats = 3
    plan = default_plan()

    portfolio = synthetic_portfolio(n_policies, plan, seed=1)
    price_with_breakdown(portfolio.iloc[:10_000], plan)
    vector_s = best_time(lambda: price_with_breakdown(portfolio, plan), repeats)
    per_s = n_policies / vector_s
    print(f"reprice with breakdowns: {n_policies:,} policies in {vector_s:.3f} s = {per_s:,.0f} policies/s")

    sample = portfolio.iloc[:n_loop]
    looped: list[dict[str, Any]] = []

    def loop() -> None:
        # The loop reads the same DataFrame, one policy (a dict of its columns) at a time.
        rows = sample.astype(object).where(sample.notna(), None).to_dict("records")
        looped[:] = [price_policy(row, plan) for row in rows]

    loop_s = best_time(loop, repeats)
    loop_per_s = n_loop / loop_s
    vector_sample = price_with_breakdown(sample, plan)["premium_cents"].to_numpy()
    agree = bool((vector_sample == np.asarray([result["premium_cents"] for result in looped])).all())
    print(f"per-policy loop: {n_loop:,} policies in {loop_s:.3f} s = {loop_per_s:,.0f} policies/s (agrees: {agree})")

    data = claims_portfolio(n_calibration, plan, seed=2)
    design = calibration_data(data, plan)
    has_claims = design.claim_count > 0
    log_exposure = np.log(design.usage_exposure_years)

    def bare_poisson() -> None:
        GeneralizedLinearRegressor(family="poisson", alpha=0.0, drop_first=True).fit(
            design.X, design.claim_count, offset=log_exposure)

    def bare_gamma() -> None:
        GeneralizedLinearRegressor(family="gamma", alpha=0.0, drop_first=True).fit(
            design.X[has_claims], design.claim_amount[has_claims] / design.claim_count[has_claims],
            sample_weight=design.claim_count[has_claims])

    bare_poisson()
    bare_gamma()
    # Interleaved repeats, best of each, so that a burst of load on the shared cores
    # does not favour one side.
    poisson_s = gamma_s = ours_s = float("inf")
    for _ in range(repeats):
        poisson_s = min(poisson_s, best_time(bare_poisson, 1))
        gamma_s = min(gamma_s, best_time(bare_gamma, 1))
        ours_s = min(ours_s, best_time(lambda: calibrate(data, plan), 1))
    bare_s = poisson_s + gamma_s
    print(f"calibration on {n_calibration:,} rows: ours {ours_s:.3f} s; bare glum Poisson {poisson_s:.3f} s "
          f"+ Gamma on {int(has_claims.sum()):,} claim rows {gamma_s:.3f} s")
    result = {
        "reprice_policies_per_s": round(per_s),
        "ratio_vs_loop": round(per_s / loop_per_s, 1),
        "calibration_overhead": round(ours_s / bare_s, 2),
        "calibration_vs_bare_poisson": round(ours_s / poisson_s, 2),
        "n_policies": n_policies,
        "n_calibration_rows": n_calibration,
        "loop_agrees": agree,
        "quick": args.quick,
        "omp_num_threads": os.environ["OMP_NUM_THREADS"],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
