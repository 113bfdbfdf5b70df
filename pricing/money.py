"""Exact money arithmetic: float amounts to integer minor units agreeing with Decimal."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from typing import Literal

import numpy as np
import numpy.typing as npt

RoundingMode = Literal["ROUND_HALF_UP", "ROUND_HALF_EVEN"]

_DECIMAL_MODES = {"ROUND_HALF_UP": ROUND_HALF_UP, "ROUND_HALF_EVEN": ROUND_HALF_EVEN}
# Veltkamp's constant for float64: splits a double into two halves of at most 26 bits,
# so that each half times a scale of at most 26 bits is exact.
_VELTKAMP = 134217729.0  # 2**27 + 1
_MAX_SCALE_EXPONENT = 6  # 10**6 has 20 significant bits
_MAX_AMOUNT = 1e12


def _two_product(x: npt.NDArray[np.float64], scale: float) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    """Return (p, e) with p = fl(x * scale) and p + e == x * scale exactly (Dekker)."""
    product = x * scale
    split = x * _VELTKAMP
    x_high = split - (split - x)
    x_low = x - x_high
    error = (x_high * scale - product) + x_low * scale
    return product, error


def to_minor_units(
    amount: npt.ArrayLike, minor_units: int = 2, rounding: RoundingMode = "ROUND_HALF_UP"
) -> npt.NDArray[np.int64]:
    """Round non-negative float amounts to integer minor units (cents).

    The result equals ``Decimal(float(a)).quantize(10**-minor_units, rounding)`` for every
    element, i.e. the exact binary value is rounded, never a pre-rounded ``a * 100``.
    """
    if not 0 <= minor_units <= _MAX_SCALE_EXPONENT:
        raise ValueError(f"minor_units: must be in 0..{_MAX_SCALE_EXPONENT}, got {minor_units}")
    if rounding not in _DECIMAL_MODES:
        raise ValueError(f"rounding: must be one of {sorted(_DECIMAL_MODES)}, got {rounding!r}")
    values = np.asarray(amount, dtype=np.float64)
    if values.size:
        # min and max propagate NaN, so two reductions check every value.
        lowest, highest = values.min(), values.max()
        if not (lowest >= 0.0 and highest < np.inf):
            raise ValueError("amount: every value must be finite and non-negative")
        if highest > _MAX_AMOUNT:
            raise ValueError(f"amount: values above {_MAX_AMOUNT:g} are not supported")
    scale = float(10**minor_units)
    flat = values.ravel()
    product = flat * scale
    whole = np.floor(product)
    # x * scale == whole + fraction + error exactly, where error is the rounding error of
    # the product: (product - whole) is exact (Sterbenz) and a multiple of ulp(product),
    # while |error| < ulp(product) / 2, so the fraction alone decides against one half
    # unless it is exactly one half; only then is the error needed.
    fraction = product - whole
    round_up = fraction > 0.5
    at_half = np.flatnonzero(fraction == 0.5)
    if at_half.size:
        error = _two_product(flat[at_half], scale)[1]
        exact_tie = error == 0.0
        if rounding == "ROUND_HALF_UP":
            tie_up = exact_tie
        else:
            tie_up = exact_tie & (np.mod(whole[at_half], 2.0) == 1.0)
        round_up[at_half] = (error > 0.0) | tie_up
    return (whole + round_up).astype(np.int64).reshape(values.shape)


def minor_units_to_decimal(amount_minor: int, minor_units: int = 2) -> Decimal:
    """Integer minor units as an exact Decimal in major units (1234 -> Decimal('12.34'))."""
    return Decimal(int(amount_minor)).scaleb(-minor_units)


def decimal_round(amount: float, minor_units: int = 2, rounding: RoundingMode = "ROUND_HALF_UP") -> Decimal:
    """Reference rounding of one float amount with Decimal (the definition ``to_minor_units`` meets)."""
    with localcontext() as context:
        context.prec = 60
        return Decimal(amount).quantize(Decimal(1).scaleb(-minor_units), rounding=_DECIMAL_MODES[rounding])


def parse_money(text: str, minor_units: int, path: str) -> Decimal:
    """Parse a plan money string such as '12.50' with at most ``minor_units`` decimals."""
    if not isinstance(text, str):
        raise ValueError(f"{path}: money must be a decimal string such as '12.50', got {text!r}")
    try:
        value = Decimal(text)
    except ArithmeticError as error:
        raise ValueError(f"{path}: not a decimal amount: {text!r}") from error
    if not value.is_finite() or value < 0:
        raise ValueError(f"{path}: must be a finite non-negative amount, got {text!r}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -minor_units - 4:
        raise ValueError(f"{path}: at most {minor_units + 4} decimals are allowed, got {text!r}")
    return value
