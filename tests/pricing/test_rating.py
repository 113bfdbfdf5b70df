"""Repricing: monotone in km, band and cap never exceeded, renewal rule, minimum premium."""

from __future__ import annotations

import copy
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.money import decimal_round
from pricing.plan import Plan, plan_from_dict
from pricing.rating import RatingInputError, billable_dist_km, reprice


def _one_policy(plan: Plan, **overrides: object) -> pd.DataFrame:
    row: dict[str, object] = {
        "policy_id": "P1", "period_days": 30, "dist_km": 1000.0, "scored_dist_km": 900.0,
        "experience_dist_km": 5000.0, "vehicle_group": "B", "region": "suburban", "age_band": "35-54",
    }
    for table in plan.behaviour:
        row[table.numerator] = 0.0
    row.update(overrides)
    return pd.DataFrame([row])


def test_hand_computed_premium(plan: Plan) -> None:
    policy = _one_policy(plan, vehicle_group="C", region="urban", harsh_brake_count=27.0)
    priced = reprice(policy, plan).iloc[0]
    period_years = 30 / 365
    base = 360.0 * period_years
    usage = 1.0 + 0.035 * 1000.0 / base
    z = 5000.0 / 6000.0
    # 27 brakes in 900 km = 3 per 100 km -> bin [2, 4): 1.15; zero counts and shares sit in
    # the first bins: acceleration 0.95, cornering 0.97, motorway 1.0, night 0.95,
    # phone 0.95, speeding 0.93, urban 0.95.
    behaviour = 1.15 * 0.95 * 0.97 * 1.0 * 0.95 * 0.95 * 0.93 * 0.95
    expected = base * 1.12 * 1.18 * usage * behaviour**z
    assert priced["harsh_braking_value"] == pytest.approx(3.0)
    assert priced["credibility_z"] == pytest.approx(z)
    assert Decimal(int(priced["premium_cents"])) / 100 == decimal_round(expected)


def test_pay_per_km_premium_monotone_in_km(plan: Plan) -> None:
    # Same driving behaviour (the scored trips), more or fewer km in the period.
    km = np.linspace(900.0, 20_000.0, 383)
    policies = pd.concat([_one_policy(plan, policy_id=f"P{i}", dist_km=k) for i, k in enumerate(km)], ignore_index=True)
    premium = reprice(policies, plan)["premium_cents"].to_numpy()
    assert (np.diff(premium) >= 0).all()
    # The daily cap (400 km x 30 days) stops the per-km charge.
    capped = km >= 12_000.0
    assert len(set(premium[capped])) == 1
    assert premium[-1] > premium[0]


def test_exposure_curve_premium_monotone_in_km(plan: Plan) -> None:
    document = copy.deepcopy(plan.to_dict())
    document["usage"] = {"model": "exposure_curve", "km_per_year": [0, 5000, 15000, 40000],
                         "relativities": [0.5, 0.8, 1.0, 1.5]}
    curve_plan = plan_from_dict(document)
    km = np.linspace(0.0, 6000.0, 121)
    policies = pd.concat([_one_policy(plan, policy_id=f"P{i}", dist_km=k) for i, k in enumerate(km)], ignore_index=True)
    priced = reprice(policies, curve_plan)
    assert (np.diff(priced["premium_cents"].to_numpy()) >= 0).all()
    assert priced["usage_factor"].iloc[0] == pytest.approx(0.5)
    assert priced["usage_factor"].iloc[-1] == pytest.approx(1.5)  # 6000 km a month is 73,000 a year


def test_daily_cap_from_daily_km() -> None:
    daily = pd.DataFrame({"policy_id": ["a", "a", "b"], "dist_km": [500.0, 100.0, 50.0]})
    billable = billable_dist_km(daily, 400.0)
    assert billable.to_dict() == {"a": 500.0, "b": 50.0}


def test_missing_data_is_neutral_and_never_worse_than_best_bin(plan: Plan) -> None:
    policy = _one_policy(plan, scored_dist_km=np.nan, harsh_brake_count=np.nan)
    priced = reprice(policy, plan).iloc[0]
    assert priced["telematics_factor"] == 1.0
    best = plan_from_dict({**plan.to_dict(), "missing_data": {"behaviour": "best_bin", "min_scored_dist_km": 20.0}})
    best_priced = reprice(policy, best).iloc[0]
    assert best_priced["premium_cents"] <= priced["premium_cents"]


def test_short_history_earns_a_small_share_of_the_discount(plan: Plan) -> None:
    short = reprice(_one_policy(plan, experience_dist_km=50.0), plan).iloc[0]
    long = reprice(_one_policy(plan, experience_dist_km=20_000.0), plan).iloc[0]
    assert short["credibility_z"] < 0.05 < 0.95 < long["credibility_z"]
    indicated = 0.95 * 0.92 * 0.97 * 1.0 * 0.95 * 0.95 * 0.93 * 0.95  # the best bin of each
    assert short["telematics_factor"] == pytest.approx(indicated ** (50 / 1050))
    assert short["telematics_factor"] > 0.98
    assert long["telematics_factor_raw"] == pytest.approx(indicated ** (20_000 / 21_000))
    assert long["telematics_factor"] == 0.7  # the band's floor


def test_unknown_level_is_named(plan: Plan) -> None:
    with pytest.raises(RatingInputError, match=r"^region: level\(s\) \['mars'\]"):
        reprice(_one_policy(plan, region="mars"), plan)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dist_km": -1.0}, "^dist_km: "),
        ({"period_days": 0}, "^period_days: "),
        ({"period_days": 30.5}, "^period_days: must be a whole number"),
        ({"harsh_brake_count": np.inf}, "^harsh_brake_count: "),
        ({"previous_premium_cents": 1000.0}, "^previous_usage_exposure_years: required"),
    ],
)
def test_bad_inputs_are_named(plan: Plan, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(RatingInputError, match=message):
        reprice(_one_policy(plan, **overrides), plan)


def test_missing_column_is_named(plan: Plan) -> None:
    with pytest.raises(RatingInputError, match=r"^speeding_dist_km: required column is missing"):
        reprice(_one_policy(plan).drop(columns="speeding_dist_km"), plan)


POLICY = st.fixed_dictionaries({
    "dist_km": st.floats(0.0, 30_000.0),
    "scored_share": st.floats(0.0, 1.0),
    "experience_dist_km": st.floats(0.0, 100_000.0),
    "brakes_per_100km": st.floats(0.0, 30.0),
    "speeding_share": st.floats(0.0, 1.0),
    "phone_min_per_100km": st.floats(0.0, 50.0),
    "period_days": st.integers(1, 366),
    "previous_premium_cents": st.one_of(st.none(), st.integers(1, 500_000)),
    "previous_usage_exposure_years": st.floats(0.001, 5.0),
    "vehicle_group": st.sampled_from(["A", "B", "C", "D", "E"]),
    "age_band": st.sampled_from(["18-24", "25-34", "35-54", "55-69", "70+"]),
})


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(POLICY, min_size=1, max_size=40), band=st.tuples(st.floats(0.3, 1.0), st.floats(1.0, 3.0)),
       cap=st.floats(0.0, 0.5))
def test_band_cap_renewal_and_minimum_never_violated(plan: Plan, rows: list[dict[str, float]],
                                                     band: tuple[float, float], cap: float) -> None:
    varied = plan.new_version(description="property test", max_increase_per_period=cap)
    document = varied.to_dict()
    document["telematics_band"] = {"min": band[0], "max": band[1]}
    varied = plan_from_dict(document)
    frame = pd.DataFrame([
        {
            "policy_id": f"P{i}", "period_days": r["period_days"], "dist_km": r["dist_km"],
            "scored_dist_km": r["dist_km"] * r["scored_share"], "experience_dist_km": r["experience_dist_km"],
            "vehicle_group": r["vehicle_group"], "region": "urban", "age_band": r["age_band"],
            "harsh_brake_count": r["brakes_per_100km"] * r["dist_km"] * r["scored_share"] / 100,
            "harsh_accel_count": 0.0, "harsh_corner_count": 0.0, "night_dist_km": 0.0,
            "speeding_dist_km": r["speeding_share"] * r["dist_km"] * r["scored_share"],
            "phone_handling_min": r["phone_min_per_100km"] * r["dist_km"] * r["scored_share"] / 100,
            "urban_dist_km": 0.0, "motorway_dist_km": 0.0,
            "previous_premium_cents": np.nan if r["previous_premium_cents"] is None else float(r["previous_premium_cents"]),
            "previous_usage_exposure_years": np.nan if r["previous_premium_cents"] is None else r["previous_usage_exposure_years"],
        }
        for i, r in enumerate(rows)
    ])
    priced = reprice(frame, varied)
    telematics = priced["telematics_factor"].to_numpy()
    assert ((telematics >= band[0] - 1e-12) & (telematics <= band[1] + 1e-12)).all()
    premium = priced["premium_cents"].to_numpy()
    new_business = priced["new_business_premium_cents"].to_numpy()
    assert (premium <= new_business).all()  # renewal never dearer than new business
    minimum = [decimal_round(float(varied.minimum_premium_per_year) * d / 365) * 100 for d in frame["period_days"]]
    assert (premium >= np.asarray(minimum, dtype=float)).all()
    renewing = frame["previous_premium_cents"].notna().to_numpy()
    previous_rate = frame["previous_premium_cents"].to_numpy() / frame["previous_usage_exposure_years"].to_numpy()
    bound = previous_rate * (1 + cap) * priced["usage_exposure_years"].to_numpy()
    allowed = np.maximum(np.ceil(bound * (1 + 1e-12)), np.asarray(minimum, dtype=float))
    assert (premium[renewing] <= allowed[renewing]).all()


def test_any_index_and_duplicate_ids_are_handled(plan: Plan, portfolio: pd.DataFrame) -> None:
    shuffled = portfolio.iloc[::-1].set_axis([7] * len(portfolio))
    priced = reprice(shuffled, plan)
    assert (priced["policy_id"].to_numpy() == shuffled["policy_id"].to_numpy()).all()
    with pytest.raises(RatingInputError, match=r"^policy_id: must be unique"):
        reprice(pd.concat([portfolio.iloc[:2], portfolio.iloc[:1]]), plan)


@pytest.mark.parametrize("as_object", [False, True])
def test_duplicate_ids_are_found_whether_or_not_the_ids_are_sorted(plan: Plan, portfolio: pd.DataFrame,
                                                                   as_object: bool) -> None:
    ids = pd.Series([f"P{i:05d}" for i in range(len(portfolio))], index=portfolio.index)
    sorted_ids = portfolio.assign(policy_id=ids.astype(object) if as_object else ids)
    assert len(reprice(sorted_ids, plan)) == len(portfolio)
    for frame in (sorted_ids, sorted_ids.iloc[::-1]):
        repeated = frame.assign(policy_id=frame["policy_id"].where(frame["policy_id"] != "P00007", "P00006"))
        with pytest.raises(RatingInputError, match=r"^policy_id: must be unique.*first policy_id='P00006'"):
            reprice(repeated, plan)


def test_ids_that_do_not_compare_are_still_checked(plan: Plan, portfolio: pd.DataFrame) -> None:
    some = portfolio.iloc[:4]
    mixed = some.assign(policy_id=pd.Series(["P1", 2, 3.5, "P4"], index=some.index, dtype=object))
    assert len(reprice(mixed, plan)) == 4
    with pytest.raises(RatingInputError, match=r"^policy_id: must be unique"):
        reprice(some.assign(policy_id=pd.Series([1, "P1", None, None], index=some.index, dtype=object)), plan)
    with pytest.raises(RatingInputError, match=r"^policy_id: must be unique"):
        reprice(some.assign(policy_id=[1.0, 2.0, np.nan, np.nan]), plan)
