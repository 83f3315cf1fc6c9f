import math
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Context, Decimal, Inexact, InvalidOperation, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.charges import discount_total, flat_charge_amount, rate_usage
from worker.domain.money import currency_precision, format_decimal, proration_ratio, round_cur
from worker.domain.timeutil import Period


@pytest.mark.parametrize(
    ("code", "places"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("HUF", 0), ("BHD", 3), ("CLF", 4), ("MGA", 5), ("XAU", 0)]
)
def test_currency_precision(code: str, places: int) -> None:
    assert currency_precision(code) == places


def test_round_half_away_from_zero() -> None:
    assert round_cur(Decimal("54.835"), "USD") == Decimal("54.84")
    assert round_cur(Decimal("-54.835"), "USD") == Decimal("-54.84")
    assert round_cur(Decimal("2.5"), "JPY") == Decimal("3")
    assert round_cur(Decimal("1.0005"), "BHD") == Decimal("1.001")


def test_ratio_is_rounded_to_16_places_with_integers() -> None:
    assert proration_ratio(17 * 86400, 31 * 86400) == Decimal("0.5483870967741935")
    assert proration_ratio(2, 3) == Decimal("0.6666666666666667")
    assert proration_ratio(5, 0) == Decimal(1)


@pytest.mark.parametrize(
    ("value", "text"),
    [("100", "100"), ("100.00", "100"), ("33.330", "33.33"), ("0.00", "0"), ("1E+2", "100"), ("0.1", "0.1")],
)
def test_format_decimal_shortest_exact(value: str, text: str) -> None:
    assert format_decimal(Decimal(value)) == text


@given(st.decimals(allow_nan=False, allow_infinity=False), st.integers(0, 30))
def test_format_decimal_depends_on_the_value_alone(value: Decimal, zeros: int) -> None:
    """`format_decimal` is memoised by value (docs/performance.md "Rows written with fewer conversions"): equal values in
    other forms (`10`, `10.00`, `1E+1`) are one key, so they must format alike, whichever was formatted first."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    other = Decimal((sign, (*digits, *(0,) * zeros), exponent - zeros))  # the same value, `zeros` more digits
    assert other == value
    text = format_decimal(value)
    assert format_decimal(other) == text
    assert Decimal(text) == value and "E" not in text and "e" not in text


def test_format_decimal_refuses_what_is_not_finite() -> None:
    for bad in ("NaN", "sNaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match="not finite"):
            format_decimal(Decimal(bad))


def test_38_digit_amounts_are_exact() -> None:
    from worker.domain.money import prorate

    big = Decimal("12345678901234567890123456789012345678")
    assert format_decimal(big) == "12345678901234567890123456789012345678"
    assert round_cur(big, "USD") == big
    assert (
        format_decimal(Decimal("1234567890123456789012345678901234.5678")) == "1234567890123456789012345678901234.5678"
    )
    assert prorate(Decimal("99999999999999999999999999999999.99"), Decimal("0.5"), "USD") == Decimal(
        "50000000000000000000000000000000.00"
    )


def _ambient(prec: int) -> Context:
    return Context(prec=prec, rounding=ROUND_DOWN, traps=[Inexact, InvalidOperation])


@settings(max_examples=200, deadline=None)
@given(
    amount=st.tuples(st.integers(0, 10**38 - 1), st.integers(0, 38)).map(lambda v: Decimal(_plain(*v))),
    seconds=st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)),
    currency=st.sampled_from(["USD", "JPY", "BHD"]),
)
def test_flat_amounts_and_ratios_never_use_the_thread_context(
    amount: Decimal, seconds: tuple[int, int], currency: str
) -> None:
    """`flat_charge_amount` and `proration_ratio` name their contexts: a thread context that would round (3 digits,
    rounding down, `Inexact` trapped) changes nothing (docs/contract.md §3 "arithmetic")."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    service = Period(start, start + timedelta(seconds=min(seconds)))
    full = Period(start, start + timedelta(seconds=max(seconds)))
    args = (amount, service, full, True, "prorate_prices", currency)
    expected, ratio = flat_charge_amount(*args), proration_ratio(*sorted(seconds))
    with localcontext(_ambient(3)):
        assert flat_charge_amount(*args) == expected and proration_ratio(*sorted(seconds)) == ratio
    assert expected == _cents_in(
        currency, Fraction(amount) * Fraction(ratio) if 0 < min(seconds) < max(seconds) else Fraction(amount)
    )


def _cents_in(currency: str, x: Fraction) -> Decimal:
    """round_cur on exact fractions: half away from zero to the currency's places."""
    scale = 10 ** currency_precision(currency)
    return Decimal(math.floor(x * scale + Fraction(1, 2))).scaleb(-currency_precision(currency), context=_EXACT_WIDE)


_EXACT_WIDE = Context(prec=400, traps=[Inexact])


# --- rating is exact at the contract's bounds (docs/contract.md §3 "arithmetic") ---------------------------------


def _plain(n: int, places: int) -> str:
    """The integer `n` scaled by 10^-places, as a plain decimal string (no decimal context involved)."""
    digits = str(n).rjust(places + 1, "0")
    return f"{digits[:-places]}.{digits[-places:]}" if places else digits


def _exact(text: str) -> Fraction:
    return Fraction(text)


def _cents(x: Fraction) -> Fraction:
    """round_cur in USD: half away from zero to 2 places, on exact fractions."""
    sign = -1 if x < 0 else 1
    return sign * Fraction(math.floor(abs(x) * 100 + Fraction(1, 2)), 100)


decimal38 = st.tuples(st.integers(0, 10**38 - 1), st.integers(0, 38)).map(lambda v: _plain(*v))


@settings(max_examples=300, deadline=None)
@given(q=decimal38, tiers=st.lists(st.tuples(decimal38, decimal38, decimal38), min_size=1, max_size=4), p=decimal38)
def test_graduated_tiers_package_and_discount_are_exact_at_38_digits(
    q: str, tiers: list[tuple[str, str, str]], p: str
) -> None:
    """Each component computed on exact fractions and rounded once equals what the domain computes: no
    28-digit (or 100-digit) intermediate rounding anywhere (docs/credits.md §3.5)."""
    ordered = sorted(tiers, key=lambda tier: _exact(tier[0]))
    spec: list[dict[str, str | None]] = [
        {"up_to_amount": up if n < len(ordered) - 1 else None, "flat_price": flat, "unit_price": unit}
        for n, (up, flat, unit) in enumerate(ordered)
    ]
    price = {"type": "tiered", "mode": "graduated", "tiers": spec}
    expected = Fraction(0)
    lower = Fraction(0)
    qf = _exact(q)
    for i, tier in enumerate(spec):
        if i > 0 and qf <= lower:
            break
        up = tier["up_to_amount"]
        top = qf if up is None else min(qf, _exact(up))
        flat, unit = _exact(str(tier["flat_price"])), _exact(str(tier["unit_price"]))
        expected += _cents(flat) + _cents(max(Fraction(0), top - lower) * unit)
        if up is None:
            break
        lower = _exact(up)
    got = rate_usage(price, Decimal(q), None, "USD")
    assert _exact(format_decimal(got)) == expected

    per = tiers[0][0] if _exact(tiers[0][0]) > 0 else "1"
    package = {"type": "package", "amount": tiers[0][1], "quantity_per_package": per}
    packages = math.ceil(qf / _exact(per))
    assert _exact(format_decimal(rate_usage(package, Decimal(q), None, "USD"))) == _cents(
        packages * _exact(tiers[0][1])
    )

    discount = discount_total(got, {"percentage": {"percentage": p}}, "USD")
    assert _exact(format_decimal(discount)) == min(expected, _cents(expected * _exact(p) / 100))
