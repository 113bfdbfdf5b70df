"""Vectorised repricing of many policy periods at once under one rating plan.

premium = base rate x period x a priori relativities x usage factor x telematics factor,
where the telematics factor is the product of each behaviour's relativity raised to the
policy's credibility weight Z (credibility on the log scale, so that each behaviour keeps
its own multiplicative share), bounded by the plan's band. A renewing policy's premium per
unit of usage rises by at most the plan's per-period cap, and never exceeds what a new
policyholder with the same risk pays (the UK renewal pricing rule): decreases pass through
at once. The minimum premium applies to everyone. Amounts are rounded once, to integer
minor units that agree exactly with Decimal rounding of the unrounded amount.

Input: one row per policy period. Required columns: ``policy_id``, ``period_days`` (days
in the period), ``dist_km`` (km driven by the insured driver in the period),
``scored_dist_km`` (km of trips with enough data to score; NaN if none), every a priori
factor of the plan and every behaviour numerator. Optional: ``experience_dist_km``
(cumulative scored km behind the credibility weight; defaults to ``scored_dist_km``),
``billable_dist_km`` (km after the daily cap, from ``billable_dist_km()``; defaults to
``min(dist_km, cap x period_days)``), ``previous_premium_cents`` and
``previous_usage_exposure_years`` (NaN for new business). Passenger, transit, "not me" and
insufficient-data trips must already be excluded from every km and count column.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pricing.money import to_minor_units
from pricing.plan import BehaviourTable, PayPerKm, Plan

DAYS_PER_YEAR = 365.0
_MAX_PERIOD_DAYS = 366
_BLOCK_ROWS = 8192
FloatArray = npt.NDArray[np.float64]


class RatingInputError(ValueError):
    """A rating input column is missing or holds an invalid value; the message names it."""


@dataclass(frozen=True)
class RatingInputs:
    """Validated float64 arrays read once from the input frame."""

    policy_id: pd.Series
    period_days: FloatArray
    dist_km: FloatArray
    scored_dist_km: FloatArray
    experience_dist_km: FloatArray
    billable_dist_km: FloatArray | None
    previous_premium_cents: FloatArray
    previous_usage_exposure_years: FloatArray
    a_priori_relativity: dict[str, FloatArray]
    numerators: dict[str, FloatArray]

    def __len__(self) -> int:
        return int(self.period_days.shape[0])

    def rows(self, rows: slice) -> RatingInputs:
        """The inputs of a block of consecutive rows (views, no copies)."""
        return RatingInputs(
            policy_id=self.policy_id.iloc[rows],
            period_days=self.period_days[rows],
            dist_km=self.dist_km[rows],
            scored_dist_km=self.scored_dist_km[rows],
            experience_dist_km=self.experience_dist_km[rows],
            billable_dist_km=None if self.billable_dist_km is None else self.billable_dist_km[rows],
            previous_premium_cents=self.previous_premium_cents[rows],
            previous_usage_exposure_years=self.previous_usage_exposure_years[rows],
            a_priori_relativity={name: column[rows] for name, column in self.a_priori_relativity.items()},
            numerators={name: column[rows] for name, column in self.numerators.items()},
        )


def _first_bad(policy_id: pd.Series, bad: npt.NDArray[np.bool_]) -> str:
    index = int(np.flatnonzero(bad)[0])
    return f"{int(bad.sum())} row(s), first policy_id={policy_id.iloc[index]!r}"


def _float_column(frame: pd.DataFrame, column: str, policy_id: pd.Series, *,
                  allow_nan: bool, minimum: float = 0.0) -> FloatArray:
    if column not in frame.columns:
        raise RatingInputError(f"{column}: required column is missing")
    try:
        values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as error:
        raise RatingInputError(f"{column}: must be numeric ({error})") from error
    nan = np.isnan(values)
    if not allow_nan and nan.any():
        raise RatingInputError(f"{column}: missing values in {_first_bad(policy_id, nan)}")
    bad = ~nan & (~np.isfinite(values) | (values < minimum))
    if bad.any():
        raise RatingInputError(f"{column}: values must be finite and >= {minimum:g}; {_first_bad(policy_id, bad)}")
    return values


def _relativity_column(frame: pd.DataFrame, name: str, levels: dict[str, float],
                       policy_id: pd.Series) -> FloatArray:
    if name not in frame.columns:
        raise RatingInputError(f"{name}: required a priori factor column is missing")
    column = frame[name]
    categories = pd.Index(list(levels))
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Map the column's own categories once, then its codes (-1 stays -1 for NaN).
        category_codes = np.append(categories.get_indexer(column.cat.categories.astype("string")), -1)
        codes = category_codes[column.cat.codes.to_numpy()]
    else:
        codes = categories.get_indexer(pd.Index(column.astype("string")))
    unknown = codes < 0
    if unknown.any():
        seen = column[unknown].astype("string").fillna("<missing>").unique().tolist()
        raise RatingInputError(
            f"{name}: level(s) {sorted(seen)[:5]} not in the plan's table {list(levels)}; "
            f"{_first_bad(policy_id, unknown)}"
        )
    return np.asarray(list(levels.values()), dtype=np.float64)[codes]


def _strictly_increasing(ids: pd.Series) -> bool:
    """Whether the ids are in strictly increasing order, as the store returns them: then
    they are unique, proved by one pass of comparisons instead of hashing every id."""
    if len(ids) < 2:
        return True
    array = ids.array
    try:
        if hasattr(array, "__arrow_array__"):
            arrow = pa.array(array)
            return pc.all(pc.less(arrow[:-1], arrow[1:]), skip_nulls=False).as_py() is True
        values = ids.to_numpy()
        return bool((values[:-1] < values[1:]).all())
    except (TypeError, pa.ArrowException):
        return False  # ids that do not compare (mixed types, missing values)


def read_inputs(policies: pd.DataFrame, plan: Plan) -> RatingInputs:
    """Validate the input frame against the plan and extract its arrays."""
    if "policy_id" not in policies.columns:
        raise RatingInputError("policy_id: required column is missing")
    policy_id = policies["policy_id"]
    if not (_strictly_increasing(policy_id) or policy_id.is_unique):
        duplicated = policy_id.duplicated().to_numpy()
        raise RatingInputError(f"policy_id: must be unique within one repricing; duplicates in {_first_bad(policy_id, duplicated)}")
    period_days = _float_column(policies, "period_days", policy_id, allow_nan=False, minimum=1.0)
    bad_days = (period_days != np.floor(period_days)) | (period_days > _MAX_PERIOD_DAYS)
    if bad_days.any():
        raise RatingInputError(f"period_days: must be a whole number of days in 1..{_MAX_PERIOD_DAYS}; {_first_bad(policy_id, bad_days)}")
    dist_km = _float_column(policies, "dist_km", policy_id, allow_nan=False)
    scored = _float_column(policies, "scored_dist_km", policy_id, allow_nan=True)
    if "experience_dist_km" in policies.columns:
        experience = _float_column(policies, "experience_dist_km", policy_id, allow_nan=True)
    else:
        experience = scored
    billable = None
    if "billable_dist_km" in policies.columns:
        billable = _float_column(policies, "billable_dist_km", policy_id, allow_nan=False)
        over = billable > dist_km * (1.0 + 1e-12)
        if over.any():
            raise RatingInputError(f"billable_dist_km: must not exceed dist_km; {_first_bad(policy_id, over)}")
    nan = np.full(len(policy_id), np.nan)
    previous_cents = nan
    previous_usage = nan
    if "previous_premium_cents" in policies.columns:
        previous_cents = _float_column(policies, "previous_premium_cents", policy_id, allow_nan=True, minimum=1.0)
        if "previous_usage_exposure_years" not in policies.columns:
            raise RatingInputError("previous_usage_exposure_years: required with previous_premium_cents")
        previous_usage = _float_column(policies, "previous_usage_exposure_years", policy_id, allow_nan=True)
        unpaired = np.isnan(previous_cents) != np.isnan(previous_usage)
        unpaired |= ~np.isnan(previous_usage) & (previous_usage <= 0.0)
        if unpaired.any():
            raise RatingInputError(
                "previous_usage_exposure_years: must be positive exactly where previous_premium_cents is given; "
                + _first_bad(policy_id, unpaired)
            )
    relativities = {
        table.name: _relativity_column(policies, table.name, table.as_dict(), policy_id) for table in plan.a_priori
    }
    numerators = {
        b.name: _float_column(policies, b.numerator, policy_id, allow_nan=True) for b in plan.behaviour
    }
    return RatingInputs(
        policy_id=policy_id,
        period_days=period_days,
        dist_km=dist_km,
        scored_dist_km=scored,
        experience_dist_km=experience,
        billable_dist_km=billable,
        previous_premium_cents=previous_cents,
        previous_usage_exposure_years=previous_usage,
        a_priori_relativity=relativities,
        numerators=numerators,
    )


def _unit_scale(table: BehaviourTable) -> float:
    return 1.0 if table.unit == "share_of_km" else 100.0


def behaviour_values(inputs: RatingInputs, plan: Plan) -> dict[str, FloatArray]:
    """Each behaviour's value (rate per 100 km or share of km); NaN where data is missing."""
    scored = inputs.scored_dist_km
    has_data = scored >= max(plan.missing_data.min_scored_dist_km, np.finfo(np.float64).tiny)
    safe_km = np.where(has_data, scored, 1.0)
    values = {}
    for table in plan.behaviour:
        value = inputs.numerators[table.name] / safe_km * _unit_scale(table)
        if table.unit == "share_of_km":
            value = np.minimum(value, 1.0)
        values[table.name] = np.where(has_data, value, np.nan)
    return values


def usage_factor(inputs: RatingInputs, plan: Plan, base_amount: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(usage factor, billable km) under the plan's usage model."""
    usage = plan.usage
    if isinstance(usage, PayPerKm):
        if inputs.billable_dist_km is not None:
            billable = inputs.billable_dist_km
        else:
            billable = np.minimum(inputs.dist_km, usage.daily_cap_km * inputs.period_days)
        return 1.0 + float(usage.per_km_rate) * billable / base_amount, billable
    km_per_year = inputs.dist_km * (DAYS_PER_YEAR / inputs.period_days)
    factor = np.interp(km_per_year, usage.km_per_year, usage.relativities)
    return factor, inputs.dist_km


def _bins_or_missing(values: FloatArray, edges: tuple[float, ...]) -> npt.NDArray[np.unsignedinteger]:
    """``bin_index`` of each value, NaN in an extra slot after the last bin, in the smallest
    unsigned type (a byte for any real table), which halves the cost of the comparisons."""
    missing_slot = len(edges) + 1
    bins = np.isnan(values).astype(np.min_scalar_type(missing_slot))
    bins *= missing_slot
    for edge in edges:
        bins += values >= edge
    return bins


def _log_telematics(inputs: RatingInputs, plan: Plan, values: dict[str, FloatArray], credibility_z: FloatArray,
                    columns: dict[str, npt.NDArray[np.generic]] | None) -> FloatArray:
    """Sum over behaviours of Z x log(relativity); fills per-behaviour columns if given."""
    log_telematics = np.zeros(len(inputs))
    for table in plan.behaviour:
        value = values[table.name]
        # One lookup table per behaviour, its last slot the missing-data relativity, so that
        # each policy costs a table lookup rather than a where and a logarithm.
        fallback = 1.0 if plan.missing_data.behaviour == "neutral" else min(table.relativities)
        relativities = np.asarray([*table.relativities, fallback])
        bins = _bins_or_missing(value, table.edges)
        log_factor = np.log(relativities).take(bins)
        log_factor *= credibility_z
        log_telematics += log_factor
        if columns is not None:
            columns[f"{table.name}_value"] = value
            columns[f"{table.name}_relativity"] = relativities.take(bins)
            columns[f"{table.name}_factor"] = np.exp(log_factor)
    return log_telematics


def _credibility_z(inputs: RatingInputs, plan: Plan) -> FloatArray:
    experience = np.nan_to_num(inputs.experience_dist_km, nan=0.0)
    return experience / (experience + plan.credibility.k_km)


def new_business_amounts(inputs: RatingInputs, plan: Plan, values: dict[str, FloatArray]) -> FloatArray:
    """Unrounded new-business premiums, minimum premium applied (no cap): what
    calibration balances the base rate on. Same arithmetic as ``rate``."""
    period_years = inputs.period_days / DAYS_PER_YEAR
    base_amount = float(plan.base_rate_per_year) * period_years
    a_priori = np.ones(len(inputs))
    for relativity in inputs.a_priori_relativity.values():
        a_priori = a_priori * relativity
    usage, _ = usage_factor(inputs, plan, base_amount)
    telematics_raw = np.exp(_log_telematics(inputs, plan, values, _credibility_z(inputs, plan), None))
    telematics = np.clip(telematics_raw, plan.telematics_band.minimum, plan.telematics_band.maximum)
    return np.maximum(base_amount * a_priori * usage * telematics, float(plan.minimum_premium_per_year) * period_years)


def rate(inputs: RatingInputs, plan: Plan, values: dict[str, FloatArray]) -> dict[str, npt.NDArray[np.generic]]:
    """The rating arithmetic on arrays; ``values`` are the behaviour values to rate on.

    Large inputs are rated in blocks of rows: a block's temporaries stay in cache and are
    recycled by the allocator, while the output columns are rows of one array per dtype,
    allocated once. Every step is row by row, so the result does not depend on the blocks.
    """
    n_rows = len(inputs)
    if n_rows <= _BLOCK_ROWS:
        return _rate_rows(inputs, plan, values)
    first = _rate_rows(inputs.rows(slice(0, _BLOCK_ROWS)), plan, {k: v[:_BLOCK_ROWS] for k, v in values.items()})
    by_dtype: dict[np.dtype[np.generic], list[str]] = {}
    for name, column in first.items():
        by_dtype.setdefault(column.dtype, []).append(name)
    result: dict[str, npt.NDArray[np.generic]] = {}
    for dtype, names in by_dtype.items():
        block = np.empty((len(names), n_rows), dtype=dtype)
        result.update(zip(names, block, strict=True))
    for start in range(0, n_rows, _BLOCK_ROWS):
        rows = slice(start, min(start + _BLOCK_ROWS, n_rows))
        rated = first if start == 0 else _rate_rows(inputs.rows(rows), plan, {k: v[rows] for k, v in values.items()})
        for name, column in rated.items():
            result[name][rows] = column
    return {name: result[name] for name in first}


def _rate_rows(inputs: RatingInputs, plan: Plan, values: dict[str, FloatArray]) -> dict[str, npt.NDArray[np.generic]]:
    """``rate`` on one block of rows."""
    minor = plan.currency.minor_units
    scale = float(10**minor)
    period_years = inputs.period_days / DAYS_PER_YEAR
    base_amount = float(plan.base_rate_per_year) * period_years
    a_priori = np.ones(len(inputs))
    for relativity in inputs.a_priori_relativity.values():
        a_priori = a_priori * relativity
    usage, billable = usage_factor(inputs, plan, base_amount)
    usage_exposure_years = period_years * usage

    credibility_z = _credibility_z(inputs, plan)
    columns: dict[str, npt.NDArray[np.generic]] = {}
    telematics_raw = np.exp(_log_telematics(inputs, plan, values, credibility_z, columns))
    band = plan.telematics_band
    telematics = np.clip(telematics_raw, band.minimum, band.maximum)

    new_business = base_amount * a_priori * usage * telematics
    previous_rate = inputs.previous_premium_cents / scale / inputs.previous_usage_exposure_years
    increase_bound = previous_rate * (1.0 + plan.max_increase_per_period) * usage_exposure_years
    capped = np.where(np.isnan(increase_bound), new_business, np.minimum(new_business, increase_bound))
    minimum_amount = float(plan.minimum_premium_per_year) * period_years
    final = np.maximum(capped, minimum_amount)
    rounding = plan.currency.rounding
    result: dict[str, npt.NDArray[np.generic]] = {
        "premium_cents": to_minor_units(final, minor, rounding),
        "new_business_premium_cents": to_minor_units(np.maximum(new_business, minimum_amount), minor, rounding),
        "base_cents": to_minor_units(base_amount, minor, rounding),
        "period_years": period_years,
        "billable_dist_km": billable,
        "usage_factor": usage,
        "usage_exposure_years": usage_exposure_years,
        "a_priori_factor": a_priori,
    }
    for factor in plan.a_priori:
        result[f"{factor.name}_factor"] = inputs.a_priori_relativity[factor.name]
    result["credibility_z"] = credibility_z
    result.update(columns)
    result["telematics_factor_raw"] = telematics_raw
    result["telematics_factor"] = telematics
    result["telematics_band_factor"] = telematics / telematics_raw
    result["increase_cap_factor"] = capped / new_business
    result["minimum_premium_factor"] = final / capped
    return result


def with_plan(inputs: RatingInputs, policies: pd.DataFrame, plan: Plan) -> RatingInputs:
    """The same inputs with the a priori relativities of another plan (same factor names)."""
    relativities = {
        table.name: _relativity_column(policies, table.name, table.as_dict(), inputs.policy_id) for table in plan.a_priori
    }
    return dataclasses.replace(inputs, a_priori_relativity=relativities)


def reprice(policies: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Price every row of ``policies``; one output row per input row, same order."""
    inputs = read_inputs(policies, plan)
    result = rate(inputs, plan, behaviour_values(inputs, plan))
    return pd.DataFrame({"policy_id": policies["policy_id"].array, **result}, index=policies.index, copy=False)


def billable_dist_km(daily: pd.DataFrame, daily_cap_km: float) -> pd.Series:
    """Billable km per policy from daily km (columns policy_id, dist_km): sum of min(km, cap)."""
    for column in ("policy_id", "dist_km"):
        if column not in daily.columns:
            raise RatingInputError(f"{column}: required column of the daily km frame is missing")
    if not daily_cap_km > 0:
        raise RatingInputError(f"daily_cap_km: must be positive, got {daily_cap_km!r}")
    km = daily["dist_km"].to_numpy(dtype=np.float64)
    if not (np.isfinite(km) & (km >= 0)).all():
        raise RatingInputError("dist_km: daily km must be finite and non-negative")
    capped = pd.Series(np.minimum(km, daily_cap_km), index=daily.index)
    return capped.groupby(daily["policy_id"].to_numpy(), sort=True).sum().rename("billable_dist_km")
