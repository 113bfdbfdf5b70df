"""Audit records replay to the cent, whatever the time zone, locale or hash seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pricing.audit import (
    audit_records,
    code_version,
    read_records,
    record_hash,
    records_document,
    replay,
    write_records,
)
from pricing.breakdown import price_with_breakdown
from pricing.cli import main
from pricing.plan import Plan
from pricing.synthetic import synthetic_portfolio

REPO = Path(__file__).resolve().parents[2]


def test_records_replay_and_detect_tampering(portfolio: pd.DataFrame, plan: Plan) -> None:
    records = audit_records(portfolio.iloc[:300], plan)
    document = json.loads(json.dumps(records_document([plan], records)))
    report = replay(document)
    assert report.ok and report.n_records == 300
    record = document["records"][7]
    assert record["record_sha256"] == record_hash(record)
    assert sum(record["breakdown_cents"].values()) == record["premium_cents"]
    assert record["code_version"] == code_version()

    record["premium_cents"] += 1
    tampered = replay(document)
    assert set(tampered.mismatches["field"]) == {"record_sha256", "premium_cents"}
    assert set(tampered.mismatches["record"]) == {7}


def test_replay_reports_a_missing_plan(portfolio: pd.DataFrame, plan: Plan) -> None:
    document = records_document([], audit_records(portfolio.iloc[:3], plan))
    report = replay(document)
    assert not report.ok and set(report.mismatches["field"]) == {"plan_sha256"}


ENVIRONMENTS = [
    {"TZ": "UTC", "LC_ALL": "C", "PYTHONHASHSEED": "0"},
    {"TZ": "Pacific/Chatham", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "4242"},
    {"TZ": "America/St_Johns", "LANG": "C.utf8", "PYTHONHASHSEED": "random"},
]


@pytest.mark.slow
def test_replay_of_ten_thousand_premiums_is_identical_across_processes(plan: Plan, tmp_path: Path) -> None:
    policies = synthetic_portfolio(10_000, plan, seed=31337)
    explained = price_with_breakdown(policies, plan)
    path = tmp_path / "records.json"
    write_records(path, [plan], audit_records(policies, plan, explained))
    in_process = replay(read_records(path))
    assert in_process.ok
    digests = set()
    for overrides in ENVIRONMENTS:
        env = {k: v for k, v in os.environ.items() if k not in {"TZ", "LC_ALL", "LANG", "PYTHONHASHSEED"}}
        env.update(overrides)
        completed = subprocess.run([sys.executable, "-m", "pricing.cli", "replay", "--records", str(path)],
                                   capture_output=True, text=True, env=env, cwd=REPO)
        assert completed.returncode == 0, completed.stderr
        report = json.loads(completed.stdout)
        assert report["records"] == 10_000 and report["mismatches"] == 0
        digests.add(report["replayed_sha256"])
    assert digests == {in_process.replayed_sha256}


def test_replay_command_fails_on_a_cent(plan: Plan, tmp_path: Path) -> None:
    policies = synthetic_portfolio(50, plan, seed=1)
    records = audit_records(policies, plan)
    records[0]["premium_cents"] += 1
    records[0]["record_sha256"] = record_hash(records[0])
    path = tmp_path / "records.json"
    write_records(path, [plan], records)
    assert main(["replay", "--records", str(path)]) == 1
