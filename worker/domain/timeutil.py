"""Time arithmetic of docs/sync.md §1: instants, half-open periods, ISO 8601 durations, anchored steps.

Written small instead of using a library: `dateutil.relativedelta` adds years and months in one
step (Feb 29 + P1Y1M would land on Mar 29, SPEC wants Mar 28) and `isodate` shifts repeatedly, which
lets month-end clamping accumulate. Both behaviours differ from the reference, so the rules of SPEC
§1.3 are implemented here directly and property-tested.
"""

from __future__ import annotations

import calendar
import functools
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from worker.domain.errors import DomainError
from worker.domain.records import value

MIN_INSTANT = datetime(1, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
# docs/sync.md §3.3: the "infinity" minimum billable time of a phase without billable versions.
INFINITY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


class BeyondRangeError(ArithmeticError):
    """A period would end after MAX_INSTANT (docs/sync.md §3.11: such a period is never generated).

    Not a DomainError: the target builder catches it and ends generation there; it never fails a sync."""


def ensure_utc(t: datetime) -> datetime:
    """Return `t` as an aware UTC datetime; naive datetimes are refused."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t.isoformat()} (an offset is required)")
    return t.astimezone(UTC)


def trunc(t: datetime) -> datetime:
    """Drop the sub-second part (floor to the whole second)."""
    return t if t.microsecond == 0 else t.replace(microsecond=0)


def format_instant(t: datetime) -> str:
    """RFC 3339 UTC with `Z`; the fractional part only when it is not zero. The year always has four digits
    (`0001-01-01T00:00:00Z`; `strftime("%Y")` prints `1` on glibc)."""
    t = t.astimezone(UTC)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


@value
class Period:
    """A half-open period `[start, end)`; `end <= start` means empty."""

    start: datetime
    end: datetime

    @property
    def is_empty(self) -> bool:
        return self.end <= self.start

    @property
    def is_zero_length(self) -> bool:
        return self.end == self.start

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end

    def truncated(self) -> Period:
        if self.start.microsecond == 0 and self.end.microsecond == 0:
            return self  # already whole seconds (the usual case): no new object
        return Period(trunc(self.start), trunc(self.end))

    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    def intersect(self, other_start: datetime, other_end: datetime | None) -> Period | None:
        """`[max(start), min(end))`, or None when that is empty (an open end is +infinity)."""
        if other_start <= self.start and (other_end is None or self.end <= other_end):
            # Inside the other period (every period of an item but its first and last): this one itself,
            # no new object (~0.4 µs a period of a 10,000-line sync, docs/performance.md "Profiles").
            return self if self.start < self.end else None
        start = max(self.start, other_start)
        end = self.end if other_end is None else min(self.end, other_end)
        if end <= start:
            return None
        return Period(start, end)

    def __str__(self) -> str:
        return f"[{format_instant(self.start)}, {format_instant(self.end)})"


_DURATION_RE = re.compile(
    r"P(?!\Z)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?\Z",
    re.ASCII,  # docs/contract.md §3 limits: ASCII digits only (`\d` would match any script's digits)
)
# Same shape with fractions everywhere: used only to explain why a text was refused.
_WITH_FRACTIONS = re.compile(
    r"P(?!\Z)(?:\d+(?:[.,]\d+)?Y)?(?:\d+(?:[.,]\d+)?M)?(?:\d+(?:[.,]\d+)?W)?(?:\d+(?:[.,]\d+)?D)?"
    r"(?:T(?=\d)(?:\d+(?:[.,]\d+)?H)?(?:\d+(?:[.,]\d+)?M)?(?:\d+(?:[.,]\d+)?S)?)?\Z",
    re.ASCII,
)
_MAX_COMPONENT = 10_000_000


@dataclass(frozen=True, slots=True)
class Duration:
    """An ISO 8601 duration; only the seconds may be fractional (docs/sync.md §1.3).

    Durations are keys of the memoised `step` and `period_at`, hashed for every period a sync
    generates: the hash is computed once, and `parse` returns one shared instance per text, so cache
    lookups compare keys by identity (together 15% of building a target, measured with bench/)."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: Decimal = Decimal(0)
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.years, self.months, self.weeks, self.days, self.hours, self.minutes, self.seconds)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Strict `PnYnMnWnDTnHnMnS`; raises ValueError with a short reason (usable after a field name)."""
        return _parse_duration(text)

    @classmethod
    def _parse(cls, text: str) -> Duration:
        match = _DURATION_RE.match(text)
        if match is None:
            check_ascii_digits(text)
            if text.startswith(("-", "+")):
                raise ValueError("must be a positive ISO 8601 duration (no sign), like P1M")
            if _WITH_FRACTIONS.match(text):
                raise ValueError("may have a fractional part only in its seconds, like PT1.5S")
            raise ValueError("must be an ISO 8601 duration like P1M, P1W, P1Y, P3M, P1D or PT1H")
        parts = match.groupdict()
        seconds = Decimal(parts["seconds"] or "0")
        ints = {k: int(v or 0) for k, v in parts.items() if k != "seconds"}
        if any(v > _MAX_COMPONENT for v in ints.values()) or seconds > _MAX_COMPONENT:
            raise ValueError(f"has a component larger than {_MAX_COMPONENT}")
        duration = cls(seconds=seconds, **ints)
        if not duration.is_positive:
            raise ValueError("must be a positive duration (not zero)")
        if not any(ints.values()) and seconds < 1:
            # docs/contract.md §3 limits: periods are truncated to whole seconds (docs/sync.md §3.6), so a shorter
            # cadence would give zero-length periods, each billed in full.
            raise ValueError("must be at least 1 second once truncated to whole seconds, like PT1S")
        return duration

    @property
    def is_positive(self) -> bool:
        return any((self.years, self.months, self.weeks, self.days, self.hours, self.minutes)) or (self.seconds > 0)

    def times(self, n: int) -> Duration:
        return Duration(
            self.years * n,
            self.months * n,
            self.weeks * n,
            self.days * n,
            self.hours * n,
            self.minutes * n,
            self.seconds * n,
        )

    def approx_seconds(self) -> float:
        """A length estimate, used only to guess the step index (then corrected exactly)."""
        days = self.years * 365.2425 + self.months * 30.436875 + self.weeks * 7 + self.days
        return days * 86400 + self.hours * 3600 + self.minutes * 60 + float(self.seconds)

    def __str__(self) -> str:
        date = "".join(
            f"{v}{u}" for v, u in ((self.years, "Y"), (self.months, "M"), (self.weeks, "W"), (self.days, "D")) if v
        )
        secs = format(self.seconds.normalize(), "f") if self.seconds else ""
        time = "".join(f"{v}{u}" for v, u in ((self.hours, "H"), (self.minutes, "M")) if v)
        time += f"{secs}S" if secs else ""
        return "P" + date + ("T" + time if time else "")


@functools.lru_cache(maxsize=1024)
def _parse_duration(text: str) -> Duration:
    return Duration._parse(text)


def check_ascii_digits(text: str) -> None:
    """docs/contract.md §3 limits: durations, decimals and times are written with ASCII digits only; ValueError
    saying so when `text` has another script's digits (`P١M`, full-width `２０２４`)."""
    if any(ch.isdigit() and not ch.isascii() for ch in text):
        raise ValueError("must be written with ASCII digits 0-9 only")


def ascii_digits(text: str) -> str:
    """`text` with every decimal digit of another script replaced by its ASCII digit (`P١M` → `P1M`):
    only for reading back what was stored before the ASCII-digits rule (docs/contract.md §3)."""
    return "".join(_ascii_digit(ch) for ch in text)


def _ascii_digit(ch: str) -> str:
    if ch.isascii() or not ch.isdigit():
        return ch
    value = unicodedata.decimal(ch, None)
    return ch if value is None else str(value)


def _add_months(t: datetime, months: int) -> datetime:
    """Add calendar months keeping the time of day, clamping the day to the month's last day."""
    total = t.year * 12 + (t.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    if year < 1 or year > 9999:
        raise OverflowError("year out of range")
    day = min(t.day, calendar.monthrange(year, month)[1])
    return t.replace(year=year, month=month, day=day)


def shift(t: datetime, d: Duration) -> datetime:
    """Apply `d` to `t` in docs/sync.md §1.3 order: years, months (each clamped), weeks and days, then time.

    Past the representable range: BeyondRangeError going forward (docs/sync.md §3.11: periods that would
    end there are not generated); MIN_INSTANT going backward (only ever the start of a first period)."""
    try:
        if d.years:
            t = _add_months(t, 12 * d.years)
        if d.months:
            t = _add_months(t, d.months)
        elapsed = timedelta(
            days=7 * d.weeks + d.days,
            hours=d.hours,
            minutes=d.minutes,
            microseconds=int(d.seconds * 1_000_000),
        )
        return t + elapsed
    except OverflowError:
        if _sign(d) > 0:
            raise BeyondRangeError(f"{format_instant(t)} + {d} is after {format_instant(MAX_INSTANT)}") from None
        return MIN_INSTANT


def _sign(d: Duration) -> int:
    values = (d.years, d.months, d.weeks, d.days, d.hours, d.minutes, d.seconds)
    return 1 if any(v > 0 for v in values) else -1


@functools.lru_cache(maxsize=1 << 16)
def step(anchor: datetime, d: Duration, n: int) -> datetime:
    """The n-th boundary of the recurrence: multiply every component by n, shift the anchor once.

    Memoised: every item of a subscription shares the anchor, and usually the cadence, so a sync asks
    for the same boundaries over and over (pure function of hashable, immutable arguments)."""
    if n == 0:
        return anchor
    return shift(anchor, d.times(n))


@functools.lru_cache(maxsize=1 << 16)
def period_bounds_at(anchor: datetime, d: Duration, t: datetime) -> tuple[datetime, datetime | None]:
    """`(step(k), step(k+1))` for the largest k with `step(k) <= t` (docs/sync.md §1.4); the end is None when it
    lies past MAX_INSTANT (docs/sync.md §3.11). Always `start <= t < end`.

    Memoised like `step`: a sync asks for the period at the same instant once per item (the items of a
    subscription share the anchor, their periods start at the same boundaries), and for both the
    billing and the service cadence, which are usually the same duration."""
    if not d.is_positive:
        raise DomainError(f"duration {d} is not positive")
    k = int((t - anchor).total_seconds() // d.approx_seconds())
    # The estimate is off by at most a few steps; correct it exactly.
    while (start := _boundary(anchor, d, k)) is None or start > t:
        k -= 1
    while (end := _boundary(anchor, d, k + 1)) is not None and end <= t:
        k, start = k + 1, end
    return start, end


@functools.lru_cache(maxsize=1 << 16)
def period_at(anchor: datetime, d: Duration, t: datetime) -> Period:
    """The period of `period_bounds_at`; BeyondRangeError when it would end past MAX_INSTANT."""
    start, end = period_bounds_at(anchor, d, t)
    if end is None:
        raise BeyondRangeError(f"the {d} period from {format_instant(start)} ends after {format_instant(MAX_INSTANT)}")
    return Period(start, end)


def _boundary(anchor: datetime, d: Duration, k: int) -> datetime | None:
    try:
        return step(anchor, d, k)
    except BeyondRangeError:
        return None
