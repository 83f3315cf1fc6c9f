"""A strict parser for the ISO 8601 durations of the subscription document (`PnYnMnWnDTnHnMnS`).

Rules (CONTRACT §3): the duration is positive, and only the seconds may have a fractional
part. Any combination of components is accepted (SPEC §1.3 applies them in a fixed order).
The domain layer does the calendar arithmetic; this module only validates and decomposes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

_STRICT = re.compile(
    r"P(?!\Z)"
    r"(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?\Z"
)
# Same shape but with fractions everywhere: used only to explain why a text was refused.
_WITH_FRACTIONS = re.compile(
    r"P(?!\Z)(?:\d+(?:[.,]\d+)?Y)?(?:\d+(?:[.,]\d+)?M)?(?:\d+(?:[.,]\d+)?W)?(?:\d+(?:[.,]\d+)?D)?"
    r"(?:T(?=\d)(?:\d+(?:[.,]\d+)?H)?(?:\d+(?:[.,]\d+)?M)?(?:\d+(?:[.,]\d+)?S)?)?\Z"
)


@dataclass(frozen=True, slots=True)
class IsoDuration:
    """The components of a validated duration; `text` is the original text."""

    text: str
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: Decimal = Decimal(0)

    def __str__(self) -> str:
        return self.text


def parse_duration(text: str) -> IsoDuration:
    """Parse and validate; raises ValueError with a short reason (usable after a field name)."""
    match = _STRICT.match(text)
    if match is None:
        if text.startswith("-") or text.startswith("+"):
            raise ValueError("must be a positive ISO 8601 duration (no sign), like P1M")
        if _WITH_FRACTIONS.match(text):
            raise ValueError("may have a fractional part only in its seconds, like PT1.5S")
        raise ValueError("must be an ISO 8601 duration like P1M, P1W, P1Y, P3M, P1D or PT1H")
    parts = match.groupdict()
    duration = IsoDuration(
        text=text,
        years=int(parts["years"] or 0),
        months=int(parts["months"] or 0),
        weeks=int(parts["weeks"] or 0),
        days=int(parts["days"] or 0),
        hours=int(parts["hours"] or 0),
        minutes=int(parts["minutes"] or 0),
        seconds=Decimal(parts["seconds"] or 0),
    )
    if not any(
        (
            duration.years,
            duration.months,
            duration.weeks,
            duration.days,
            duration.hours,
            duration.minutes,
            duration.seconds,
        )
    ):
        raise ValueError("must be a positive duration (not zero)")
    return duration
