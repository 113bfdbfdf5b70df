"""The file-based price commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pricing.cli import main
from pricing.plan import DEFAULT_PLAN_PATH, Plan, load_plan
from pricing.synthetic import synthetic_portfolio


def test_calibrate_validate_reprice_replay(plan: Plan, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    portfolio = synthetic_portfolio(8_000, plan, seed=2)
    counts = rng.poisson(0.5, len(portfolio)).astype(float)
    data = portfolio.assign(claim_count=counts, claim_amount=counts * rng.gamma(2.0, 500.0, len(portfolio)))
    data_path = tmp_path / "claims.parquet"
    data.to_parquet(data_path)
    plan_path = tmp_path / "plan-v2.json"

    assert main(["calibrate", "--data", str(data_path), "--out", str(plan_path), "--method", "tweedie"]) == 0
    summary = json.loads(capsys.readouterr().out)
    new_plan = load_plan(plan_path)
    assert summary["plan_sha256"] == new_plan.sha256 and new_plan.parent_sha256 == plan.sha256
    intercept = summary["coefficients"]["pure_premium"][0]
    assert intercept["term"] == "intercept" and intercept["std_error"] > 0
    assert main(["calibrate", "--data", str(data_path), "--out", str(plan_path)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err

    assert main(["validate", "--plan", str(plan_path), "--data", str(data_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"gini", "lift", "observed_over_expected", "frequency_deviance", "fairness"} <= set(report)

    records_path = tmp_path / "records.json"
    assert main(["reprice", "--plan", str(DEFAULT_PLAN_PATH), "--data", str(data_path),
                 "--records", str(records_path)]) == 0
    capsys.readouterr()
    assert main(["replay", "--records", str(records_path)]) == 0
    assert json.loads(capsys.readouterr().out)["mismatches"] == 0


def test_bad_input_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "data.txt"
    bad.write_text("x")
    assert main(["validate", "--plan", str(DEFAULT_PLAN_PATH), "--data", str(bad)]) == 2
    assert "expected a .parquet or .csv file" in capsys.readouterr().err
