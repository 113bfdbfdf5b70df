"""Premiums explained in money: per-factor contributions summing to the cent, and coaching.

The premium P and the base amount B (base rate x period, both in integer minor units) are
linked by P = B x prod(f_j). Each factor j is given L(P, B) x ln(f_j), where L is the
logarithmic mean (P - B) / (ln P - ln B): the log-mean Divisia allocation (Ang 2004),
which always sums to P - B and stays finite when the factors cancel. The real-valued
shares are then turned into whole minor units by the largest-remainder method, so the
base plus every contribution equals the premium exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pricing.money import minor_units_to_decimal
from pricing.plan import Plan
from pricing.rating import behaviour_values, rate, read_inputs

ADJUSTMENT_FACTORS = ("telematics_band", "increase_cap", "minimum_premium")
NO_ACTION = "none"
_BLOCK_ROWS = 4096


def factor_names(plan: Plan) -> tuple[str, ...]:
    """Breakdown lines after the base, in display order."""
    return (*plan.factor_names, "usage", *plan.behaviour_names, *ADJUSTMENT_FACTORS)


def _factor_column(name: str) -> str:
    return "usage_factor" if name == "usage" else f"{name}_factor"


def _line_sum(lines: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Sum over the lines (rows) of a lines x policies array, in numpy's pairwise order.

    This is the order ``numpy.sum`` gives each row of a policies x lines array; the cents
    of every breakdown were fixed with it, so the lines-first layout keeps them bit for bit.
    """
    n_lines = lines.shape[0]
    if n_lines < 8:
        total = np.zeros(lines.shape[1:])
        for line in lines:
            total += line
        return total
    if n_lines <= 128:
        whole_blocks = n_lines - n_lines % 8
        partial = lines[:8].copy()
        for start in range(8, whole_blocks, 8):
            partial += lines[start:start + 8]
        pairs = partial[0::2] + partial[1::2]
        total = (pairs[0] + pairs[1]) + (pairs[2] + pairs[3])
        for line in lines[whole_blocks:]:
            total += line
        return total
    half = n_lines // 2
    half -= half % 8
    return _line_sum(lines[:half]) + _line_sum(lines[half:])


def _allocate(base_cents: npt.NDArray[np.int64], premium_cents: npt.NDArray[np.int64],
              shares: npt.NDArray[np.float64], out: npt.NDArray[np.int64]) -> None:
    """Fill ``out`` (lines x policies) with each line's whole minor units.

    ``shares`` holds each line's log factor on entry (lines x policies, C order) and is
    overwritten.
    """
    n_lines = shares.shape[0]
    target_cents = premium_cents - base_cents
    base = base_cents.astype(np.float64)
    premium = premium_cents.astype(np.float64)
    log_ratio = np.log(premium) - np.log(base)
    same = target_cents == 0
    log_mean = np.where(same, premium, (premium - base) / np.where(same, 1.0, log_ratio))
    shares *= log_mean
    # Rounding P and B to whole units leaves sum(shares) slightly off P - B; spread that
    # residual in proportion to each share's size so that the shares sum to it exactly.
    target = target_cents.astype(np.float64)
    residual = target - _line_sum(shares)
    size = np.abs(shares)
    total_size = _line_sum(size)
    spread = np.divide(residual, total_size, out=np.zeros_like(residual), where=total_size > 0)
    size *= spread
    shares += size
    floors = np.floor(shares, out=size)
    remainders = np.subtract(shares, floors, out=shares)
    np.copyto(out, floors, casting="unsafe")
    if n_lines == 0:
        return
    # floor(x) > x - 1, so the units still to hand out number 0..n_lines.
    missing_units = target_cents - out.sum(axis=0)
    # Largest remainders first, ties broken by line order. The remainders' float bits sort
    # like the remainders (they are non-negative); dropping their last few bits makes room
    # for the line index, so one sort of unique integer keys replaces an argsort + scatter.
    shift = max(1, (n_lines - 1).bit_length())
    keys = remainders.view(np.uint64)
    keys &= np.uint64(~((1 << shift) - 1) & 0xFFFF_FFFF_FFFF_FFFF)
    keys |= (n_lines - 1 - np.arange(n_lines, dtype=np.uint64))[:, None]
    by_policy = keys.T.copy(order="C")
    by_policy.sort(axis=1)
    rank = np.clip(n_lines - missing_units, 0, n_lines - 1)
    threshold = by_policy[np.arange(by_policy.shape[0]), rank]
    chosen = keys >= threshold
    chosen &= missing_units > 0
    out += chosen


def allocate_contributions(base_cents: npt.NDArray[np.int64], premium_cents: npt.NDArray[np.int64],
                           log_factors: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Split premium - base over factors (columns of ``log_factors``) in whole minor units.

    Row sums of the result equal ``premium_cents - base_cents`` exactly.
    """
    base_cents = np.asarray(base_cents, dtype=np.int64)
    premium_cents = np.asarray(premium_cents, dtype=np.int64)
    if not ((base_cents > 0).all() and (premium_cents > 0).all()):
        raise ValueError("base_cents, premium_cents: must be positive to take logarithms")
    shares = np.array(np.asarray(log_factors, dtype=np.float64).T, order="C")
    out = np.empty(shares.shape, dtype=np.int64)
    _allocate(base_cents, premium_cents, shares, out)
    return out.T


def _contribution_columns(result: Mapping[str, Any], plan: Plan) -> dict[str, npt.NDArray[np.int64]]:
    names = factor_names(plan)
    factors = [np.asarray(result[_factor_column(name)], dtype=np.float64) for name in names]
    base_cents = np.asarray(result["base_cents"], dtype=np.int64)
    premium_cents = np.asarray(result["premium_cents"], dtype=np.int64)
    if not ((base_cents > 0).all() and (premium_cents > 0).all()):
        raise ValueError("base_cents, premium_cents: must be positive to take logarithms")
    n_rows = len(premium_cents)
    # Lines first (each line's cents one contiguous column) and in blocks of policies, so
    # that a block's temporaries stay in cache; every step is per policy, so the cents do
    # not depend on the block size.
    contributions = np.empty((len(names), n_rows), dtype=np.int64)
    log_block = np.empty((len(names), min(n_rows, _BLOCK_ROWS)))
    for start in range(0, n_rows, _BLOCK_ROWS):
        rows = slice(start, min(start + _BLOCK_ROWS, n_rows))
        log_factors = log_block[:, : rows.stop - start]
        for j, factor in enumerate(factors):
            np.log(factor[rows], out=log_factors[j])
        _allocate(base_cents[rows], premium_cents[rows], log_factors, contributions[:, rows])
    return {f"contribution_{name}_cents": contributions[j] for j, name in enumerate(names)}


def explain(priced: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Add ``contribution_<factor>_cents`` columns to a ``reprice`` result (copy)."""
    columns = {name: priced[name] for name in ("base_cents", "premium_cents", *map(_factor_column, factor_names(plan)))}
    contributions = pd.DataFrame(_contribution_columns(columns, plan), index=priced.index)
    return priced.join(contributions)


def price_with_breakdown(policies: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """``reprice`` plus the money breakdown of every premium, built in one pass."""
    inputs = read_inputs(policies, plan)
    result = rate(inputs, plan, behaviour_values(inputs, plan))
    columns: dict[str, Any] = {"policy_id": policies["policy_id"].array, **result, **_contribution_columns(result, plan)}
    return pd.DataFrame(columns, index=policies.index, copy=False)


def breakdown_lines(explained: pd.DataFrame, policies: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Long format for underwriters (a few policies at a time): one row per policy and line,
    amounts as exact Decimals.

    Behaviour lines carry the data behind them: numerator, scored km, value, the plan's
    relativity and the credibility weight.
    """
    minor = plan.currency.minor_units
    records = []
    numerator_of = {b.name: b.numerator for b in plan.behaviour}
    for position in range(len(explained)):
        row = explained.iloc[position]
        source = policies.iloc[position]
        records.append({
            "policy_id": row["policy_id"], "line": "base", "amount": minor_units_to_decimal(int(row["base_cents"]), minor),
            "factor": 1.0, "numerator": np.nan, "scored_dist_km": np.nan, "value": np.nan,
            "relativity": np.nan, "credibility_z": np.nan,
        })
        for name in factor_names(plan):
            behaviour = name in numerator_of
            records.append({
                "policy_id": row["policy_id"],
                "line": name,
                "amount": minor_units_to_decimal(int(row[f"contribution_{name}_cents"]), minor),
                "factor": float(row[_factor_column(name)]),
                "numerator": float(source[numerator_of[name]]) if behaviour else np.nan,
                "scored_dist_km": float(source["scored_dist_km"]) if behaviour else np.nan,
                "value": float(row[f"{name}_value"]) if behaviour else np.nan,
                "relativity": float(row[f"{name}_relativity"]) if behaviour else np.nan,
                "credibility_z": float(row["credibility_z"]) if behaviour else np.nan,
            })
    return pd.DataFrame.from_records(records)


def change_from_previous(current: pd.DataFrame, previous: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Per policy present in both, each line's change in minor units (current - previous)."""
    columns = ["base_cents", "premium_cents"] + [f"contribution_{n}_cents" for n in factor_names(plan)]
    for label, frame in (("current", current), ("previous", previous)):
        absent = [c for c in ["policy_id", *columns] if c not in frame.columns]
        if absent:
            raise ValueError(f"{label}.{absent[0]}: column is missing; pass frames from explain()")
    joined = current[["policy_id", *columns]].merge(
        previous[["policy_id", *columns]], on="policy_id", suffixes=("", "_previous"), validate="one_to_one"
    )
    changes = pd.DataFrame({"policy_id": joined["policy_id"]})
    for column in columns:
        name = column.removeprefix("contribution_").removesuffix("_cents")
        changes[f"change_{name}_cents"] = joined[column] - joined[f"{column}_previous"]
    return changes


def format_change(cents: int, minor_units: int = 2) -> str:
    """Signed money text for a change: 300 -> '+3.00', -70 -> '-0.70'."""
    amount = minor_units_to_decimal(abs(int(cents)), minor_units)
    return f"{'-' if cents < 0 else '+'}{amount}"


def coaching_targets(policies: pd.DataFrame, plan: Plan) -> dict[str, float | None]:
    """Each behaviour's median value over the policies with data (None if none has data)."""
    values = behaviour_values(read_inputs(policies, plan), plan)
    targets: dict[str, float | None] = {}
    for name, value in values.items():
        observed = value[~np.isnan(value)]
        targets[name] = float(np.median(observed)) if observed.size else None
    return targets


def coach(policies: pd.DataFrame, plan: Plan,
          targets: Mapping[str, float | None] | None = None) -> pd.DataFrame:
    """Premium if each behaviour moved to its target, and the best single change.

    The targets default to the portfolio medians (``coaching_targets`` over the policies
    in ``policies`` with data for that behaviour); fixed targets make a policy's coaching
    independent of which other policies are priced with it. A policy already at or better
    than the target gains nothing from that behaviour; no target, no saving.
    """
    if targets is None:
        targets = coaching_targets(policies, plan)
    inputs = read_inputs(policies, plan)
    values = behaviour_values(inputs, plan)
    premium = rate(inputs, plan, values)["premium_cents"].astype(np.int64)
    out: dict[str, Any] = {"policy_id": inputs.policy_id.array, "premium_cents": premium}
    savings = []
    for table in plan.behaviour:
        value = values[table.name]
        target = targets.get(table.name)
        if target is None:
            saving = np.zeros_like(premium)
        else:
            moved = np.where(np.isnan(value), value, target)
            counterfactual = rate(inputs, plan, {**values, table.name: moved})["premium_cents"].astype(np.int64)
            saving = np.maximum(premium - counterfactual, 0)
        out[f"coach_{table.name}_premium_cents"] = premium - saving
        out[f"coach_{table.name}_saving_cents"] = saving
        savings.append(saving)
    if savings:
        stacked = np.column_stack(savings)
        best = np.argmax(stacked, axis=1)
        best_saving = stacked[np.arange(len(best)), best]
        names = np.asarray(plan.behaviour_names, dtype=object)
        out["next_best_action"] = np.where(best_saving > 0, names[best], NO_ACTION)
        out["next_best_saving_cents"] = best_saving
    else:
        out["next_best_action"] = np.full(len(premium), NO_ACTION, dtype=object)
        out["next_best_saving_cents"] = np.zeros(len(premium), dtype=np.int64)
    return pd.DataFrame(out, index=policies.index)
