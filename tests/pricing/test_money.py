"""Integer minor units agree with Decimal rounding of the exact float value."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.money import decimal_round, minor_units_to_decimal, parse_money, to_minor_units

AMOUNTS = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("rounding", ["ROUND_HALF_UP", "ROUND_HALF_EVEN"])
@settings(max_examples=300, deadline=None)
@given(amounts=st.lists(AMOUNTS, min_size=1, max_size=50))
def test_vector_rounding_agrees_with_decimal(amounts: list[float], rounding: str) -> None:
    cents = to_minor_units(np.asarray(amounts), 2, rounding)  # type: ignore[arg-type]
    for amount, cent in zip(amounts, cents, strict=True):
        assert minor_units_to_decimal(int(cent), 2) == decimal_round(amount, 2, rounding)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "half_up", "half_even"),
    [
        (0.125, 13, 12),  # an exact binary tie
        (0.375, 38, 38),
        (1.005, 100, 100),  # 1.00499999999999989... in binary: not a tie
        (2.675, 267, 267),
        (0.005, 1, 1),  # 0.00500000000000000010... in binary: just above the tie
        (1234.565, 123457, 123457),
    ],
)
def test_known_binary_edge_cases(amount: float, half_up: int, half_even: int) -> None:
    assert to_minor_units([amount], 2, "ROUND_HALF_UP")[0] == half_up
    assert to_minor_units([amount], 2, "ROUND_HALF_EVEN")[0] == half_even


@pytest.mark.parametrize("minor_units", [0, 1, 3])
def test_other_minor_units(minor_units: int) -> None:
    amounts = np.random.default_rng(3).uniform(0, 5000, 2000)
    units = to_minor_units(amounts, minor_units)
    expected = [decimal_round(float(a), minor_units) for a in amounts]
    assert [minor_units_to_decimal(int(u), minor_units) for u in units] == expected


def test_rejects_negative_and_nan() -> None:
    with pytest.raises(ValueError, match="amount"):
        to_minor_units([1.0, -0.01])
    with pytest.raises(ValueError, match="amount"):
        to_minor_units([np.nan])


def test_parse_money_names_path() -> None:
    assert parse_money("12.50", 2, "x") == Decimal("12.50")
    with pytest.raises(ValueError, match=r"^base\.rate: "):
        parse_money(12.5, 2, "base.rate")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        parse_money("-1", 2, "fee")


@pytest.mark.parametrize("rounding", ["ROUND_HALF_UP", "ROUND_HALF_EVEN"])
@pytest.mark.parametrize("minor_units", [0, 2, 3])
def test_amounts_at_and_next_to_ties_agree_with_decimal(rounding: str, minor_units: int) -> None:
    # x * scale lands on whole + 0.5 in floating point for all of these, whether the exact
    # product is a tie, just above or just below: the product's rounding error decides.
    ties = (np.arange(20_000) + 0.5) / 10**minor_units
    amounts = np.concatenate([ties, np.nextafter(ties, np.inf), np.nextafter(ties, 0.0)])
    units = to_minor_units(amounts, minor_units, rounding)  # type: ignore[arg-type]
    expected = [decimal_round(float(a), minor_units, rounding) for a in amounts]  # type: ignore[arg-type]
    assert [minor_units_to_decimal(int(u), minor_units) for u in units] == expected


def test_rejects_infinity_and_keeps_the_shape() -> None:
    for bad in ([np.inf], [1.0, -np.inf], [2e12]):
        with pytest.raises(ValueError, match="amount"):
            to_minor_units(bad)
    assert to_minor_units(np.asarray([[0.125, 1.0], [2.675, 3.0]])).tolist() == [[13, 100], [267, 300]]
    assert to_minor_units([]).shape == (0,)
