"""The rating plan: an immutable, versioned, strictly validated JSON document."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from pricing.money import RoundingMode, parse_money

SCHEMA = "ubi-rating-plan/1"

BehaviourUnit = Literal["per_100km", "share_of_km", "minutes_per_100km"]
MissingBehaviourRule = Literal["neutral", "best_bin"]
UsageModelName = Literal["pay_per_km", "exposure_curve"]

# Attributes that may be audited against but never rated on (EU Test-Achats ruling and
# equality law). Matched on the normalised factor name.
PROTECTED_ATTRIBUTE_TOKENS = (
    "gender",
    "sex",
    "religion",
    "religious",
    "belief",
    "ethnicity",
    "ethnic",
    "race",
    "racial",
    "nationality",
    "disability",
    "pregnancy",
    "maternity",
    "sexualorientation",
)

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
# Columns the rating engine reads itself; a factor may not shadow them.
RESERVED_COLUMNS = frozenset(
    {
        "policy_id",
        "period_days",
        "dist_km",
        "scored_dist_km",
        "experience_dist_km",
        "billable_dist_km",
        "previous_premium_cents",
        "previous_usage_exposure_years",
    }
)


# Names the rating output uses for its own factors; a table may not take them.
RESERVED_FACTOR_NAMES = frozenset(
    {"base", "usage", "a_priori", "telematics", "telematics_band", "increase_cap", "minimum_premium", "credibility"}
)


class PlanError(ValueError):
    """A rating plan document is invalid; the message starts with the offending key path."""


def _fail(path: str, problem: str) -> PlanError:
    return PlanError(f"{path}: {problem}")


def _expect_object(value: Any, path: str, required: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - required)
    if unknown:
        raise _fail(f"{path}.{unknown[0]}" if path else unknown[0], "unknown key")
    missing = sorted(required - set(value))
    if missing:
        raise _fail(f"{path}.{missing[0]}" if path else missing[0], "required key is missing")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _number(value: Any, path: str, *, minimum: float | None = None, maximum: float | None = None,
            strict_minimum: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise _fail(path, f"must be finite, got {value!r}")
    if minimum is not None and (number <= minimum if strict_minimum else number < minimum):
        relation = ">" if strict_minimum else ">="
        raise _fail(path, f"must be {relation} {minimum:g}, got {value!r}")
    if maximum is not None and number > maximum:
        raise _fail(path, f"must be <= {maximum:g}, got {value!r}")
    return number


def _integer(value: Any, path: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise _fail(path, f"must be in {minimum}..{maximum}, got {value}")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"must be a string, got {value!r}")
    return value


def _name(value: Any, path: str) -> str:
    text = _string(value, path)
    if not _NAME_PATTERN.match(text):
        raise _fail(path, f"must be a snake_case name of at most 63 characters, got {text!r}")
    return text


def _money(value: Any, path: str, minor_units: int) -> Decimal:
    try:
        return parse_money(value, minor_units, path)
    except ValueError as error:
        raise PlanError(str(error)) from error


def _relativity(value: Any, path: str) -> float:
    return _number(value, path, minimum=0.0, strict_minimum=True, maximum=100.0)


def _reject_protected(name: str, path: str) -> None:
    if name in RESERVED_FACTOR_NAMES:
        raise _fail(path, f"{name!r} is reserved for the engine's own breakdown lines")
    normalised = re.sub(r"[^a-z]", "", name.lower())
    for token in PROTECTED_ATTRIBUTE_TOKENS:
        if token in normalised:
            raise _fail(path, f"{name!r} is a protected attribute ({token}) and may not be a rating factor")


def _increasing(values: list[Any], path: str, *, minimum: float | None = None) -> tuple[float, ...]:
    if not isinstance(values, list) or not values:
        raise _fail(path, "must be a non-empty list of numbers")
    numbers = tuple(_number(v, f"{path}[{i}]", minimum=minimum) for i, v in enumerate(values))
    for i in range(1, len(numbers)):
        if numbers[i] <= numbers[i - 1]:
            raise _fail(f"{path}[{i}]", "must be strictly increasing")
    return numbers


def bin_index(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Index of each value's bin: the number of edges <= value (bisect_right); NaN gives 0."""
    # A few vectorised comparisons beat np.searchsorted on short edge lists by ~10x.
    index = np.zeros(np.shape(values), dtype=np.intp)
    for edge in edges:
        index += values >= edge
    return index


@dataclass(frozen=True)
class Currency:
    code: str
    minor_units: int
    rounding: RoundingMode


@dataclass(frozen=True)
class FactorTable:
    """A priori relativities of one classical factor, keyed by the level's text."""

    name: str
    relativities: tuple[tuple[str, float], ...]

    def as_dict(self) -> dict[str, float]:
        return dict(self.relativities)


@dataclass(frozen=True)
class PayPerKm:
    """Premium of the reference risk = base rate pro rata + per-km rate x billable km."""

    per_km_rate: Decimal
    daily_cap_km: float
    model: Literal["pay_per_km"] = "pay_per_km"


@dataclass(frozen=True)
class ExposureCurve:
    """Usage factor interpolated (linearly, flat outside) in annualised km."""

    km_per_year: tuple[float, ...]
    relativities: tuple[float, ...]
    model: Literal["exposure_curve"] = "exposure_curve"


UsageModel = PayPerKm | ExposureCurve


@dataclass(frozen=True)
class BehaviourTable:
    """A binned behaviour: value = numerator / scored km (x 100 for per-100-km units).

    Bin i holds values in [edges[i-1], edges[i]); len(relativities) == len(edges) + 1.
    """

    name: str
    numerator: str
    unit: BehaviourUnit
    edges: tuple[float, ...]
    relativities: tuple[float, ...]

    def relativity_of(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(self.relativities)[bin_index(values, self.edges)]


@dataclass(frozen=True)
class Credibility:
    """Buhlmann-Straub constant k = EPV / VHM in km: Z = km / (km + k_km)."""

    k_km: float


@dataclass(frozen=True)
class Band:
    minimum: float
    maximum: float


@dataclass(frozen=True)
class MissingData:
    """What a behaviour without usable data contributes: neutral (1.0) or its best bin."""

    behaviour: MissingBehaviourRule
    min_scored_dist_km: float


@dataclass(frozen=True)
class Plan:
    plan_id: str
    version: int
    parent_sha256: str | None
    effective_from: date
    description: str
    currency: Currency
    base_rate_per_year: Decimal
    a_priori: tuple[FactorTable, ...]
    usage: UsageModel
    behaviour: tuple[BehaviourTable, ...]
    credibility: Credibility
    telematics_band: Band
    max_increase_per_period: float
    minimum_premium_per_year: Decimal
    missing_data: MissingData

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        usage: dict[str, Any]
        if isinstance(self.usage, PayPerKm):
            usage = {
                "model": "pay_per_km",
                "per_km_rate": str(self.usage.per_km_rate),
                "daily_cap_km": self.usage.daily_cap_km,
            }
        else:
            usage = {
                "model": "exposure_curve",
                "km_per_year": list(self.usage.km_per_year),
                "relativities": list(self.usage.relativities),
            }
        return {
            "schema": SCHEMA,
            "plan_id": self.plan_id,
            "version": self.version,
            "parent_sha256": self.parent_sha256,
            "effective_from": self.effective_from.isoformat(),
            "description": self.description,
            "currency": {
                "code": self.currency.code,
                "minor_units": self.currency.minor_units,
                "rounding": self.currency.rounding,
            },
            "base_rate_per_year": str(self.base_rate_per_year),
            "a_priori": {t.name: {"relativities": t.as_dict()} for t in self.a_priori},
            "usage": usage,
            "behaviour": {
                b.name: {
                    "numerator": b.numerator,
                    "unit": b.unit,
                    "edges": list(b.edges),
                    "relativities": list(b.relativities),
                }
                for b in self.behaviour
            },
            "credibility": {"k_km": self.credibility.k_km},
            "telematics_band": {
                "min": self.telematics_band.minimum,
                "max": self.telematics_band.maximum,
            },
            "max_increase_per_period": self.max_increase_per_period,
            "minimum_premium_per_year": str(self.minimum_premium_per_year),
            "missing_data": {
                "behaviour": self.missing_data.behaviour,
                "min_scored_dist_km": self.missing_data.min_scored_dist_km,
            },
        }

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.a_priori)

    @property
    def behaviour_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.behaviour)

    def new_version(self, *, description: str, effective_from: date | None = None, **changes: Any) -> Plan:
        """A successor plan (version + 1, parent = this plan's sha256), validated afresh."""
        successor = dataclasses.replace(
            self,
            version=self.version + 1,
            parent_sha256=self.sha256,
            description=description,
            effective_from=effective_from or self.effective_from,
            **changes,
        )
        return plan_from_dict(successor.to_dict())

    def save(self, path: str | Path) -> None:
        """Write the plan; an existing file is never overwritten (plans are immutable)."""
        target = Path(path)
        with target.open("x", encoding="utf-8") as handle:
            handle.write(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


def canonical_json(document: Any) -> str:
    """Key-sorted, compact, ASCII JSON: the same bytes in every process and locale."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _parse_usage(value: Any, path: str, minor_units: int) -> UsageModel:
    if not isinstance(value, Mapping) or "model" not in value:
        raise _fail(_join(path, "model"), "required key is missing")
    model = value["model"]
    if model == "pay_per_km":
        body = _expect_object(value, path, {"model", "per_km_rate", "daily_cap_km"})
        return PayPerKm(
            per_km_rate=_money(body["per_km_rate"], _join(path, "per_km_rate"), minor_units),
            daily_cap_km=_number(body["daily_cap_km"], _join(path, "daily_cap_km"), minimum=0.0,
                                 strict_minimum=True, maximum=5000.0),
        )
    if model == "exposure_curve":
        body = _expect_object(value, path, {"model", "km_per_year", "relativities"})
        knots = _increasing(body["km_per_year"], _join(path, "km_per_year"), minimum=0.0)
        rel_path = _join(path, "relativities")
        raw = body["relativities"]
        if not isinstance(raw, list) or len(raw) != len(knots):
            raise _fail(rel_path, f"must be a list of {len(knots)} numbers, one per km_per_year knot")
        relativities = tuple(_relativity(v, f"{rel_path}[{i}]") for i, v in enumerate(raw))
        for i in range(1, len(relativities)):
            if relativities[i] < relativities[i - 1]:
                raise _fail(f"{rel_path}[{i}]", "must not decrease: more km never costs less")
        return ExposureCurve(km_per_year=knots, relativities=relativities)
    raise _fail(_join(path, "model"), f"must be 'pay_per_km' or 'exposure_curve', got {model!r}")


def _parse_behaviour(name: str, value: Any, path: str) -> BehaviourTable:
    body = _expect_object(value, path, {"numerator", "unit", "edges", "relativities"})
    numerator = _name(body["numerator"], _join(path, "numerator"))
    if numerator in RESERVED_COLUMNS:
        raise _fail(_join(path, "numerator"), f"{numerator!r} is a column the engine reserves")
    unit = body["unit"]
    if unit not in ("per_100km", "share_of_km", "minutes_per_100km"):
        raise _fail(_join(path, "unit"), f"must be per_100km, share_of_km or minutes_per_100km, got {unit!r}")
    edges = _increasing(body["edges"], _join(path, "edges"), minimum=0.0)
    if unit == "share_of_km" and edges[-1] > 1.0:
        raise _fail(_join(path, "edges"), "a share of km lies in [0, 1]")
    rel_path = _join(path, "relativities")
    raw = body["relativities"]
    if not isinstance(raw, list) or len(raw) != len(edges) + 1:
        raise _fail(rel_path, f"must be a list of {len(edges) + 1} numbers (one more than edges)")
    relativities = tuple(_relativity(v, f"{rel_path}[{i}]") for i, v in enumerate(raw))
    return BehaviourTable(name=name, numerator=numerator, unit=cast(BehaviourUnit, unit), edges=edges,
                          relativities=relativities)


def plan_from_dict(document: Any) -> Plan:
    """Validate a plan document; raise PlanError naming the first bad key path."""
    body = _expect_object(
        document,
        "",
        {
            "schema", "plan_id", "version", "parent_sha256", "effective_from", "description",
            "currency", "base_rate_per_year", "a_priori", "usage", "behaviour", "credibility",
            "telematics_band", "max_increase_per_period", "minimum_premium_per_year",
            "missing_data",
        },
    )
    if body["schema"] != SCHEMA:
        raise _fail("schema", f"must be {SCHEMA!r}, got {body['schema']!r}")
    plan_id = _name(body["plan_id"], "plan_id")
    version = _integer(body["version"], "version", minimum=1, maximum=1_000_000)
    parent = body["parent_sha256"]
    if parent is not None and not (isinstance(parent, str) and re.fullmatch(r"[0-9a-f]{64}", parent)):
        raise _fail("parent_sha256", "must be null or 64 lowercase hex digits")
    try:
        effective_from = date.fromisoformat(_string(body["effective_from"], "effective_from"))
    except ValueError as error:
        raise _fail("effective_from", f"must be an ISO date YYYY-MM-DD: {error}") from error
    description = _string(body["description"], "description")

    currency_body = _expect_object(body["currency"], "currency", {"code", "minor_units", "rounding"})
    code = _string(currency_body["code"], "currency.code")
    if not _CURRENCY_PATTERN.match(code):
        raise _fail("currency.code", f"must be an ISO 4217 code such as 'EUR', got {code!r}")
    minor_units = _integer(currency_body["minor_units"], "currency.minor_units", minimum=0, maximum=3)
    rounding = currency_body["rounding"]
    if rounding not in ("ROUND_HALF_UP", "ROUND_HALF_EVEN"):
        raise _fail("currency.rounding", f"must be ROUND_HALF_UP or ROUND_HALF_EVEN, got {rounding!r}")
    currency = Currency(code=code, minor_units=minor_units, rounding=cast(RoundingMode, rounding))

    base_rate = _money(body["base_rate_per_year"], "base_rate_per_year", minor_units)
    if base_rate <= 0:
        raise _fail("base_rate_per_year", "must be positive")

    a_priori_body = body["a_priori"]
    if not isinstance(a_priori_body, Mapping):
        raise _fail("a_priori", "must be an object of factor tables")
    tables = []
    for factor, table in sorted(a_priori_body.items()):
        path = f"a_priori.{factor}"
        _name(factor, path)
        _reject_protected(factor, path)
        if factor in RESERVED_COLUMNS:
            raise _fail(path, f"{factor!r} is a column the engine reserves")
        table_body = _expect_object(table, path, {"relativities"})
        levels = table_body["relativities"]
        if not isinstance(levels, Mapping) or not levels:
            raise _fail(f"{path}.relativities", "must be a non-empty object of level: relativity")
        pairs = tuple(
            (_string(level, f"{path}.relativities"), _relativity(rel, f"{path}.relativities.{level}"))
            for level, rel in sorted(levels.items())
        )
        tables.append(FactorTable(name=factor, relativities=pairs))

    usage = _parse_usage(body["usage"], "usage", minor_units)

    behaviour_body = body["behaviour"]
    if not isinstance(behaviour_body, Mapping):
        raise _fail("behaviour", "must be an object of behaviour tables")
    behaviours = []
    numerators: dict[str, str] = {}
    for name, table in sorted(behaviour_body.items()):
        path = f"behaviour.{name}"
        _name(name, path)
        _reject_protected(name, path)
        parsed = _parse_behaviour(name, table, path)
        if parsed.numerator in numerators:
            raise _fail(f"{path}.numerator", f"already used by behaviour {numerators[parsed.numerator]!r}")
        if parsed.numerator in a_priori_body:
            raise _fail(f"{path}.numerator", "is also an a priori factor")
        numerators[parsed.numerator] = name
        behaviours.append(parsed)
    clash = set(behaviour_body) & set(a_priori_body)
    if clash:
        raise _fail(f"behaviour.{sorted(clash)[0]}", "is also the name of an a priori factor")

    credibility_body = _expect_object(body["credibility"], "credibility", {"k_km"})
    credibility = Credibility(k_km=_number(credibility_body["k_km"], "credibility.k_km", minimum=0.0,
                                           strict_minimum=True, maximum=1e7))

    band_body = _expect_object(body["telematics_band"], "telematics_band", {"min", "max"})
    band_min = _number(band_body["min"], "telematics_band.min", minimum=0.0, strict_minimum=True, maximum=1.0)
    band_max = _number(band_body["max"], "telematics_band.max", minimum=1.0, maximum=10.0)

    max_increase = _number(body["max_increase_per_period"], "max_increase_per_period", minimum=0.0, maximum=10.0)
    minimum_premium = _money(body["minimum_premium_per_year"], "minimum_premium_per_year", minor_units)
    if minimum_premium > base_rate:
        raise _fail("minimum_premium_per_year", "must not exceed base_rate_per_year")

    missing_body = _expect_object(body["missing_data"], "missing_data", {"behaviour", "min_scored_dist_km"})
    missing_rule = missing_body["behaviour"]
    if missing_rule not in ("neutral", "best_bin"):
        raise _fail("missing_data.behaviour", f"must be 'neutral' or 'best_bin', got {missing_rule!r}")
    missing = MissingData(
        behaviour=cast(MissingBehaviourRule, missing_rule),
        min_scored_dist_km=_number(missing_body["min_scored_dist_km"], "missing_data.min_scored_dist_km",
                                   minimum=0.0, maximum=1e5),
    )
    return Plan(
        plan_id=plan_id,
        version=version,
        parent_sha256=parent,
        effective_from=effective_from,
        description=description,
        currency=currency,
        base_rate_per_year=base_rate,
        a_priori=tuple(tables),
        usage=usage,
        behaviour=tuple(behaviours),
        credibility=credibility,
        telematics_band=Band(minimum=band_min, maximum=band_max),
        max_increase_per_period=max_increase,
        minimum_premium_per_year=minimum_premium,
        missing_data=missing,
    )


def _reject_constant(token: str) -> Any:
    raise PlanError(f"JSON constant {token} is not allowed in a plan")


def plan_from_json(text: str) -> Plan:
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise PlanError(f"<document>: not valid JSON: {error}") from error
    return plan_from_dict(document)


def load_plan(path: str | Path) -> Plan:
    return plan_from_json(Path(path).read_text(encoding="utf-8"))


DEFAULT_PLAN_PATH = Path(__file__).with_name("plans") / "default-v1.json"


def default_plan() -> Plan:
    """The plan the platform uses before any calibration."""
    return load_plan(DEFAULT_PLAN_PATH)
