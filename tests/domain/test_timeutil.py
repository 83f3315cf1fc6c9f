from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.domain.builders import t
from worker.domain.timeutil import Duration, Period, format_instant, period_at, shift, step, trunc


@pytest.mark.parametrize(
    ("anchor", "d", "n", "expected"),
    [
        ("2024-01-31T15:00", "P1M", 1, "2024-02-29T15:00"),
        ("2024-01-31T15:00", "P1M", 2, "2024-03-31T15:00"),
        ("2024-01-31T15:00", "P1M", 3, "2024-04-30T15:00"),
        ("2025-01-31T15:00", "P1M", 7, "2025-08-31T15:00"),
        ("2025-01-31T15:00", "P1M", 8, "2025-09-30T15:00"),
        ("2025-01-31T15:00", "P1M", 9, "2025-10-31T15:00"),
        ("2024-03-31", "P1M", -1, "2024-02-29"),
        ("2024-02-29", "P1Y", 1, "2025-02-28"),
        ("2024-02-29", "P1Y", 4, "2028-02-29"),
        ("2024-01-01", "P1W", 4, "2024-01-29"),
    ],
)
def test_step_table_of_spec(anchor: str, d: str, n: int, expected: str) -> None:
    assert step(t(anchor), Duration.parse(d), n) == t(expected)


def test_shift_applies_years_then_months_each_clamped() -> None:
    # Feb 29 + P1Y → Feb 28, then + P1M → Mar 28 (not Mar 29 as a 13-month shift would give).
    assert shift(t("2024-02-29"), Duration.parse("P1Y1M")) == t("2025-03-28")


def test_shift_time_components_are_elapsed_time() -> None:
    assert shift(t("2024-01-01"), Duration.parse("P1DT1H30M1.5S")) == t("2024-01-02T01:30:01.500")


@pytest.mark.parametrize("text", ["P", "PT", "1M", "P-1M", "P0D", "P1.5M", "PT1.5H", "P1MT", "P1S", "p1m", ""])
def test_duration_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Duration.parse(text)


@pytest.mark.parametrize("text", ["P1M", "P1W", "P1Y", "P3M", "P1D", "PT1H", "P1Y2M3W4DT5H6M7.5S", "PT1.5S"])
def test_duration_round_trips(text: str) -> None:
    assert str(Duration.parse(text)) == text


def test_period_at_boundary_returns_the_period_starting_there() -> None:
    assert period_at(t("2024-01-01"), Duration.parse("P1M"), t("2024-02-01")) == Period(
        t("2024-02-01"), t("2024-03-01")
    )


def test_period_at_with_anchor_after_t() -> None:
    assert period_at(t("2025-01-31T15:00"), Duration.parse("P1M"), t("2024-12-15")) == Period(
        t("2024-11-30T15:00"), t("2024-12-31T15:00")
    )


def test_trunc_and_format() -> None:
    x = t("2024-01-01T00:00:00.123456")
    assert trunc(x) == t("2024-01-01")
    assert format_instant(x) == "2024-01-01T00:00:00.123456Z"
    assert format_instant(trunc(x)) == "2024-01-01T00:00:00Z"


durations = st.sampled_from(["P1M", "P1W", "P1Y", "P3M", "P1D", "P2W", "PT1H", "P1M15D", "P1Y1M", "PT90S"]).map(
    Duration.parse
)
instants = st.datetimes(
    min_value=t("1990-01-01").replace(tzinfo=None), max_value=t("2090-01-01").replace(tzinfo=None)
).map(lambda d: t(d.isoformat()))


@given(anchor=instants, d=durations, at=instants)
def test_period_at_contains_t_and_is_a_step_pair(anchor, d, at) -> None:  # type: ignore[no-untyped-def]
    p = period_at(anchor, d, at)
    assert p.start <= at < p.end
    # it is exactly one step long, and its boundaries are steps of the anchor
    assert p.end == step(anchor, d, _index_of(anchor, d, p.start) + 1)


def _index_of(anchor, d, boundary) -> int:  # type: ignore[no-untyped-def]
    k = int((boundary - anchor).total_seconds() // d.approx_seconds())
    for delta in range(-3, 4):
        if step(anchor, d, k + delta) == boundary:
            return k + delta
    raise AssertionError("not a boundary")


@given(anchor=instants, d=durations, n=st.integers(-200, 200))
def test_steps_strictly_increase(anchor, d, n) -> None:  # type: ignore[no-untyped-def]
    assert step(anchor, d, n) < step(anchor, d, n + 1)


@given(d=durations)
def test_durations_are_positive(d: Duration) -> None:
    assert shift(t("2024-01-01"), d) - t("2024-01-01") > timedelta(0)
    assert d.seconds >= Decimal(0)
