"""A stored premium read for people: its breakdown checked, classified and replayed."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from pricing.audit import RECORDS_FORMAT, replay
from pricing.breakdown import ADJUSTMENT_FACTORS
from pricing.money import minor_units_to_decimal
from pricing.plan import Plan, PlanError, plan_from_dict
from pricing.rating import RatingInputError
from telematics.store.workbench import PlanRow, PremiumRow

log = logging.getLogger("ubi.service")
LINE_FIELDS = ("factor", "numerator", "scored_dist_km", "value", "relativity", "credibility_z")
BEHAVIOUR_TEXT = {
    "harsh_braking": "harsh braking", "harsh_acceleration": "harsh acceleration",
    "harsh_cornering": "harsh cornering", "night_driving": "night driving",
    "speeding": "speeding", "phone_handling": "phone handling while driving",
    "urban_driving": "urban driving", "motorway_driving": "motorway driving",
}
UNIT_TEXT = {"per_100km": "per 100 km", "share_of_km": "share of km",
             "minutes_per_100km": "minutes per 100 km"}


class BreakdownError(ValueError):
    """A stored breakdown does not follow the premium data contract; names the field."""


@dataclass(frozen=True)
class Line:
    line: str
    kind: str  # base, a_priori, usage, behaviour, adjustment
    amount_cents: int
    factor: float | None
    numerator: float | None
    scored_dist_km: float | None
    value: float | None
    relativity: float | None
    credibility_z: float | None
    unit: str | None = None
    numerator_name: str | None = None

    @property
    def label(self) -> str:
        return BEHAVIOUR_TEXT.get(self.line, self.line.replace("_", " "))


@dataclass(frozen=True)
class PremiumView:
    row: PremiumRow
    plan: Plan | None
    currency: str
    minor_units: int
    premium_cents: int
    base_cents: int
    lines: tuple[Line, ...]  # the base first, then every factor line
    credibility_z: float | None
    telematics_factor: float | None
    changes: dict[str, int] | None
    change_text: str | None
    coaching: dict[str, Any] | None
    record_sha256: str | None
    problems: tuple[str, ...] = field(default=())

    def money(self, cents: int) -> Decimal:
        return minor_units_to_decimal(int(cents), self.minor_units)

    @property
    def behaviour_lines(self) -> tuple[Line, ...]:
        return tuple(line for line in self.lines if line.kind == "behaviour")

    @property
    def lines_total_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)


def _integer(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BreakdownError(f"{path}: must be an integer number of minor units, got {value!r}")
    return value


def _optional_float(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BreakdownError(f"{path}: must be a number or null, got {value!r}")
    number = float(value)
    return number if math.isfinite(number) else None


_plans: dict[tuple[str, str], Plan | None] = {}


def load_plan(plan_row: PlanRow | None) -> Plan | None:
    """The stored plan document parsed, None if it is not a valid plan. Plans are
    immutable, so each (version, sha256) is parsed once per process."""
    if plan_row is None:
        return None
    key = (plan_row.version, plan_row.sha256)
    if key not in _plans:
        try:
            _plans[key] = plan_from_dict(plan_row.document)
        except PlanError:
            _plans[key] = None
    return _plans[key]


def _kind(name: str, plan: Plan | None) -> str:
    if name == "base":
        return "base"
    if name == "usage":
        return "usage"
    if name in ADJUSTMENT_FACTORS:
        return "adjustment"
    if plan is not None and name in plan.behaviour_names:
        return "behaviour"
    if plan is not None and name in plan.factor_names:
        return "a_priori"
    return "behaviour" if name in BEHAVIOUR_TEXT else "a_priori"


def premium_view(row: PremiumRow, plan: Plan | None) -> PremiumView:
    """Check the breakdown against the contract and classify its lines.

    Raises BreakdownError naming the first field that breaks the contract; a breakdown
    whose lines do not add up to its premium is returned with the problem listed.
    """
    doc = row.breakdown
    if not isinstance(doc, dict):
        raise BreakdownError("breakdown: must be an object")
    for key in ("premium_cents", "base_cents", "lines"):
        if key not in doc:
            raise BreakdownError(f"breakdown.{key}: required key is missing")
    premium_cents = _integer(doc["premium_cents"], "breakdown.premium_cents")
    base_cents = _integer(doc["base_cents"], "breakdown.base_cents")
    if not isinstance(doc["lines"], list):
        raise BreakdownError("breakdown.lines: must be a list")
    behaviour = {b.name: b for b in plan.behaviour} if plan else {}
    lines: list[Line] = []
    for i, raw in enumerate(doc["lines"]):
        path = f"breakdown.lines[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("line"), str):
            raise BreakdownError(f"{path}.line: must be an object with a text 'line'")
        name = raw["line"]
        table = behaviour.get(name)
        lines.append(Line(
            line=name, kind=_kind(name, plan),
            amount_cents=_integer(raw.get("amount_cents"), f"{path}.amount_cents"),
            **{f: _optional_float(raw.get(f), f"{path}.{f}") for f in LINE_FIELDS},
            unit=UNIT_TEXT.get(table.unit) if table else None,
            numerator_name=table.numerator if table else None))
    if not lines or lines[0].line != "base":
        lines.insert(0, Line("base", "base", base_cents, 1.0, None, None, None, None, None))
    problems = []
    if lines[0].amount_cents != base_cents:
        problems.append(f"the base line ({lines[0].amount_cents}) differs from base_cents "
                        f"({base_cents})")
    total = sum(line.amount_cents for line in lines)
    if total != premium_cents:
        problems.append(f"the lines sum to {total} minor units, the premium is {premium_cents}")
    minor = plan.currency.minor_units if plan else 2
    if minor_units_to_decimal(premium_cents, minor) != Decimal(row.amount):
        problems.append(f"the stored amount {row.amount} differs from premium_cents "
                        f"{premium_cents}")
    telematics = None
    factors = [line.factor for line in lines if line.kind == "behaviour" or
               line.line == "telematics_band"]
    if factors and all(f is not None for f in factors):
        telematics = math.prod(f for f in factors if f is not None)
    changes = doc.get("changes")
    if changes is not None and not (isinstance(changes, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in changes.values())):
        raise BreakdownError("breakdown.changes: must be an object of line: minor units, or null")
    coaching = doc.get("coaching")
    if coaching is not None and not isinstance(coaching, dict):
        raise BreakdownError("breakdown.coaching: must be an object or null")
    return PremiumView(
        row=row, plan=plan, currency=str(doc.get("currency") or row.currency), minor_units=minor,
        premium_cents=premium_cents, base_cents=base_cents, lines=tuple(lines),
        credibility_z=_optional_float(doc.get("credibility_z"), "breakdown.credibility_z"),
        telematics_factor=telematics, changes=changes,
        change_text=doc.get("change_text") if isinstance(doc.get("change_text"), str) else None,
        coaching=coaching,
        record_sha256=doc.get("record_sha256") if isinstance(doc.get("record_sha256"), str)
        else None, problems=tuple(problems))


def changes_between(current: PremiumView, previous: PremiumView | None) -> dict[str, int]:
    """Each line's change in minor units (current - previous); the stored `changes` when the
    pricing job wrote them, else computed from the two breakdowns."""
    if current.changes is not None:
        return dict(current.changes)
    if previous is None:
        return {}
    before = {line.line: line.amount_cents for line in previous.lines}
    after = {line.line: line.amount_cents for line in current.lines}
    names = [*after, *(n for n in before if n not in after)]
    return {n: after.get(n, 0) - before.get(n, 0) for n in names
            if after.get(n, 0) != before.get(n, 0)}


@dataclass(frozen=True)
class ReplayOutcome:
    """A stored premium recomputed from its inputs and plan."""

    identical: bool
    premium_cents: int | None
    differences: tuple[dict[str, Any], ...]
    record_hash_ok: bool | None
    plan_hash_ok: bool | None
    error: str | None
    replay_code_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "premium_cents": self.premium_cents,
                "differences": list(self.differences), "record_hash_ok": self.record_hash_ok,
                "plan_hash_ok": self.plan_hash_ok, "error": self.error,
                "replay_code_version": self.replay_code_version}


def replay_premium(view: PremiumView, plan_row: PlanRow | None) -> ReplayOutcome:
    """Recompute the premium and every line from the stored inputs and plan with the
    audit replay, and report each difference of a minor unit."""
    from pricing.audit import code_version

    plan = view.plan
    if plan is None or plan_row is None:
        return ReplayOutcome(False, None, (), None, None,
                             f"plan version '{view.row.plan_version}' is missing or invalid")
    record = {
        "inputs": view.row.inputs, "plan_id": plan.plan_id, "plan_version": plan.version,
        "plan_sha256": plan.sha256, "code_version": view.row.code_version,
        "premium_cents": view.premium_cents,
        "breakdown_cents": {line.line: line.amount_cents for line in view.lines},
        "record_sha256": view.record_sha256,
    }
    document = {"format": RECORDS_FORMAT, "plans": {plan.sha256: plan.to_dict()},
                "records": [record]}
    try:
        report = replay(document)
    except (RatingInputError, KeyError, TypeError, ValueError) as error:
        return ReplayOutcome(False, None, (), None, plan.sha256 == plan_row.sha256,
                             f"the stored inputs cannot be replayed: {error}", code_version())
    differences: list[dict[str, Any]] = []
    record_ok = True
    mismatches = report.mismatches
    for name, stored, replayed in zip(mismatches["field"].tolist(), mismatches["stored"].tolist(),
                                      mismatches["replayed"].tolist(), strict=True):
        if name == "record_sha256":
            record_ok = False
            continue
        differences.append({"field": str(name), "stored": int(stored), "replayed": int(replayed)})
    replayed_premium = view.premium_cents
    for difference in differences:
        if difference["field"] == "premium_cents":
            replayed_premium = int(difference["replayed"])
    if view.record_sha256 is None:
        record_ok = False
    return ReplayOutcome(identical=not differences, premium_cents=replayed_premium,
                         differences=tuple(differences), record_hash_ok=record_ok,
                         plan_hash_ok=plan.sha256 == plan_row.sha256, error=None,
                         replay_code_version=code_version())


def reprice_provisional(conn: Any, policy_id: str) -> None:
    """The provisional premium again after an underwriter's label change, in the same
    transaction on the pricing side's connection, so the workbench shows its effect at once
    (a device's change marks the policy due instead). A pricing failure must not lose the
    label: it is logged and the premium waits for the next trip or the period's
    repricing."""
    from telematics.rating import provisional_premium

    try:
        with conn.transaction():
            provisional_premium(conn, policy_id)
    except psycopg.OperationalError:
        raise  # the database is down: the whole request fails with 503 and is retried
    except Exception:
        log.exception("provisional premium of %s failed; it waits for the next trip or "
                      "the period's repricing", policy_id)
