"""Exact money and energy: `Decimal` only, parsed strictly, stored as integer micro-yuan.

Prices have up to 4 decimals and energy 2 (DL/T 645 resolution), so a cost is exact at 6
decimals; the ledger keeps amounts as integer micro-yuan (so SQL sums stay exact) and shows
them with at least 4 decimals.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICRO = Decimal("0.000001")
CENT_KWH = Decimal("0.01")
ZERO = Decimal(0)


def parse_decimal(value: object, what: str, places: int | None = None) -> Decimal:
    """A decimal from a string or int (never a float); `places` bounds the decimals."""
    if isinstance(value, float | bool) or value is None:
        raise ValueError(f"{what} must be a decimal string such as \"0.5600\", not {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{what} {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"{what} {value!r} is not a finite number")
    if places is not None and number != number.quantize(Decimal(1).scaleb(-places)):
        raise ValueError(f"{what} {value!r} has more than {places} decimals")
    return number


def to_micro(amount: Decimal) -> int:
    """Integer micro-yuan; an amount that is not exact at 6 decimals is a programming error."""
    micro = amount.scaleb(6)
    if micro != micro.to_integral_value():
        raise ValueError(f"amount {amount} is not exact at 6 decimals")
    return int(micro)


def from_micro(micro: int) -> Decimal:
    return Decimal(micro).scaleb(-6).quantize(MICRO)


def format_money(amount: Decimal) -> str:
    """At least 4 decimals, up to 6, no trailing zeros past the fourth: `-12.3456`, `5.0000`."""
    text = f"{amount.quantize(MICRO):f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(4, "0")
    return f"{whole}.{frac}"


def display_money(amount: Decimal) -> str:
    """What a person reads: rounded to 0.01 yuan."""
    return f"{amount.quantize(Decimal('0.01')):f}"
