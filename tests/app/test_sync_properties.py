"""Random subscriptions through Postgres: a second sync writes nothing (docs/sync.md §8.5), whatever the mix
of cadences, versions, phases, prices and horizons — so every value survives its round trip through
the tables (times, decimals, JSON) exactly as the planner compares it."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine

from tests.builders import store_view as store
from tests.domain.strategies import BASE, as_of_offsets, subscriptions
from worker.app.sync import sync_subscription
from worker.domain.view import SubscriptionView


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(view=subscriptions(), offset=as_of_offsets)
def test_a_second_sync_through_the_database_writes_nothing(
    db: Engine, view: SubscriptionView, offset: timedelta
) -> None:
    store(db, view)
    as_of = BASE + offset
    sync_subscription(db, "acme", "sub_01", as_of=as_of, now=as_of)
    again = sync_subscription(db, "acme", "sub_01", as_of=as_of, now=as_of)
    assert again.patches == ()


def live_lines(db: Engine) -> list[tuple]:
    from sqlalchemy import select

    from worker.store.tables import invoice_lines

    with db.connect() as conn:
        rows = conn.execute(select(invoice_lines).where(invoice_lines.c.deleted_at.is_(None))).all()
    return sorted(
        (
            r.unique_reference_id,
            r.service_period_start,
            r.service_period_end,
            r.billing_period_start,
            r.billing_period_end,
            r.invoice_at,
            repr(sorted(r.price.items())),
        )
        for r in rows
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(view=subscriptions(), first=as_of_offsets, later=as_of_offsets)
def test_syncing_earlier_first_ends_where_syncing_once_later_does(
    db: Engine, view: SubscriptionView, first: timedelta, later: timedelta
) -> None:
    """Moving the horizon forward only adds lines: the history of syncs does not matter (docs/sync.md §8.5)."""
    early, late = sorted((BASE + first, BASE + later))
    store(db, view)
    sync_subscription(db, "acme", "sub_01", as_of=late, now=late)
    once = live_lines(db)
    store(db, view)
    sync_subscription(db, "acme", "sub_01", as_of=early, now=early)
    sync_subscription(db, "acme", "sub_01", as_of=late, now=late)
    assert live_lines(db) == once
