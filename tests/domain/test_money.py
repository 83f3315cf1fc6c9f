from decimal import Decimal

import pytest

from worker.domain.money import currency_precision, format_decimal, proration_ratio, round_cur


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
