"""The `as_of` window of a reusable decision (docs/sync.md §8.6): `generation_holds_until` from the words of
docs/sync.md §3.1-§3.2, and the property that makes reuse sound — for every instant of `[as_of, holds_until)`,
target generation gives exactly what it gives at `as_of` (the same candidates, the same largest horizon)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.builders import t
from tests.domain.builders import EMPTY, flat, item, phase, sub, unit
from tests.domain.strategies import instants_near, offsets, subscriptions
from worker.domain.horizon import generation_holds_until
from worker.domain.reuse import DecisionToken
from worker.domain.target import build_target, generate_candidates
from worker.domain.view import SubscriptionView

MICRO = timedelta(microseconds=1)


def monthly(start: str = "2024-01-01", anchor: str | None = None, end: str | None = None) -> SubscriptionView:
    """A monthly in-advance fee and a usage item, both from the subscription start."""
    items = (item("fee", flat("10"), start), item("api", unit("1"), start))
    return sub(phase("default", start, *items), start=start, anchor=anchor, end=end)


def holds_until(
    view: SubscriptionView, as_of: datetime, customer_deleted_at: datetime | None = None
) -> datetime | None:
    """What a sync at `as_of` records: generation's `holds_until` (the target built from it carries the same)."""
    generation = generate_candidates(view, as_of, EMPTY, customer_deleted_at)
    assert build_target(view, as_of, EMPTY, customer_deleted_at).holds_until == generation.holds_until
    return generation.holds_until


# --- §3.2 rules 2-3: the billing period at as_of ----------------------------------------------------------------


@pytest.mark.parametrize("as_of", ["2024-01-15T10:00", "2024-01-01T00:00:00.000001", "2024-01-31T23:59:59.999999"])
def test_mid_period_holds_until_the_end_of_the_billing_period(as_of: str) -> None:
    assert holds_until(monthly(), t(as_of)) == t("2024-02-01")


@pytest.mark.parametrize("as_of", ["2024-01-01", "2024-02-01", "2024-03-01"])
def test_exactly_at_a_billing_period_start_nothing_holds(as_of: str) -> None:
    """§3.2 rule 3: at a period start the horizon is `as_of` itself and moves one microsecond later."""
    view = monthly()
    assert holds_until(view, t(as_of)) is None
    assert holds_until(view, t(as_of) + MICRO) is not None


def test_before_the_subscription_start_holds_until_the_start() -> None:
    """§3.2 rule 2: before the start the horizon is the start, for every instant before it."""
    view = monthly("2024-03-10", anchor="2024-01-01")
    assert holds_until(view, t("2024-02-01")) == t("2024-03-10")
    assert holds_until(view, t("2024-03-09T23:59:59.999999")) == t("2024-03-10")
    assert holds_until(view, t("2024-03-10")) is None  # the start is a (clamped) billing-period start
    assert holds_until(view, t("2024-03-10T00:00:01")) == t("2024-04-01")


def test_a_phase_ending_before_the_cadence_period_ends_holds_until_the_phase_end() -> None:
    """§2.4: the billing period is clamped to its phase, so the horizon is the phase end."""
    view = sub(
        phase("a", "2024-01-01", item("fee", flat("10"), "2024-01-01")),
        phase("b", "2024-01-20", item("fee", flat("20"), "2024-01-20")),
    )
    assert holds_until(view, t("2024-01-10")) == t("2024-01-20")
    assert holds_until(view, t("2024-01-20")) is None  # the phase start starts a billing period
    assert holds_until(view, t("2024-01-25")) == t("2024-02-01")


def test_a_free_trial_ending_mid_period_holds_until_the_trial_end() -> None:
    """§3.1: a phase without billables is skipped, but the billing period at as_of is still the trial's."""
    view = sub(
        phase("trial", "2024-01-01", item("seats", None, "2024-01-01")),
        phase("paid", "2024-01-20", item("fee", flat("10"), "2024-01-20")),
    )
    assert holds_until(view, t("2024-01-10")) == t("2024-01-20")


def test_a_cancelled_subscription_holds_until_its_end_and_not_after_it() -> None:
    view = monthly(end="2024-03-10")
    assert holds_until(view, t("2024-03-05")) == t("2024-03-10")
    assert holds_until(view, t("2024-03-10")) is None
    assert holds_until(view, t("2024-04-15")) is None  # after the end the billing period is inverted (§2.4)


def test_a_customer_deletion_caps_the_window_like_a_cancellation() -> None:
    """§3.8: the window is that of the capped view."""
    assert holds_until(monthly(), t("2024-03-05"), customer_deleted_at=t("2024-03-10")) == t("2024-03-10")


def test_an_anchor_on_the_31st_holds_until_the_clamped_month_end() -> None:
    """§12.2: the period after January 31st ends on February 29th (2024)."""
    view = monthly("2024-01-31")
    assert holds_until(view, t("2024-02-10")) == t("2024-02-29")
    assert holds_until(view, t("2024-03-01")) == t("2024-03-31")


def test_a_billing_period_ending_past_the_range_holds_nothing() -> None:
    """§3.11: no period ends after the year 9999; generation stops there, and no window is proved."""
    view = sub(
        phase("p", "9998-06-01", item("fee", flat("10"), "9998-06-01", cadence="P1Y")),
        start="9998-06-01",
        cadence="P1Y",
    )
    assert holds_until(view, t("9998-09-01")) == t("9999-06-01")
    assert holds_until(view, t("9999-07-01")) is None


# --- §3.1: the phase loop's stop --------------------------------------------------------------------------------


def test_the_phase_the_loop_stopped_at_bounds_the_window() -> None:
    """The loop stops at the first processed phase ending at or after as_of; past that end it would go on."""
    view = monthly()
    as_of = t("2024-01-10")
    assert generation_holds_until(view, as_of, None) == t("2024-02-01")
    assert generation_holds_until(view, as_of, t("2024-01-20")) == t("2024-01-20")
    assert generation_holds_until(view, as_of, t("2024-03-01")) == t("2024-02-01")
    assert generation_holds_until(view, as_of, as_of) is None  # a phase ending exactly at as_of


def test_the_token_covers_its_window_half_open() -> None:
    token = DecisionToken("d", t("2024-01-10"), t("2024-02-01"))
    assert token.covers(t("2024-01-10")) and token.covers(t("2024-02-01") - MICRO)
    assert not token.covers(t("2024-01-10") - MICRO) and not token.covers(t("2024-02-01"))


# --- the property: generation does not move inside the window ---------------------------------------------------


@st.composite
def windows(draw: st.DrawFn) -> tuple[SubscriptionView, datetime, datetime | None]:
    view = draw(subscriptions(same_cadence=draw(st.booleans()), early_phase=True))
    as_of = draw(instants_near(view))
    deleted_at = None
    if draw(st.integers(0, 4)) == 0:  # a deleted customer caps the view (§3.8); at or before the start: no target
        deleted_at = view.active_from + draw(offsets) + timedelta(seconds=1)
    return view, as_of, deleted_at


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=windows(), data=st.data())
def test_generation_is_the_same_at_every_instant_of_the_window(
    case: tuple[SubscriptionView, datetime, datetime | None], data: st.DataObject
) -> None:
    """For random subscriptions (multi-phase, versioned, cancelled or not, any anchor, a first phase before the
    start, a deleted customer) and an `as_of` at or next to every bound generation branches on, generation at any
    instant of `[as_of, holds_until)` — just after as_of, just before holds_until, before its last whole second,
    and anywhere in between — equals generation at as_of: what the token claims."""
    view, as_of, deleted_at = case
    at_as_of = generate_candidates(view, as_of, EMPTY, deleted_at)
    until = at_as_of.holds_until
    if until is None:
        event("no window")
        return
    assert until > as_of
    span = (until - as_of) // MICRO
    event(f"window of {'<' if span < 86400 * 10**6 else '>='} a day")
    inside = {as_of + MICRO, until - MICRO, until - timedelta(seconds=1), until.replace(microsecond=0) - MICRO}
    inside.add(as_of + data.draw(st.integers(0, span - 1)) * MICRO)
    for at in sorted(x for x in inside if as_of <= x < until):
        later = generate_candidates(view, at, EMPTY, deleted_at)
        assert later.view == at_as_of.view
        assert later.candidates == at_as_of.candidates, f"as_of {as_of}, window until {until}: differs at {at}"
        assert later.max_limit == at_as_of.max_limit
        assert later.holds_until == until  # the same window, seen from any instant in it
    after = generate_candidates(view, until + MICRO, EMPTY, deleted_at)
    moved = (after.candidates, after.max_limit) != (at_as_of.candidates, at_as_of.max_limit)
    event("generation moves just after the window" if moved else "the window is conservative")
