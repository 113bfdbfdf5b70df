"""A slow, obviously correct per-policy pricing loop: the oracle for the vectorised engine.

Plain Python floats, ``bisect`` and ``math``, ``Decimal`` for the rounding, one policy
(a dict of its input columns) at a time. The benchmark times it as the straightforward
alternative.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_right
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

from pricing.breakdown import factor_names
from pricing.plan import PayPerKm, Plan

DAYS_PER_YEAR = 365.0
_MODES = {"ROUND_HALF_UP": ROUND_HALF_UP, "ROUND_HALF_EVEN": ROUND_HALF_EVEN}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _round(amount: float, plan: Plan) -> int:
    quantum = Decimal(1).scaleb(-plan.currency.minor_units)
    rounded = Decimal(amount).quantize(quantum, rounding=_MODES[plan.currency.rounding])
    return int(rounded.scaleb(plan.currency.minor_units))


def _interpolate(x: float, knots: tuple[float, ...], values: tuple[float, ...]) -> float:
    if x <= knots[0]:
        return values[0]
    if x >= knots[-1]:
        return values[-1]
    i = bisect_right(knots, x) - 1
    share = (x - knots[i]) / (knots[i + 1] - knots[i])
    return values[i] + share * (values[i + 1] - values[i])


def price_policy(policy: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Premium, new-business premium, base and every breakdown line of one policy, in cents."""
    period_years = policy["period_days"] / DAYS_PER_YEAR
    base = float(plan.base_rate_per_year) * period_years
    factors: dict[str, float] = {}
    for table in plan.a_priori:
        factors[table.name] = table.as_dict()[str(policy[table.name])]
    if isinstance(plan.usage, PayPerKm):
        billable = policy.get("billable_dist_km")
        if _missing(billable):
            billable = min(policy["dist_km"], plan.usage.daily_cap_km * policy["period_days"])
        factors["usage"] = 1.0 + float(plan.usage.per_km_rate) * billable / base
    else:
        km_per_year = policy["dist_km"] * (DAYS_PER_YEAR / policy["period_days"])
        factors["usage"] = _interpolate(km_per_year, plan.usage.km_per_year, plan.usage.relativities)
    usage_exposure_years = period_years * factors["usage"]

    scored = policy["scored_dist_km"]
    has_data = not _missing(scored) and scored >= max(plan.missing_data.min_scored_dist_km, 2.2250738585072014e-308)
    experience = policy.get("experience_dist_km", scored)
    experience = 0.0 if _missing(experience) else experience
    z = experience / (experience + plan.credibility.k_km)
    log_telematics = 0.0
    for table in plan.behaviour:
        numerator = policy[table.numerator]
        if has_data and not _missing(numerator):
            value = numerator / scored * (1.0 if table.unit == "share_of_km" else 100.0)
            if table.unit == "share_of_km":
                value = min(value, 1.0)
            relativity = table.relativities[bisect_right(table.edges, value)]
        else:
            relativity = 1.0 if plan.missing_data.behaviour == "neutral" else min(table.relativities)
        log_factor = z * math.log(relativity)
        log_telematics += log_factor
        factors[table.name] = math.exp(log_factor)
    telematics_raw = math.exp(log_telematics)
    telematics = min(max(telematics_raw, plan.telematics_band.minimum), plan.telematics_band.maximum)
    factors["telematics_band"] = telematics / telematics_raw

    a_priori = 1.0
    for table in plan.a_priori:
        a_priori *= factors[table.name]
    new_business = base * a_priori * factors["usage"] * telematics
    capped = new_business
    previous = policy.get("previous_premium_cents")
    if not _missing(previous):
        scale = 10**plan.currency.minor_units
        previous_rate = previous / scale / policy["previous_usage_exposure_years"]
        bound = previous_rate * (1.0 + plan.max_increase_per_period) * usage_exposure_years
        capped = min(new_business, bound)
    minimum = float(plan.minimum_premium_per_year) * period_years
    final = max(capped, minimum)
    factors["increase_cap"] = capped / new_business
    factors["minimum_premium"] = final / capped

    premium_cents = _round(final, plan)
    base_cents = _round(base, plan)
    names = factor_names(plan)
    if premium_cents == base_cents:
        log_mean = float(premium_cents)
    else:
        log_mean = (premium_cents - base_cents) / (math.log(premium_cents) - math.log(base_cents))
    shares = [log_mean * math.log(factors[name]) for name in names]
    residual = (premium_cents - base_cents) - sum(shares)
    total_size = sum(abs(share) for share in shares)
    if total_size > 0:
        shares = [share + residual / total_size * abs(share) for share in shares]
    floors = [math.floor(share) for share in shares]
    left_over = (premium_cents - base_cents) - sum(floors)
    # Remainders compared to within 2**shift units in their last place, then by line order.
    shift = max(1, (len(names) - 1).bit_length())

    def coarse_remainder(j: int) -> int:
        bits = struct.unpack("<Q", struct.pack("<d", shares[j] - floors[j]))[0]
        return bits >> shift

    by_remainder = sorted(range(len(names)), key=lambda j: (-coarse_remainder(j), j))
    for j in by_remainder[:left_over]:
        floors[j] += 1
    return {
        "premium_cents": premium_cents,
        "new_business_premium_cents": _round(max(new_business, minimum), plan),
        "base_cents": base_cents,
        **{f"contribution_{name}_cents": floors[j] for j, name in enumerate(names)},
    }
