"""Money arithmetic of docs/sync.md §1.7: currency precision, rounding half away from zero, proration ratio."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")

# Minor units per gobl's currency data, as used by the reference. Everything else has 2.
_ZERO_DECIMALS = frozenset(
    [
        "BIF",
        "BYR",
        "CLP",
        "DJF",
        "GNF",
        "HUF",
        "ISK",
        "JPY",
        "KMF",
        "KRW",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
        "XAG",
        "XAU",
        "XBA",
        "XBB",
        "XBC",
        "XBD",
        "XDR",
        "XPD",
        "XPT",
        "XTS",
    ]
)
_THREE_DECIMALS = frozenset(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"])
_SPECIAL = {"CLF": 4, "MGA": 5, "MRU": 5}

RATIO_PLACES = 16
_RATIO_SCALE = 10**RATIO_PLACES

#: Significant digits carried by every money operation (docs/contract.md §3 "arithmetic"). A contract decimal
#: has at most 38 digits in its plain form, so it is a multiple of 10^-38 below 10^38; a product of two spans
#: 10^-76 .. 10^76 (152 digits); a discount multiplies a rated amount (a sum of such products, rounded to at
#: most 5 places) by a 38-digit percentage (under 170 digits); sums of many charges or rows add a few digits
#: more. 400 leaves ample room, and `Inexact` is trapped: an operation that would still round raises instead.
EXACT_PRECISION = 400
_EXACT_ARITHMETIC = Context(
    prec=EXACT_PRECISION,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
# The explicit rounding rules (round_cur) round on purpose: the same precision without the Inexact trap.
_EXACT = Context(prec=EXACT_PRECISION, rounding=ROUND_HALF_UP)


def exact_context() -> AbstractContextManager[Context]:
    """`with exact_context():` — decimal arithmetic that never rounds (docs/contract.md §3 "arithmetic"),
    instead of the thread's default 28-digit context; an operation that would round raises `Inexact`."""
    return localcontext(_EXACT_ARITHMETIC)


def exact(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `function` in `exact_context()`: every money computation of the domain is decorated so."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with exact_context():
            return function(*args, **kwargs)

    return wrapper


def currency_precision(currency: str) -> int:
    """Number of minor units of `currency` (0 for JPY and HUF, 3 for BHD, ...)."""
    code = currency.upper()
    if code in _ZERO_DECIMALS:
        return 0
    if code in _THREE_DECIMALS:
        return 3
    return _SPECIAL.get(code, 2)


@functools.lru_cache(maxsize=256)
def _quantum(currency: str) -> Decimal:
    """`1` scaled to the currency's precision (`0.01` for USD); one per currency, not one per amount
    (looking the precision up cost a third of computing each expected line, measured with bench/)."""
    return Decimal(1).scaleb(-currency_precision(currency))


def round_cur(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's precision, half away from zero."""
    return amount.quantize(_quantum(currency), rounding=ROUND_HALF_UP, context=_EXACT)


def prorate(amount: Decimal, ratio: Decimal, currency: str) -> Decimal:
    """`round_cur(amount × ratio)`, the product taken exactly."""
    return round_cur(_EXACT.multiply(amount, ratio), currency)


def proration_ratio(service_seconds: int, full_seconds: int) -> Decimal:
    """`service / full` rounded half away from zero to 16 places, computed on integers; 1 for an empty full."""
    if full_seconds <= 0:
        return Decimal(1)
    numerator = service_seconds * _RATIO_SCALE
    quotient, remainder = divmod(numerator, full_seconds)
    if 2 * remainder >= full_seconds:
        quotient += 1
    return Decimal(quotient).scaleb(-RATIO_PLACES, context=_EXACT_ARITHMETIC)  # never the thread's context


def format_decimal(value: Decimal) -> str:
    """Shortest exact plain form: `100`, `33.33`, `0.1` — digit-wise, never exponent notation, and
    never rounded by the decimal context."""
    if not value.is_finite():
        raise ValueError("decimal is not finite")
    return _format_finite(value)


@functools.lru_cache(maxsize=4096)
def _format_finite(value: Decimal) -> str:
    """`format_decimal` of a finite value, memoised: the text depends on the value alone (`10`, `10.00` and `1E+1`
    are one key and one text), and a write formats the same few amounts over and over (docs/performance.md
    "Rows written with fewer conversions")."""
    if value.is_zero():
        return "0"
    sign, digit_tuple, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    while exponent < 0 and digits.endswith("0"):
        digits = digits[:-1]
        exponent += 1
    if exponent >= 0:
        text = digits + "0" * exponent
    else:
        scale = -exponent
        digits = digits.rjust(scale + 1, "0")
        text = f"{digits[:-scale]}.{digits[-scale:]}"
    integer, dot, fraction = text.partition(".")
    return ("-" if sign else "") + (integer.lstrip("0") or "0") + dot + fraction


def parse_decimal(text: str | int | float | Decimal) -> Decimal:
    """A decimal from its JSON string form (numbers accepted when read back from jsonb)."""
    if isinstance(text, Decimal):
        return text
    return Decimal(str(text))
