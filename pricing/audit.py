"""Audit records of premiums and their replay to the cent.

A record holds the rating inputs snapshot of one policy period, the plan (id, version,
sha256), the code version, the premium and its breakdown in minor units, and the sha256
of its canonical JSON (sorted keys, no whitespace, ASCII, floats in shortest round-trip
form), so the same record hashes the same in any time zone, locale or hash seed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pricing.breakdown import factor_names, price_with_breakdown
from pricing.plan import Plan, canonical_json, plan_from_dict

RECORDS_FORMAT = "ubi-pricing-records/1"
_OPTIONAL_INPUTS = ("experience_dist_km", "billable_dist_km", "previous_premium_cents", "previous_usage_exposure_years")


@cache
def code_version() -> str:
    """sha256 over the pricing package's source files (sorted by name), first 16 hex digits."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode("utf-8") + b"\0" + source.read_bytes() + b"\0")
    return f"pricing-src-{digest.hexdigest()[:16]}"


def input_columns(plan: Plan, policies: pd.DataFrame) -> list[str]:
    """The columns the plan reads from ``policies``, in a fixed order."""
    columns = ["policy_id", "period_days", "dist_km", "scored_dist_km"]
    columns += [c for c in _OPTIONAL_INPUTS if c in policies.columns]
    columns += list(plan.factor_names) + [b.numerator for b in plan.behaviour]
    return columns


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if math.isnan(number) else number
    return str(value)


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def audit_records(policies: pd.DataFrame, plan: Plan, explained: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One audit record per row of ``policies`` (priced now unless ``explained`` is given)."""
    if explained is None:
        explained = price_with_breakdown(policies, plan)
    columns = input_columns(plan, policies)
    lines = ["base", *factor_names(plan)]
    snapshot = policies[columns].astype(object).to_numpy()
    cents = np.column_stack(
        [explained["base_cents"].to_numpy()] + [explained[f"contribution_{n}_cents"].to_numpy() for n in lines[1:]]
    )
    premiums = explained["premium_cents"].to_numpy()
    version = code_version()
    # Plan.sha256 serialises the whole plan: once per call, not once per record.
    plan_sha256 = plan.sha256
    records = []
    for row in range(len(policies)):
        record: dict[str, Any] = {
            "inputs": {c: _json_value(v) for c, v in zip(columns, snapshot[row], strict=True)},
            "plan_id": plan.plan_id,
            "plan_version": plan.version,
            "plan_sha256": plan_sha256,
            "code_version": version,
            "premium_cents": int(premiums[row]),
            "breakdown_cents": {line: int(v) for line, v in zip(lines, cents[row], strict=True)},
        }
        record["record_sha256"] = record_hash(record)
        records.append(record)
    return records


def records_document(plans: Iterable[Plan], records: list[dict[str, Any]]) -> dict[str, Any]:
    """A self-contained replay file: the plans by sha256 and the records."""
    return {"format": RECORDS_FORMAT, "plans": {p.sha256: p.to_dict() for p in plans}, "records": records}


def write_records(path: str | Path, plans: Iterable[Plan], records: list[dict[str, Any]]) -> None:
    Path(path).write_text(canonical_json(records_document(plans, records)) + "\n", encoding="utf-8")


def read_records(path: str | Path) -> dict[str, Any]:
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format") != RECORDS_FORMAT:
        raise ValueError(f"{path}: not a {RECORDS_FORMAT} document")
    for key in ("plans", "records"):
        if key not in document:
            raise ValueError(f"{path}: key {key!r} is missing")
    return document


@dataclass(frozen=True)
class ReplayReport:
    """Differences found, and a sha256 over every replayed premium and line in record order."""

    n_records: int
    mismatches: pd.DataFrame
    replayed_sha256: str
    code_versions: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.mismatches.empty

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.n_records,
            "mismatches": len(self.mismatches),
            "ok": self.ok,
            "replayed_sha256": self.replayed_sha256,
            "replay_code_version": code_version(),
            "recorded_code_versions": self.code_versions,
            "first_mismatches": [
                {k: _json_value(v) for k, v in row.items()} for row in self.mismatches.head(20).to_dict("records")
            ],
        }


def replay(document: dict[str, Any]) -> ReplayReport:
    """Recompute every record's premium and breakdown; report any difference of a cent.

    A record whose stored hash does not match its content is reported as tampered.
    """
    records = document["records"]
    plans = {sha: plan_from_dict(body) for sha, body in document["plans"].items()}
    problems: list[dict[str, Any]] = []
    replayed_rows: list[list[int]] = [[] for _ in records]
    versions: dict[str, int] = {}
    by_plan: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        versions[record["code_version"]] = versions.get(record["code_version"], 0) + 1
        policy_id = record["inputs"].get("policy_id")
        if record_hash(record) != record.get("record_sha256"):
            problems.append({"record": index, "policy_id": policy_id, "field": "record_sha256",
                             "stored": record.get("record_sha256"), "replayed": record_hash(record)})
        by_plan.setdefault(record["plan_sha256"], []).append(index)
    for sha, indices in by_plan.items():
        if sha not in plans:
            problems.extend({"record": i, "policy_id": records[i]["inputs"].get("policy_id"), "field": "plan_sha256",
                             "stored": sha, "replayed": None} for i in indices)
            continue
        plan = plans[sha]
        if plan.sha256 != sha:
            raise ValueError(f"plans.{sha}: the plan document hashes to {plan.sha256}")
        policies = pd.DataFrame.from_records([records[i]["inputs"] for i in indices])
        explained = price_with_breakdown(policies, plan)
        lines = ["base", *factor_names(plan)]
        replayed = {
            "premium_cents": explained["premium_cents"].to_numpy(),
            "breakdown_cents.base": explained["base_cents"].to_numpy(),
        }
        replayed.update({f"breakdown_cents.{n}": explained[f"contribution_{n}_cents"].to_numpy() for n in lines[1:]})
        for position, record_index in enumerate(indices):
            replayed_rows[record_index] = [int(values[position]) for values in replayed.values()]
        for name, values in replayed.items():
            if name == "premium_cents":
                stored = np.asarray([records[i]["premium_cents"] for i in indices])
            else:
                line = name.split(".", 1)[1]
                stored = np.asarray([records[i]["breakdown_cents"].get(line, -1) for i in indices])
            for differing in np.flatnonzero(stored != values):
                record_index = indices[int(differing)]
                problems.append({"record": record_index, "policy_id": records[record_index]["inputs"].get("policy_id"),
                                 "field": name, "stored": int(stored[differing]), "replayed": int(values[differing])})
    mismatches = pd.DataFrame(problems, columns=["record", "policy_id", "field", "stored", "replayed"])
    digest = hashlib.sha256(canonical_json(replayed_rows).encode("utf-8")).hexdigest()
    return ReplayReport(n_records=len(records), mismatches=mismatches, replayed_sha256=digest, code_versions=versions)
