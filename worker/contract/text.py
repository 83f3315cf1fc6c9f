"""Text forms shared by documents and command output: RFC 3339 times and shortest exact decimals.

The formatting itself lives in the domain (`format_instant`, `format_decimal`); parsing is here."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from worker.domain.money import format_decimal as format_decimal  # re-exported
from worker.domain.timeutil import check_ascii_digits, format_instant

_RFC3339 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"[Tt](?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})\Z",
    re.ASCII,  # docs/contract.md §3 limits: ASCII digits only (`\d` would match any script's digits)
)
_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?\Z", re.ASCII)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (offset required) into an aware UTC datetime.

    Fractions beyond microseconds are truncated (Postgres stores microseconds).
    Raises ValueError with a short reason.
    """
    match = _RFC3339.match(text)
    if match is None:
        check_ascii_digits(text)
        raise ValueError("must be an RFC 3339 time with an offset, like 2024-01-01T00:00:00Z")
    offset_text = match["offset"]
    if offset_text in ("Z", "z"):
        tz = UTC
    else:
        hours, minutes = int(offset_text[1:3]), int(offset_text[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError("has an invalid UTC offset")
        delta = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-delta if offset_text[0] == "-" else delta)
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]
    try:
        local = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int(fraction),
            tzinfo=tz,
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("is not a valid calendar time") from None


MIN_YEAR, MAX_YEAR = 1970, 9998


def parse_time_value(value: object) -> datetime:
    """A time field of a document or an event: an aware datetime or an RFC 3339 string, in the years
    MIN_YEAR-MAX_YEAR (docs/contract.md §3 limits), as UTC. Raises ValueError with a short reason."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("must have a UTC offset")
        parsed = value.astimezone(UTC)
    elif isinstance(value, str):
        parsed = parse_time(value)
    else:
        raise ValueError("must be an RFC 3339 time string, like 2024-01-01T00:00:00Z")
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValueError(f"must be in the years {MIN_YEAR}-{MAX_YEAR} (UTC)")
    return parsed


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with `Z`; the fraction is printed only when non-zero (trailing zeros dropped)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return format_instant(value)


def format_optional_time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def parse_decimal(text: str) -> Decimal:
    """Parse a plain decimal string (`-?digits[.digits]`, no exponent). Raises ValueError."""
    if not _DECIMAL.match(text):
        check_ascii_digits(text)
        raise ValueError('must be a decimal string like "12.50"')
    return Decimal(text)


def decimal_digits(value: Decimal) -> int:
    """How many digits the shortest plain form of `value` has (integer digits + fraction digits)."""
    text = format_decimal(value).lstrip("-")
    integer, _, fraction = text.partition(".")
    return len(integer.lstrip("0")) + len(fraction) or 1
