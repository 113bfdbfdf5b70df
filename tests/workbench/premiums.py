"""Premium rows written the way the pricing job writes them (the data contract), for tests.

Numbers come from the pricing library itself, so the workbench shows real breakdowns."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from pricing.audit import audit_records, code_version
from pricing.breakdown import (
    breakdown_lines,
    change_from_previous,
    coach,
    factor_names,
    format_change,
    price_with_breakdown,
)
from pricing.money import minor_units_to_decimal
from pricing.plan import Plan, default_plan
from pricing.synthetic import synthetic_portfolio


def stored_version(plan: Plan) -> str:
    return f"{plan.plan_id}-v{plan.version}"


def publish(conn: psycopg.Connection[Any], plan: Plan) -> str:
    version = stored_version(plan)
    conn.execute("INSERT INTO rating_plans (version, document, sha256) VALUES (%s, %s, %s)"
                 " ON CONFLICT (version) DO NOTHING", (version, Jsonb(plan.to_dict()), plan.sha256))
    return version


def portfolio(policy_ids: list[str], seed: int, plan: Plan | None = None) -> pd.DataFrame:
    """Rating inputs of one 30-day period for the given policies, every one with data."""
    plan = plan or default_plan()
    frame = synthetic_portfolio(len(policy_ids), plan, seed=seed, renewal_share=0.0)
    frame["policy_id"] = policy_ids
    scored = frame["scored_dist_km"].to_numpy()
    missing = np.isnan(scored)
    if missing.any():
        frame.loc[missing, "scored_dist_km"] = 300.0
        frame.loc[missing, "experience_dist_km"] = 300.0
        for b in plan.behaviour:
            frame.loc[missing, b.numerator] = 1.0
    frame = frame.drop(columns=["previous_premium_cents", "previous_usage_exposure_years"])
    for table in plan.a_priori:
        frame[table.name] = frame[table.name].astype(str)
    return frame


def _nullable(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def contract_rows(frame: pd.DataFrame, plan: Plan,
                  previous: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Per policy of `frame`: the premiums row's breakdown, inputs, amount and hashes."""
    explained = price_with_breakdown(frame, plan)
    lines = breakdown_lines(explained, frame, plan)
    records = audit_records(frame, plan, explained)
    coaching = coach(frame, plan)
    changes = None
    if previous is not None:
        changes = change_from_previous(explained, price_with_breakdown(previous, plan), plan)
    minor = plan.currency.minor_units
    rows = []
    for i, policy_id in enumerate(frame["policy_id"]):
        mine = lines[lines["policy_id"] == policy_id]
        doc_lines = [{"line": r.line, "amount_cents": int(r.amount.scaleb(minor)),
                      "factor": float(r.factor), "numerator": _nullable(r.numerator),
                      "scored_dist_km": _nullable(r.scored_dist_km), "value": _nullable(r.value),
                      "relativity": _nullable(r.relativity),
                      "credibility_z": _nullable(r.credibility_z)} for r in mine.itertuples()]
        change_cents = change_text = None
        if changes is not None:
            row = changes.iloc[i]
            change_cents = {n: int(row[f"change_{n}_cents"]) for n in factor_names(plan)
                            if int(row[f"change_{n}_cents"]) != 0}
            biggest = sorted(change_cents.items(), key=lambda kv: -abs(kv[1]))[:2]
            change_text = "; ".join(f"{n.replace('_', ' ')} {format_change(c, minor)}"
                                    for n, c in biggest) or None
        coach_row = coaching.iloc[i]
        premium_cents = int(explained["premium_cents"].iloc[i])
        breakdown = {
            "currency": plan.currency.code, "premium_cents": premium_cents,
            "base_cents": int(explained["base_cents"].iloc[i]), "lines": doc_lines,
            "credibility_z": float(explained["credibility_z"].iloc[i]),
            "changes": change_cents, "change_text": change_text,
            "coaching": {"next_best_action": str(coach_row["next_best_action"]),
                         "next_best_saving_cents": int(coach_row["next_best_saving_cents"]),
                         "savings_cents": {b: int(coach_row[f"coach_{b}_saving_cents"])
                                           for b in plan.behaviour_names}},
            "record_sha256": records[i]["record_sha256"],
        }
        rows.append({"policy_id": str(policy_id), "breakdown": breakdown,
                     "inputs": records[i]["inputs"], "code_version": code_version(),
                     "amount": minor_units_to_decimal(premium_cents, minor),
                     "currency": plan.currency.code, "sha256": records[i]["record_sha256"]})
    return rows


def write_premiums(conn: psycopg.Connection[Any], frame: pd.DataFrame, period: tuple[date, date],
                   *, kind: str = "period", plan: Plan | None = None,
                   previous: pd.DataFrame | None = None) -> dict[str, int]:
    """Price `frame`, write one premiums row per policy; return policy_id -> premium_id."""
    plan = plan or default_plan()
    version = publish(conn, plan)
    ids = {}
    for row in contract_rows(frame, plan, previous):
        inserted = conn.execute(
            "INSERT INTO premiums (policy_id, period_start, period_end, kind, plan_version,"
            " amount, currency, breakdown, inputs, code_version, sha256) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING premium_id",
            (row["policy_id"], period[0], period[1], kind, version, row["amount"],
             row["currency"], Jsonb(row["breakdown"]), Jsonb(row["inputs"]),
             row["code_version"], row["sha256"])).fetchone()
        assert inserted is not None
        ids[row["policy_id"]] = int(inserted[0])
    return ids


def add_policies(conn: psycopg.Connection[Any], policy_ids: list[str]) -> None:
    for policy_id in policy_ids:
        conn.execute("INSERT INTO policies (policy_id, time_zone) VALUES (%s, 'Europe/Amsterdam')"
                     " ON CONFLICT DO NOTHING", (policy_id,))
