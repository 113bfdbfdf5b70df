"""The rating plan schema: strict, immutable, versioned, no protected attributes."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pricing.plan import Plan, PlanError, default_plan, load_plan, plan_from_dict, plan_from_json


def _document() -> dict[str, Any]:
    return copy.deepcopy(default_plan().to_dict())


def test_default_plan_round_trips(plan: Plan) -> None:
    again = plan_from_json(plan.to_json())
    assert again == plan
    assert again.sha256 == plan.sha256
    assert len(plan.sha256) == 64


def test_plan_is_frozen(plan: Plan) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.version = 2  # type: ignore[misc]


def test_new_version_links_to_parent(plan: Plan) -> None:
    successor = plan.new_version(description="tighter band", max_increase_per_period=0.1)
    assert successor.version == plan.version + 1
    assert successor.parent_sha256 == plan.sha256
    assert successor.sha256 != plan.sha256
    assert plan.max_increase_per_period == 0.15


def test_new_version_is_validated(plan: Plan) -> None:
    with pytest.raises(PlanError, match=r"^max_increase_per_period: "):
        plan.new_version(description="bad", max_increase_per_period=-0.1)


def test_save_refuses_to_overwrite(plan: Plan, tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    plan.save(target)
    assert load_plan(target) == plan
    with pytest.raises(FileExistsError):
        plan.save(target)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda d: d.update(surprise=1), "^surprise: unknown key"),
        (lambda d: d["currency"].update(symbol="€"), r"^currency\.symbol: unknown key"),
        (lambda d: d.pop("credibility"), "^credibility: required key is missing"),
        (lambda d: d["currency"].update(code="euro"), r"^currency\.code: "),
        (lambda d: d["currency"].update(rounding="ROUND_DOWN"), r"^currency\.rounding: "),
        (lambda d: d.update(base_rate_per_year=360.0), "^base_rate_per_year: money must be a decimal string"),
        (lambda d: d.update(base_rate_per_year="0"), "^base_rate_per_year: must be positive"),
        (lambda d: d["a_priori"]["region"]["relativities"].update(urban=-1), r"^a_priori\.region\.relativities\.urban: "),
        (lambda d: d["a_priori"].update(gender={"relativities": {"f": 0.9, "m": 1.1}}), r"^a_priori\.gender: .*protected"),
        (lambda d: d["a_priori"].update(driver_sex={"relativities": {"f": 1.0}}), r"^a_priori\.driver_sex: .*protected"),
        (lambda d: d["a_priori"].update(ethnic_origin={"relativities": {"x": 1.0}}), r"^a_priori\.ethnic_origin: .*protected"),
        (lambda d: d["a_priori"].update(religion={"relativities": {"x": 1.0}}), r"^a_priori\.religion: .*protected"),
        (lambda d: d["a_priori"].update(usage={"relativities": {"x": 1.0}}), r"^a_priori\.usage: .*reserved"),
        (lambda d: d["usage"].update(model="flat"), r"^usage\.model: "),
        (lambda d: d["usage"].update(daily_cap_km=0), r"^usage\.daily_cap_km: "),
        (lambda d: d["behaviour"]["speeding"].update(edges=[0.1, 0.05, 0.2, 0.3]), r"^behaviour\.speeding\.edges\[1\]: must be strictly increasing"),
        (lambda d: d["behaviour"]["speeding"].update(relativities=[1.0]), r"^behaviour\.speeding\.relativities: "),
        (lambda d: d["behaviour"]["speeding"].update(unit="per_hour"), r"^behaviour\.speeding\.unit: "),
        (lambda d: d["behaviour"]["night_driving"].update(edges=[0.5, 1.5]), r"^behaviour\.night_driving\.edges: a share"),
        (lambda d: d["behaviour"]["speeding"].update(numerator="night_dist_km"), r"^behaviour\.speeding\.numerator: already used"),
        (lambda d: d["telematics_band"].update(min=1.2), r"^telematics_band\.min: "),
        (lambda d: d["credibility"].update(k_km="1000"), r"^credibility\.k_km: must be a number"),
        (lambda d: d.update(version=0), "^version: "),
        (lambda d: d.update(minimum_premium_per_year="1000.00"), "^minimum_premium_per_year: must not exceed"),
        (lambda d: d["missing_data"].update(behaviour="worst_bin"), r"^missing_data\.behaviour: "),
        (lambda d: d.update(effective_from="01/12/2026"), "^effective_from: "),
    ],
)
def test_rejects_bad_documents_naming_the_key(edit: Any, path: str) -> None:
    document = _document()
    edit(document)
    with pytest.raises(PlanError, match=path):
        plan_from_dict(document)


def test_exposure_curve_usage_is_accepted_and_must_not_decrease() -> None:
    document = _document()
    document["usage"] = {"model": "exposure_curve", "km_per_year": [0, 5000, 15000, 40000],
                         "relativities": [0.6, 0.85, 1.0, 1.4]}
    assert plan_from_dict(document).usage.model == "exposure_curve"
    document["usage"]["relativities"] = [0.6, 0.85, 0.8, 1.4]
    with pytest.raises(PlanError, match=r"^usage\.relativities\[2\]: must not decrease"):
        plan_from_dict(document)


def test_rejects_nan_in_json() -> None:
    text = json.dumps(_document()).replace('"max_increase_per_period": 0.15', '"max_increase_per_period": NaN')
    with pytest.raises(PlanError, match="NaN"):
        plan_from_json(text)
