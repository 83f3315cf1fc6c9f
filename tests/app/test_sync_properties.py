"""Random subscriptions through Postgres: a second sync writes nothing (docs/sync.md §8.5), whatever the mix
of cadences, versions, phases, prices and horizons — so every value survives its round trip through
the tables (times, decimals, JSON) exactly as the planner compares it."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine, insert

from tests.domain.strategies import BASE, as_of_offsets, subscriptions
from worker.app.sync import sync_subscription
from worker.domain.view import SubscriptionView
from worker.store.tables import customers, subscription_items, subscription_phases
from worker.store.tables import subscriptions as subscriptions_table


def store(db: Engine, view: SubscriptionView) -> None:
    r = view.record
    with db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE customers CASCADE")
        conn.execute(insert(customers).values(namespace=r.namespace, id=r.customer_id, name="c"))
        conn.execute(
            insert(subscriptions_table).values(
                namespace=r.namespace,
                id=r.id,
                customer_id=r.customer_id,
                name=r.id,
                currency=r.currency,
                billing_cadence=str(r.billing_cadence),
                billing_anchor=r.billing_anchor,
                pro_rating_enabled=r.pro_rating_enabled,
                pro_rating_mode=r.pro_rating_mode,
                active_from=r.active_from,
                active_to=r.active_to,
            )
        )
        for ph in view.phase_records:
            conn.execute(
                insert(subscription_phases).values(
                    namespace=r.namespace,
                    id=ph.id,
                    subscription_id=r.id,
                    key=ph.key,
                    name=ph.name,
                    active_from=ph.active_from,
                    sort_hint=ph.sort_hint,
                )
            )
            for it in ph.items:
                card = it.rate_card
                conn.execute(
                    insert(subscription_items).values(
                        namespace=r.namespace,
                        id=it.id,
                        phase_id=ph.id,
                        key=it.key,
                        active_from=it.active_from,
                        active_to=it.active_to,
                        annotations={},
                        rate_card={
                            "name": card.name,
                            "description": card.description,
                            "feature_key": card.feature_key,
                            "billing_cadence": str(card.billing_cadence) if card.billing_cadence else None,
                            "price": card.price.to_json() if card.price else None,
                            "discounts": None,
                            "tax_config": None,
                        },
                    )
                )


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
