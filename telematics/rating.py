"""The bridge from stored trips to the pricing library: rating inputs, stored premiums, replay.

Which trips count. A policy's period is the calendar days [period_start, period_end) in
the policy's own time zone, cut to the days the policy is in force; ``period_days`` is the
number of those days. A trip belongs to the period by its start. Only trips that count
against the driver enter any km or count: trips with stored features that are ``scored``
(enough data: >= 500 m and >= 300 s), not labelled passenger, transit or "not me", and
not classified as a bus or train ride (``transport_mode`` NULL or 'car'), and not a
dongle's record of a drive the phone also recorded (overlapping in time: the km would
count twice); see ``telematics.store.trips.COUNTS_AGAINST_DRIVER``. Unscored and
insufficient-data trips are left out of every column, as ``pricing.rating`` requires.

Consent. Without a current 'location' consent for the purpose 'pricing' (no record means
never given) no driving behaviour is used: ``scored_dist_km``, ``experience_dist_km`` and
every behaviour numerator are NaN, so the plan's missing-data rule applies and the
credibility weight is 0. ``dist_km`` (the usage the contract bills) is still the km of
the counted trips, so that withdrawing consent never makes the km free.

Mapping, trip feature in the core (``trip_features.features``) -> pricing column, summed
over the counted trips of the period (docs/PRICING.md has the same table):

==========================  ==========================================================
pricing column              source
==========================  ==========================================================
``period_days``             days of [period_start, period_end) the policy is in force
``dist_km``                 ``trip_features.distance_m`` / 1000
``scored_dist_km``          the same km (every counted trip is scored); NaN without consent
``experience_dist_km``      counted km from the policy's first trip to the period's end
<a priori factor>           ``policies.rating_factors ->> <factor>`` as text
``harsh_brake_count``       ``n_braking`` (harsh = medium + high + severe)
``harsh_accel_count``       ``n_acceleration``
``harsh_corner_count``      ``n_cornering``
``speeding_count``          ``n_speeding``
``speeding_dist_km``        ``speeding_s`` x ``distance_m`` / ``moving_s`` / 1000: speeding
                            time at the trip's mean moving speed (a lower bound: the core
                            has no speeding distance yet)
``night_dist_km``           ``night_distance_m`` / 1000 (23:00-05:00 local)
``rush_dist_km``            ``rush_distance_m`` / 1000
``urban_dist_km``           ``urban_distance_m`` / 1000
``rural_dist_km``           ``rural_distance_m`` / 1000
``motorway_dist_km``        ``motorway_distance_m`` / 1000
``phone_handling_min``      ``phone_handling_s`` / 60
``phone_handling_count``    ``n_phone_handling``
``fatigue_count``           ``n_fatigue``
``previous_premium_cents``  the latest stored 'period' premium whose period ends where this
                            one starts (any plan version); NaN for new business
``previous_usage_exposure_years``  that premium's usage exposure
==========================  ==========================================================

A feature missing from a trip (an OBD trip has no cornering or phone handling) adds 0.

Stored premiums. ``reprice_period`` prices with ``price_with_breakdown``, coaches, compares
with the previous period and writes one ``premiums`` row per policy in one transaction
(COPY into a temporary table, then one upsert on the unique key of migration 0004, so a
re-run replaces and never duplicates), one ``audit_log`` row per premium and, for a whole
portfolio, a ``pricing_runs`` row with the coaching targets. ``premiums.breakdown``
follows the contract in docs/PRICING.md; ``premiums.inputs`` and ``premiums.sha256`` are the
audit record's inputs and hash, so ``replay_stored`` recomputes each premium to the cent.
"""

from __future__ import annotations

import calendar
import dataclasses
import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from pricing.audit import (
    RECORDS_FORMAT,
    ReplayReport,
    audit_records,
    code_version,
    record_hash,
    replay,
)
from pricing.breakdown import (
    change_from_previous,
    coach,
    factor_names,
    format_change,
    price_with_breakdown,
)
from pricing.breakdown import coaching_targets as median_targets
from pricing.money import minor_units_to_decimal
from pricing.plan import FactorTable, Plan, PlanError, canonical_json, default_plan, plan_from_dict
from pricing.rating import RatingInputError
from telematics.store.trips import COUNTS_AGAINST_DRIVER

ACTOR = "pricing"
_LOCATION_CATEGORY = "location"
_PRICING_PURPOSE = "pricing"
_CHANGE_TEXT_LINES = 3


@dataclass(frozen=True)
class Numerator:
    """How one pricing numerator is summed from a trip's stored features."""

    sql: str
    source: str


def _feature(key: str, scale: float = 1.0) -> Numerator:
    scaled = f" * {scale!r}" if scale != 1.0 else ""
    return Numerator(sql=f"COALESCE(x.{key}, 0){scaled}",
                     source=key if scale == 1.0 else f"{key} x {scale:g}")


# Pricing column -> SQL over one counted trip (aliases: f = trip_features, x = the feature
# keys below read from f.features once per trip). Keys are fixed here, never taken from
# input, so the SQL built from them is safe.
NUMERATORS: dict[str, Numerator] = {
    "harsh_brake_count": _feature("n_braking"),
    "harsh_accel_count": _feature("n_acceleration"),
    "harsh_corner_count": _feature("n_cornering"),
    "speeding_count": _feature("n_speeding"),
    "speeding_dist_km": Numerator(
        sql="COALESCE(x.speeding_s * f.distance_m / NULLIF(x.moving_s, 0), 0) * 0.001",
        source="speeding_s x distance_m / moving_s / 1000"),
    "night_dist_km": _feature("night_distance_m", 0.001),
    "rush_dist_km": _feature("rush_distance_m", 0.001),
    "urban_dist_km": _feature("urban_distance_m", 0.001),
    "rural_dist_km": _feature("rural_distance_m", 0.001),
    "motorway_dist_km": _feature("motorway_distance_m", 0.001),
    "phone_handling_min": _feature("phone_handling_s", 1.0 / 60.0),
    "phone_handling_count": _feature("n_phone_handling"),
    "fatigue_count": _feature("n_fatigue"),
}
# The feature keys the numerators read. `features ->> key` per numerator would detoast and
# parse a trip's whole features document once per key; jsonb_to_record parses it once.
FEATURE_KEYS = ("n_braking", "n_acceleration", "n_cornering", "n_speeding", "speeding_s",
                "moving_s", "night_distance_m", "rush_distance_m", "urban_distance_m",
                "rural_distance_m", "motorway_distance_m", "phone_handling_s",
                "n_phone_handling", "n_fatigue")


class PricingError(ValueError):
    """A pricing request cannot be served; the message names the field and the problem."""


# --- plans ---------------------------------------------------------------------------------

def plan_key(plan: Plan) -> str:
    """The plan's key in ``rating_plans.version``: '<plan_id>-v<version>'."""
    return f"{plan.plan_id}-v{plan.version}"


def publish_plan(conn: psycopg.Connection[Any], plan: Plan, *, actor: str = ACTOR) -> str:
    """Store the plan (immutable); publishing the same plan again is a no-op. Returns its key.

    A different plan under a key already taken is refused: plans are never changed.
    """
    key = plan_key(plan)
    with conn.transaction():
        inserted = conn.execute(
            "INSERT INTO rating_plans (version, document, sha256) VALUES (%s, %s, %s)"
            " ON CONFLICT (version) DO NOTHING RETURNING version",
            (key, Jsonb(plan.to_dict()), plan.sha256)).fetchone()
        if inserted is None:
            row = conn.execute("SELECT sha256 FROM rating_plans WHERE version = %s", (key,)).fetchone()
            if row is None or row[0] != plan.sha256:
                raise PlanError(f"version: {key} is already published with sha256 "
                                f"{row[0] if row else '?'}; plans are immutable, publish a new version")
        else:
            conn.execute("INSERT INTO audit_log (actor, action, subject, detail) VALUES (%s, %s, %s, %s)",
                         (actor, "plan.publish", key, Jsonb({"sha256": plan.sha256,
                                                              "parent_sha256": plan.parent_sha256,
                                                              "effective_from": plan.effective_from.isoformat()})))
    return key


_PARSED_PLANS: dict[tuple[str, str], Plan] = {}


def _stored_plan(key: str, document: Any, sha256: str, *, cache: bool = True) -> Plan:
    """The stored plan, parsed and hash-checked once per process (plans are immutable, a
    trigger refuses updates: the same key and hash give the same plan). Replays pass
    ``cache=False`` and check the document itself every time."""
    cached = _PARSED_PLANS.get((key, sha256)) if cache else None
    if cached is not None:
        return cached
    plan = plan_from_dict(document)
    if plan.sha256 != sha256:
        raise PlanError(f"version: stored plan {key} hashes to {plan.sha256}, not its recorded {sha256}")
    if len(_PARSED_PLANS) > 64:
        _PARSED_PLANS.clear()
    _PARSED_PLANS[(key, sha256)] = plan
    return plan


def load_published_plan(conn: psycopg.Connection[Any], version: str) -> Plan:
    """A published plan by its key (e.g. 'default-v1'), checked against its stored sha256."""
    row = conn.execute("SELECT document, sha256 FROM rating_plans WHERE version = %s", (version,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT version FROM rating_plans ORDER BY created_at")]
        raise PlanError(f"version: no published plan {version!r}; published: {known or 'none'}")
    return _stored_plan(version, row[0], row[1])


def plan_in_force(conn: psycopg.Connection[Any]) -> Plan:
    """The most recently published plan; publishes the default plan if none is published."""
    row = conn.execute("SELECT version, sha256 FROM rating_plans"
                       " ORDER BY created_at DESC, version DESC LIMIT 1").fetchone()
    if row is None:
        plan = default_plan()
        publish_plan(conn, plan)
        return plan
    cached = _PARSED_PLANS.get((row[0], row[1]))
    if cached is not None:
        return cached
    return load_published_plan(conn, row[0])


# --- periods -------------------------------------------------------------------------------

def month_period(text: str) -> tuple[date, date]:
    """'2026-10' -> (2026-10-01, 2026-11-01)."""
    try:
        year, month = (int(part) for part in text.split("-"))
        start = date(year, month, 1)
    except ValueError as error:
        raise PricingError(f"period: expected a month such as 2026-10, got {text!r}") from error
    return start, start + timedelta(days=calendar.monthrange(year, month)[1])


def _check_period(period_start: date, period_end: date) -> None:
    if not isinstance(period_start, date) or not isinstance(period_end, date):
        raise PricingError("period_start, period_end: must be dates")
    if not period_end > period_start:
        raise PricingError(f"period_end: must be after period_start ({period_start} .. {period_end})")
    if (period_end - period_start).days > 366:
        raise PricingError(f"period_end: a period lasts at most 366 days, got {(period_end - period_start).days}")


# --- rating inputs -------------------------------------------------------------------------

def _inputs_sql(plan: Plan) -> str:
    # Factor names are validated snake_case names of the plan (pricing.plan), safe in SQL.
    factors = "".join(f", b.rating_factors ->> '{name}' AS {name}" for name in plan.factor_names)
    # Float sums depend on their order: a fixed order makes a policy's inputs (and so its
    # record hash) the same whichever other policies are priced with it.
    order = "ORDER BY f.started_at, f.device_id, f.trip_id"
    # Every counted trip's km are driven and billed; behaviour (its numerators, the km they
    # are rated on and the credibility experience) comes from trips long enough to score.
    in_period = "f.started_at >= b.from_at"
    sums = "".join(f", sum({n.sql} {order}) FILTER (WHERE {in_period} AND f.scored) AS {name}"
                   for name, n in NUMERATORS.items())
    numerators = "".join(f", s.{name}" for name in NUMERATORS)
    columns = ", ".join(f"{key} float8" for key in FEATURE_KEYS)
    return f"""
WITH pol AS (
    SELECT p.policy_id, p.time_zone, p.rating_factors,
           GREATEST(p.start_date, %(start)s::date) AS from_date,
           LEAST(COALESCE(p.end_date, %(end)s::date), %(end)s::date) AS to_date
      FROM policies p
     WHERE p.start_date < %(end)s::date AND (p.end_date IS NULL OR p.end_date > %(start)s::date)
       AND (%(ids)s::text[] IS NULL OR p.policy_id = ANY(%(ids)s::text[]))
), b AS (
    SELECT pol.*, (pol.from_date::timestamp AT TIME ZONE pol.time_zone) AS from_at,
           (pol.to_date::timestamp AT TIME ZONE pol.time_zone) AS to_at,
           COALESCE((SELECT c.granted FROM consents c
                      WHERE c.policy_id = pol.policy_id AND c.category = '{_LOCATION_CATEGORY}'
                        AND c.purpose = '{_PRICING_PURPOSE}'
                      ORDER BY c.at DESC, c.consent_id DESC LIMIT 1), false) AS consent
      FROM pol
), s AS (
    SELECT b.policy_id,
           sum(f.distance_m {order}) FILTER (WHERE {in_period}) * 0.001 AS dist_km,
           sum(f.distance_m {order}) FILTER (WHERE {in_period} AND f.scored) * 0.001 AS scored_km,
           sum(f.distance_m {order}) FILTER (WHERE f.scored) * 0.001 AS experience_dist_km{sums}
      FROM b
      JOIN trip_features f ON f.policy_id = b.policy_id AND f.started_at < b.to_at
      CROSS JOIN LATERAL jsonb_to_record(f.features) AS x({columns})
      JOIN trips t ON t.device_id = f.device_id AND t.trip_id = f.trip_id
     WHERE {COUNTS_AGAINST_DRIVER}
     GROUP BY b.policy_id
)
SELECT b.policy_id, (b.to_date - b.from_date) AS period_days, b.consent{factors},
       s.dist_km, s.scored_km, s.experience_dist_km{numerators},
       prev.premium_cents, prev.usage_exposure_years, prev.lines
  FROM b
  LEFT JOIN s ON s.policy_id = b.policy_id
  LEFT JOIN LATERAL (
      SELECT (q.breakdown ->> 'premium_cents')::float8 AS premium_cents,
             q.usage_exposure_years, q.breakdown -> 'lines' AS lines
        FROM premiums q
       WHERE q.policy_id = b.policy_id AND q.kind = 'period' AND q.period_end = %(start)s::date
       ORDER BY q.updated_at DESC, q.premium_id DESC LIMIT 1) prev ON true
 WHERE b.to_date > b.from_date
 ORDER BY b.policy_id
"""


@dataclass(frozen=True)
class PeriodInputs:
    """Rating inputs of one period and, per policy, the previous period's stored lines."""

    frame: pd.DataFrame
    previous_lines: list[list[dict[str, Any]] | None]


def read_period(conn: psycopg.Connection[Any], plan: Plan, period_start: date, period_end: date,
                policy_ids: Sequence[str] | None = None) -> PeriodInputs:
    """The plan's input frame for every policy in force in the period (sorted by policy_id)."""
    _check_period(period_start, period_end)
    unknown = sorted({b.numerator for b in plan.behaviour} - set(NUMERATORS))
    if unknown:
        raise RatingInputError(f"{unknown[0]}: the plan's numerator has no source in the trip features; "
                               f"known: {sorted(NUMERATORS)}")
    ids = None if policy_ids is None else [str(p) for p in policy_ids]
    with conn.cursor() as cur:
        cur.execute(_inputs_sql(plan).encode(), {"start": period_start, "end": period_end, "ids": ids})
        assert cur.description is not None
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
    raw = pd.DataFrame.from_records(rows, columns=names)
    float_columns = ["dist_km", "scored_km", "experience_dist_km", *NUMERATORS, "premium_cents",
                     "usage_exposure_years"]
    for column in float_columns:
        raw[column] = pd.to_numeric(raw[column], errors="raise").astype(np.float64)
    consent = raw["consent"].to_numpy(dtype=bool)
    dist_km = raw["dist_km"].fillna(0.0).to_numpy()
    scored = np.where(consent, raw["scored_km"].fillna(0.0).to_numpy(), np.nan)
    frame: dict[str, Any] = {
        "policy_id": raw["policy_id"].astype(object).to_numpy(),
        "period_days": raw["period_days"].to_numpy(dtype=np.int64),
        "dist_km": dist_km,
        "scored_dist_km": scored,
        "experience_dist_km": np.where(consent, raw["experience_dist_km"].fillna(0.0).to_numpy(), np.nan),
    }
    for name in plan.factor_names:
        frame[name] = raw[name].astype(object).to_numpy()
    for name in NUMERATORS:
        frame[name] = np.where(consent, raw[name].fillna(0.0).to_numpy(), np.nan)
    frame["previous_premium_cents"] = raw["premium_cents"].to_numpy()
    previous_usage = raw["usage_exposure_years"].to_numpy()
    # A premium stored without its usage exposure cannot bound the next one's increase.
    frame["previous_usage_exposure_years"] = np.where(np.isnan(frame["previous_premium_cents"]), np.nan,
                                                      previous_usage)
    frame["previous_premium_cents"] = np.where(np.isnan(previous_usage), np.nan, frame["previous_premium_cents"])
    return PeriodInputs(frame=pd.DataFrame(frame), previous_lines=list(raw["lines"]))


def rating_inputs(conn: psycopg.Connection[Any], period_start: date, period_end: date,
                  policy_ids: Sequence[str] | None = None, *, plan: Plan | None = None) -> pd.DataFrame:
    """Each policy's rating inputs for the period in the pricing library's layout.

    Columns: policy_id, period_days, dist_km, scored_dist_km, experience_dist_km, the plan's
    a priori factors (plan in force unless given), every numerator of ``NUMERATORS``,
    previous_premium_cents and previous_usage_exposure_years.
    """
    return read_period(conn, plan or plan_in_force(conn), period_start, period_end, policy_ids).frame


# --- pricing -------------------------------------------------------------------------------

def coaching_targets_of(frame: pd.DataFrame, plan: Plan) -> dict[str, float | None]:
    """Each behaviour's median value over the policies with data (None if none has data)."""
    return median_targets(frame, plan)


def coach_towards(frame: pd.DataFrame, plan: Plan, targets: dict[str, float | None]) -> pd.DataFrame:
    """Saving of moving each behaviour to its target and the best single change
    (``pricing.breakdown.coach`` with fixed targets, so that a policy's coaching does not
    depend on which other policies are priced with it: a partition, a provisional premium)."""
    return coach(frame, plan, targets)


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def change_text(changes: dict[str, int], minor_units: int) -> str:
    """The largest line changes in money, e.g. 'night_driving +3.00, usage -0.70'."""
    moved = [(line, cents) for line, cents in changes.items() if cents != 0]
    if not moved:
        return "no change"
    order = {line: i for i, line in enumerate(changes)}
    moved.sort(key=lambda item: (-abs(item[1]), order[item[0]]))
    return ", ".join(f"{line} {format_change(cents, minor_units)}" for line, cents in moved[:_CHANGE_TEXT_LINES])


def _previous_frame(policy_ids: list[Any], previous: list[list[dict[str, Any]]], plan: Plan) -> pd.DataFrame:
    lines = factor_names(plan)
    columns: dict[str, list[Any]] = {"policy_id": policy_ids, "base_cents": [], "premium_cents": []}
    for name in lines:
        columns[f"contribution_{name}_cents"] = []
    for stored in previous:
        amounts = {str(item["line"]): int(item["amount_cents"]) for item in stored}
        columns["base_cents"].append(amounts.get("base", 0))
        columns["premium_cents"].append(sum(amounts.values()))
        for name in lines:
            columns[f"contribution_{name}_cents"].append(amounts.get(name, 0))
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class PricedPeriod:
    """Priced rows ready to store: breakdown documents and audit records, in frame order."""

    frame: pd.DataFrame
    explained: pd.DataFrame
    breakdowns: list[dict[str, Any]]
    records: list[dict[str, Any]]


def price_period(inputs: PeriodInputs, plan: Plan, targets: dict[str, float | None]) -> PricedPeriod:
    """Premiums, breakdown documents (the contract of docs/PRICING.md) and audit records."""
    frame = inputs.frame
    explained = price_with_breakdown(frame, plan)
    coaching = coach_towards(frame, plan, targets)
    records = audit_records(frame, plan, explained)
    minor = plan.currency.minor_units
    names = factor_names(plan)
    line_names = ["base", *names]
    n = len(frame)

    changes: list[dict[str, int] | None] = [None] * n
    with_previous = [i for i, lines in enumerate(inputs.previous_lines) if lines is not None]
    if with_previous:
        stored = [lines for lines in inputs.previous_lines if lines is not None]
        previous = _previous_frame([frame["policy_id"].iat[i] for i in with_previous], stored, plan)
        delta = change_from_previous(explained.iloc[with_previous], previous, plan)
        delta_columns = [delta[f"change_{line}_cents"].to_numpy() for line in line_names]
        for k, i in enumerate(with_previous):
            changes[i] = {line: int(column[k]) for line, column in zip(line_names, delta_columns, strict=True)}

    behaviour_of = {b.name: b.numerator for b in plan.behaviour}
    cents = np.column_stack([explained["base_cents"].to_numpy()]
                            + [explained[f"contribution_{name}_cents"].to_numpy() for name in names]).tolist()
    factors = np.column_stack([np.ones(n)] + [explained["usage_factor" if name == "usage" else f"{name}_factor"]
                                              .to_numpy(dtype=np.float64) for name in names]).tolist()
    scored_km = frame["scored_dist_km"].to_numpy(dtype=np.float64).tolist()
    z = explained["credibility_z"].to_numpy(dtype=np.float64).tolist()
    per_behaviour = {
        name: (frame[numerator].to_numpy(dtype=np.float64).tolist(),
               explained[f"{name}_value"].to_numpy(dtype=np.float64).tolist(),
               explained[f"{name}_relativity"].to_numpy(dtype=np.float64).tolist())
        for name, numerator in behaviour_of.items()
    }
    savings = {name: coaching[f"coach_{name}_saving_cents"].to_numpy().tolist() for name in plan.behaviour_names}
    action = coaching["next_best_action"].tolist()
    best_saving = coaching["next_best_saving_cents"].to_numpy().tolist()
    premium = explained["premium_cents"].to_numpy().tolist()
    base = explained["base_cents"].to_numpy().tolist()
    breakdowns = []
    for i in range(n):
        lines = []
        for j, line in enumerate(line_names):
            item: dict[str, Any] = {"line": line, "amount_cents": int(cents[i][j]), "factor": float(factors[i][j]),
                                    "numerator": None, "scored_dist_km": None, "value": None,
                                    "relativity": None, "credibility_z": None}
            if line in per_behaviour:
                numerator, value, relativity = per_behaviour[line]
                item.update(numerator=_number(numerator[i]), scored_dist_km=_number(scored_km[i]),
                            value=_number(value[i]), relativity=_number(relativity[i]),
                            credibility_z=_number(z[i]))
            lines.append(item)
        change = changes[i]
        breakdowns.append({
            "currency": plan.currency.code,
            "premium_cents": int(premium[i]),
            "base_cents": int(base[i]),
            "lines": lines,
            "credibility_z": float(z[i]),
            "changes": change,
            "change_text": None if change is None else change_text(change, minor),
            "coaching": {"next_best_action": str(action[i]), "next_best_saving_cents": int(best_saving[i]),
                         "savings_cents": {name: int(savings[name][i]) for name in plan.behaviour_names}},
            "record_sha256": records[i]["record_sha256"],
        })
    return PricedPeriod(frame=frame, explained=explained, breakdowns=breakdowns, records=records)


# --- writing -------------------------------------------------------------------------------

_STAGE_COLUMNS = ("policy_id", "period_start", "period_end", "kind", "plan_version", "amount", "currency",
                  "breakdown", "inputs", "code_version", "sha256", "usage_exposure_years")
_CONFLICT = {
    "period": "(policy_id, period_start, period_end, plan_version) WHERE kind = 'period'",
    "provisional": "(policy_id, period_start) WHERE kind = 'provisional'",
}


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_payload(rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(_copy_text(v) for v in row))
        buffer.write("\n")
    return buffer.getvalue().encode("utf-8")


def write_premiums(conn: psycopg.Connection[Any], priced: PricedPeriod, plan: Plan, period_start: date,
                   period_end: date, *, kind: str, actor: str = ACTOR) -> int:
    """Upsert the priced premiums and their audit rows in one transaction; returns the count."""
    if kind not in _CONFLICT:
        raise PricingError(f"kind: must be 'period' or 'provisional', got {kind!r}")
    key = plan_key(plan)
    minor = plan.currency.minor_units
    usage = priced.explained["usage_exposure_years"].to_numpy(dtype=np.float64).tolist()
    rows = [
        (record["inputs"]["policy_id"], period_start.isoformat(), period_end.isoformat(), kind, key,
         minor_units_to_decimal(record["premium_cents"], minor), plan.currency.code,
         canonical_json(breakdown), canonical_json(record["inputs"]), record["code_version"],
         record["record_sha256"], repr(usage[i]))
        for i, (record, breakdown) in enumerate(zip(priced.records, priced.breakdowns, strict=True))
    ]
    if not rows:
        return 0
    columns = ", ".join(_STAGE_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _STAGE_COLUMNS
                        if c not in ("policy_id", "period_start", "kind"))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS pricing_premium_stage (policy_id text, period_start date,"
                    " period_end date, kind text, plan_version text, amount numeric, currency text,"
                    " breakdown jsonb, inputs jsonb, code_version text, sha256 text,"
                    " usage_exposure_years float8) ON COMMIT DELETE ROWS")
        # Inside a caller's longer transaction an earlier call's rows are still staged.
        cur.execute("DELETE FROM pricing_premium_stage")
        with cur.copy(f"COPY pricing_premium_stage ({columns}) FROM STDIN") as copy:
            copy.write(_copy_payload(rows))
        cur.execute(f"INSERT INTO premiums ({columns}) SELECT {columns} FROM pricing_premium_stage"
                    f" ON CONFLICT {_CONFLICT[kind]} DO UPDATE SET {updates}, updated_at = now()")
        audit_rows = (
            (actor, f"premium.{kind}", row[0], row[10],
             canonical_json({"plan_version": key, "period_start": row[1], "period_end": row[2],
                             "premium_cents": record["premium_cents"]}))
            for row, record in zip(rows, priced.records, strict=True)
        )
        with cur.copy("COPY audit_log (actor, action, policy_id, subject, detail) FROM STDIN") as copy:
            copy.write(_copy_payload(audit_rows))
    return len(rows)


def _stored_targets(conn: psycopg.Connection[Any], key: str, period_start: date,
                    period_end: date) -> dict[str, float | None] | None:
    row = conn.execute("SELECT coaching_targets FROM pricing_runs WHERE plan_version = %s"
                       " AND period_start = %s AND period_end = %s", (key, period_start, period_end)).fetchone()
    return None if row is None else dict(row[0])


def _latest_targets(conn: psycopg.Connection[Any], key: str) -> dict[str, float | None] | None:
    row = conn.execute("SELECT coaching_targets FROM pricing_runs WHERE plan_version = %s"
                       " ORDER BY period_start DESC, priced_at DESC LIMIT 1", (key,)).fetchone()
    return None if row is None else dict(row[0])


def log_run(conn: psycopg.Connection[Any], plan: Plan, period_start: date, period_end: date,
            targets: dict[str, float | None], *, policies: int, total_premium_cents: int) -> None:
    """Store a repricing run's totals and coaching targets (replacing an earlier run's)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO pricing_runs (plan_version, period_start, period_end, policies, total_premium_cents,"
            " coaching_targets, code_version) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (plan_version, period_start, period_end) DO UPDATE SET policies = EXCLUDED.policies,"
            " total_premium_cents = EXCLUDED.total_premium_cents, coaching_targets = EXCLUDED.coaching_targets,"
            " code_version = EXCLUDED.code_version, priced_at = now()",
            (plan_key(plan), period_start, period_end, policies, total_premium_cents, Jsonb(targets),
             code_version()))


def coaching_targets(conn: psycopg.Connection[Any], plan: Plan, period_start: date, period_end: date) -> dict[str, float | None]:
    """The portfolio medians of the period, computed once and stored (for partitioned runs:
    call it before the partitions so that every partition coaches towards the same targets)."""
    stored = _stored_targets(conn, plan_key(plan), period_start, period_end)
    if stored is not None:
        return stored
    frame = read_period(conn, plan, period_start, period_end).frame
    targets: dict[str, float | None] = {name: None for name in plan.behaviour_names}
    if len(frame):
        targets = coaching_targets_of(frame, plan)
    log_run(conn, plan, period_start, period_end, targets, policies=0, total_premium_cents=0)
    return targets


def finish_run(conn: psycopg.Connection[Any], plan: Plan, period_start: date, period_end: date) -> None:
    """Record a partitioned run's totals next to the coaching targets its partitions used."""
    key = plan_key(plan)
    targets = _stored_targets(conn, key, period_start, period_end)
    if targets is None:
        raise PricingError(f"period: no coaching targets stored for {key} {period_start}..{period_end}; "
                           "call coaching_targets() before the partitions")
    row = conn.execute(
        "SELECT count(*), COALESCE(sum((breakdown ->> 'premium_cents')::bigint), 0) FROM premiums"
        " WHERE kind = 'period' AND plan_version = %s AND period_start = %s AND period_end = %s",
        (key, period_start, period_end)).fetchone()
    assert row is not None
    log_run(conn, plan, period_start, period_end, targets, policies=int(row[0]), total_premium_cents=int(row[1]))


def reprice_period(conn: psycopg.Connection[Any], plan: Plan, period_start: date, period_end: date,
                   policy_ids: Sequence[str] | None = None, *, kind: str = "period", actor: str = ACTOR) -> int:
    """Price every policy in force in the period (or only ``policy_ids``) and store the
    premiums; returns how many were written. Idempotent: a re-run replaces the rows.

    The whole portfolio's run stores its coaching targets (the medians of each behaviour);
    a run over some policies coaches towards the stored targets of the plan and period
    when there are any, else towards the medians of the policies it prices.
    """
    if kind not in _CONFLICT:
        raise PricingError(f"kind: must be 'period' or 'provisional', got {kind!r}")
    publish_plan(conn, plan, actor=actor)
    inputs = read_period(conn, plan, period_start, period_end, policy_ids)
    if len(inputs.frame) == 0:
        return 0
    key = plan_key(plan)
    targets = None if policy_ids is None else _stored_targets(conn, key, period_start, period_end)
    if targets is None:
        targets = coaching_targets_of(inputs.frame, plan)
    priced = price_period(inputs, plan, targets)
    written = write_premiums(conn, priced, plan, period_start, period_end, kind=kind, actor=actor)
    if policy_ids is None and kind == "period":
        log_run(conn, plan, period_start, period_end, targets, policies=written,
                total_premium_cents=int(priced.explained["premium_cents"].sum()))
    return written


def reprice_partition(database_url: str, plan_version: str, period_start: date, period_end: date,
                      policy_ids: Sequence[str]) -> int:
    """One partition of a distributed repricing: its own connection, idempotent.

    ``database_url`` is the pricing side's connection (``provision.pricing_database_url``),
    refused if its role can read raw samples or secrets."""
    from telematics.store.privacy import connect_pricing

    with connect_pricing(database_url) as conn:
        plan = load_published_plan(conn, plan_version)
        written = reprice_period(conn, plan, period_start, period_end, list(policy_ids))
        conn.commit()
    return written


def policies_in_force(conn: psycopg.Connection[Any], period_start: date, period_end: date) -> list[str]:
    """Ids of the policies in force on some day of the period, sorted."""
    rows = conn.execute("SELECT policy_id FROM policies WHERE start_date < %s"
                        " AND (end_date IS NULL OR end_date > %s) ORDER BY policy_id",
                        (period_end, period_start)).fetchall()
    return [r[0] for r in rows]


# --- provisional ---------------------------------------------------------------------------

def provisional_period(time_zone: str, now: datetime) -> tuple[date, date]:
    """(first day of the local month, local today + 1): the month so far, in whole days."""
    if now.tzinfo is None:
        raise PricingError("now: must carry a time zone (UTC on the wire)")
    local = now.astimezone(ZoneInfo(time_zone)).date()
    return local.replace(day=1), local + timedelta(days=1)


def provisional_premium(conn: psycopg.Connection[Any], policy_id: str, now: datetime | None = None,
                        *, plan: Plan | None = None) -> dict[str, Any] | None:
    """The current month's premium so far under the plan in force, stored as the policy's
    provisional premium (replacing the last one) and returned; None if there is no such
    policy or it is not in force this month.

    Returns {"policy_id", "kind": "provisional", "plan_version", "period_start",
    "period_end", "amount", "premium_cents", "currency", "breakdown"}. Runs in the
    caller's transaction; call it after a trip is scored or a label changes.
    """
    return provisional_premiums(conn, [policy_id], now, plan=plan).get(policy_id)


def provisional_premiums(conn: psycopg.Connection[Any], policy_ids: Sequence[str],
                         now: datetime | None = None, *, plan: Plan | None = None
                         ) -> dict[str, dict[str, Any]]:
    """`provisional_premium` for many policies at once: one read, one pricing and one write
    per local month among them (policies in different time zones can be in different
    months). Policies unknown or not in force this month are left out of the result."""
    now = now or datetime.now(UTC)
    rows = conn.execute("SELECT policy_id, time_zone FROM policies WHERE policy_id = ANY(%s)",
                        (list(policy_ids),)).fetchall()
    if not rows:
        return {}
    by_period: dict[tuple[date, date], list[str]] = {}
    for policy_id, time_zone in rows:
        by_period.setdefault(provisional_period(str(time_zone), now), []).append(str(policy_id))
    plan = plan or plan_in_force(conn)
    key = plan_key(plan)
    targets = _latest_targets(conn, key) or {name: None for name in plan.behaviour_names}
    result: dict[str, dict[str, Any]] = {}
    for (period_start, period_end), ids in sorted(by_period.items()):
        inputs = read_period(conn, plan, period_start, period_end, sorted(ids))
        if len(inputs.frame) == 0:
            continue
        priced = price_period(inputs, plan, targets)
        write_premiums(conn, priced, plan, period_start, period_end, kind="provisional")
        for policy_id, breakdown in zip(inputs.frame["policy_id"], priced.breakdowns, strict=True):
            cents = int(breakdown["premium_cents"])
            result[str(policy_id)] = {
                "policy_id": str(policy_id), "kind": "provisional", "plan_version": key,
                "period_start": period_start.isoformat(), "period_end": period_end.isoformat(),
                "amount": str(minor_units_to_decimal(cents, plan.currency.minor_units)),
                "premium_cents": cents, "currency": plan.currency.code, "breakdown": breakdown}
    return result


# --- replay --------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredReplay:
    """A replay of stored premiums: every difference found, and a sha256 over the replayed
    premiums and lines (in premium_id order within each period)."""

    n_records: int
    problems: pd.DataFrame
    replayed_sha256: str
    code_versions: dict[str, int]
    unverifiable_hashes: int

    @property
    def ok(self) -> bool:
        return self.problems.empty

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.n_records, "mismatches": len(self.problems), "ok": self.ok,
            "replayed_sha256": self.replayed_sha256, "replay_code_version": code_version(),
            "recorded_code_versions": self.code_versions,
            "pseudonymised_hash_unverifiable": self.unverifiable_hashes,
            "first_mismatches": self.problems.head(20).astype(object).where(self.problems.head(20).notna(), None)
            .to_dict("records"),
        }


def _stored_record(amount: Any, breakdown: dict[str, Any], inputs: dict[str, Any],
                   code_version_: str, plan_document: dict[str, Any],
                   plan_sha256: str) -> dict[str, Any]:
    """A stored premium as the audit record it was written from (without its hash)."""
    minor = int(plan_document["currency"]["minor_units"])
    return {"inputs": inputs, "plan_id": plan_document["plan_id"],
            "plan_version": plan_document["version"], "plan_sha256": plan_sha256,
            "code_version": code_version_,
            "premium_cents": int((Decimal(amount) * (10 ** minor)).to_integral_value()),
            "breakdown_cents": {str(item["line"]): int(item["amount_cents"])
                                for item in breakdown.get("lines", [])}}


def reseal_pseudonymised(conn: psycopg.Connection[Any], policy_id: str | None = None) -> int:
    """Hash pseudonymised premiums again over what they now hold; return how many changed.

    Erasure replaces the identifiers inside a premium's inputs, but its stored hash was
    taken over the original record: anyone who knows the old policy id could recompute
    that hash and find the person's premiums again. Resealed, the hash covers the
    pseudonymised record (so replay verifies it) and links to nothing. ``policy_id`` (a
    pseudonym) limits the work to one erased policy; without it every pseudonymised
    premium whose hash does not match its record is resealed.
    """
    rows = conn.execute(
        "SELECT q.premium_id, q.amount, q.breakdown, q.inputs, q.code_version, q.sha256,"
        " r.document, r.sha256 FROM premiums q JOIN rating_plans r ON r.version = q.plan_version"
        " WHERE q.pseudonymised AND (%(p)s::text IS NULL OR q.policy_id = %(p)s)",
        {"p": policy_id}).fetchall()
    resealed = []
    for premium_id, amount, breakdown, inputs, version, sha, document, plan_sha in rows:
        digest = record_hash(_stored_record(amount, breakdown, inputs, version, document,
                                            plan_sha))
        if digest != sha or breakdown.get("record_sha256") != digest:
            resealed.append((digest, digest, premium_id))
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE premiums SET sha256 = %s,"
            " breakdown = jsonb_set(breakdown, '{record_sha256}', to_jsonb(%s::text))"
            " WHERE premium_id = %s", resealed)
    return len(resealed)


def replay_stored(conn: psycopg.Connection[Any], *, period_start: date | None = None, period_end: date | None = None,
                  plan_version: str | None = None, kind: str | None = None) -> StoredReplay:
    """Recompute stored premiums from their stored inputs and plan; report every cent of
    difference, a stored amount that disagrees with its breakdown, and a broken hash.

    A pseudonymised premium is resealed on erasure (see :func:`reseal_pseudonymised`) and
    verifies like any other; one erased before that holds a hash over its original record
    that can no longer be checked, counted as unverifiable (its premium and lines still are).
    """
    rows = conn.execute(
        "SELECT q.premium_id, q.policy_id, q.period_start, q.period_end, q.kind, q.amount, q.breakdown,"
        " q.inputs, q.code_version, q.sha256, q.pseudonymised, r.version, r.document, r.sha256"
        " FROM premiums q JOIN rating_plans r ON r.version = q.plan_version"
        " WHERE (%(s)s::date IS NULL OR q.period_start >= %(s)s::date)"
        " AND (%(e)s::date IS NULL OR q.period_end <= %(e)s::date)"
        " AND (%(p)s::text IS NULL OR q.plan_version = %(p)s) AND (%(k)s::text IS NULL OR q.kind = %(k)s)"
        " ORDER BY q.period_start, q.period_end, q.kind, q.premium_id",
        {"s": period_start, "e": period_end, "p": plan_version, "k": kind}).fetchall()
    plans: dict[str, dict[str, Any]] = {}
    problems: list[dict[str, Any]] = []
    # One replay document per (period, kind): within it a policy appears once per plan,
    # which is what the library's replay prices together.
    groups: dict[tuple[Any, Any, str], list[int]] = {}
    records: list[dict[str, Any]] = []
    for index, (premium_id, policy_id, start, end, row_kind, amount, breakdown, inputs, version, sha, _pseudo,
                key, document, plan_sha) in enumerate(rows):
        if plan_sha not in plans:
            plans[plan_sha] = _stored_plan(key, document, plan_sha, cache=False).to_dict()
        record = _stored_record(amount, breakdown, inputs, version, document, plan_sha)
        amount_cents = record["premium_cents"]
        record["record_sha256"] = sha
        records.append(record)
        groups.setdefault((start, end, row_kind), []).append(index)
        for field, stored, expected in (("breakdown.premium_cents", breakdown.get("premium_cents"), amount_cents),
                                        ("breakdown.record_sha256", breakdown.get("record_sha256"), sha)):
            if stored != expected:
                problems.append({"premium_id": premium_id, "policy_id": policy_id, "field": field,
                                 "stored": stored, "replayed": expected})
    unverifiable = 0
    digests = []
    versions: dict[str, int] = {}
    for indices in groups.values():
        report: ReplayReport = replay({"format": RECORDS_FORMAT, "plans": plans,
                                       "records": [records[i] for i in indices]})
        digests.append(report.replayed_sha256)
        for name, count in report.code_versions.items():
            versions[name] = versions.get(name, 0) + count
        for mismatch in report.mismatches.to_dict("records"):
            row = rows[indices[int(mismatch["record"])]]
            if row[10] and mismatch["field"] == "record_sha256":
                unverifiable += 1
                continue
            problems.append({"premium_id": int(row[0]), "policy_id": row[1], "field": mismatch["field"],
                             "stored": mismatch["stored"], "replayed": mismatch["replayed"]})
    frame = pd.DataFrame(problems, columns=["premium_id", "policy_id", "field", "stored", "replayed"])
    return StoredReplay(
        n_records=len(rows),
        problems=frame.sort_values(["premium_id", "field"], kind="stable").reset_index(drop=True),
        replayed_sha256=hashlib.sha256(canonical_json(digests).encode("utf-8")).hexdigest(),
        code_versions=versions, unverifiable_hashes=unverifiable)


# --- policy-level files --------------------------------------------------------------------

# The simulator's policy-level layout (``ubi simulate --policy-level``): observed rates per
# 100 km (or a share) and the period's km -> pricing numerators.
_SIMULATOR_RATES = {
    "harsh_brake_count": ("obs_harsh_brake_per_100km", 0.01),
    "harsh_accel_count": ("obs_harsh_accel_per_100km", 0.01),
    "harsh_corner_count": ("obs_harsh_corner_per_100km", 0.01),
    "speeding_count": ("obs_speeding_per_100km", 0.01),
    "night_dist_km": ("obs_night_share", 1.0),
}
_SIMULATOR_COLUMNS = ("exposure_years", "distance_km", "claim_count", "claim_amount")


def is_simulator_layout(frame: pd.DataFrame) -> bool:
    return all(c in frame.columns for c in _SIMULATOR_COLUMNS) and "period_days" not in frame.columns


def from_simulator_layout(frame: pd.DataFrame) -> pd.DataFrame:
    """Policy-level simulator rows in the pricing input layout (plus claims and gender).

    period_days = round(exposure_years x 365); every km is scored; counts = observed rate x
    km / 100, night km = observed share x km. Phone handling per hour has no km-based
    counterpart in the plan's units and is not mapped. Factors keep the simulator's levels
    as text (vehicle_group 1..5, region codes, the simulator's age bands).
    """
    missing = [c for c in _SIMULATOR_COLUMNS if c not in frame.columns]
    if missing:
        raise PricingError(f"{missing[0]}: required column of the policy-level layout is missing")
    km = frame["distance_km"].to_numpy(dtype=np.float64)
    days = np.rint(frame["exposure_years"].to_numpy(dtype=np.float64) * 365.0)
    out: dict[str, Any] = {
        "policy_id": frame["policy_id"].astype(str).to_numpy() if "policy_id" in frame else np.arange(len(frame)).astype(str),
        "period_days": np.clip(days, 1, 366).astype(np.int64),
        "dist_km": km,
        "scored_dist_km": km,
        "experience_dist_km": km,
    }
    for column in ("vehicle_group", "region", "age_band", "gender"):
        if column in frame.columns:
            out[column] = frame[column].astype(str).to_numpy(dtype=object)
    for numerator, (column, scale) in _SIMULATOR_RATES.items():
        if column in frame.columns:
            out[numerator] = frame[column].to_numpy(dtype=np.float64) * km * scale
    out["claim_count"] = frame["claim_count"].to_numpy()
    out["claim_amount"] = frame["claim_amount"].to_numpy(dtype=np.float64)
    return pd.DataFrame(out)


def fit_template(template: Plan, data: pd.DataFrame, *, relevel: bool) -> tuple[Plan, list[str]]:
    """The template reduced to the behaviours ``data`` measures and, with ``relevel``, with
    each a priori factor's levels taken from ``data`` (relativity 1.0 before the fit).
    Returns the template and the names of the behaviours dropped."""
    kept = tuple(b for b in template.behaviour if b.numerator in data.columns)
    dropped = [b.name for b in template.behaviour if b.numerator not in data.columns]
    changes: dict[str, Any] = {}
    if dropped:
        changes["behaviour"] = kept
    if relevel:
        tables = []
        for table in template.a_priori:
            if table.name not in data.columns:
                raise PricingError(f"{table.name}: a priori factor column is missing from the data")
            levels = sorted(data[table.name].dropna().astype(str).unique())
            tables.append(FactorTable(name=table.name, relativities=tuple((level, 1.0) for level in levels)))
        changes["a_priori"] = tuple(tables)
    if not changes:
        return template, dropped
    return plan_from_dict(dataclasses.replace(template, **changes).to_dict()), dropped


def json_dump(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, default=str)
