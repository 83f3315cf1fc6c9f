"""Concurrent and repeated syncs converge to what one sequential run produces (docs/sync.md §6.1, §8.5).

Eight threads sync the subscriptions of 20 customers while a producer keeps changing them, the way
the upstream service publishes an event after each committed change; every event is delivered 1-3
times in a shuffled order. The result must equal a single sequential sync of the final state.
"""

from __future__ import annotations

import queue
import random
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from tests.builders import flat, item, phase, seed_subscription, t, unit
from worker.app.sync import sync_subscription
from worker.store.db import make_engine
from worker.store.tables import invoice_lines, invoices

AS_OF = t("2024-03-10")
NOW = t("2024-03-10T00:00:05")
CUSTOMERS = 20


def version_phases(sub: int, version: int) -> list[dict[str, Any]]:
    """Version 0: one flat fee; later versions add usage, change the price mid-period, end the item."""
    fee = 10 + sub
    phases = [phase("default", "2024-01-01", item("fee", flat(str(fee)), "2024-01-01", id=f"s{sub}fee0"))]
    if version >= 1:
        phases[0]["items"].append(item("api", unit("0.5"), "2024-01-01", id=f"s{sub}api"))
    if version >= 2:
        phases[0]["items"][0] = item("fee", flat(str(fee)), "2024-01-01", "2024-02-10", id=f"s{sub}fee0")
        phases[0]["items"].append(item("fee", flat(str(fee * 2)), "2024-02-10", id=f"s{sub}fee1"))
    if version >= 3:
        phases.append(phase("later", "2024-03-01", item("fee", flat("99"), "2024-03-01", id=f"s{sub}late")))
    return phases


def seed(db: Engine, sub: int, version: int) -> None:
    seed_subscription(db, *version_phases(sub, version), id=f"sub_{sub:02d}", customer_id=f"cust_{sub % CUSTOMERS:02d}")


def snapshot(db: Engine) -> list[tuple]:
    """Live lines without ids: identity, periods, invoice_at, price, and the invoice type."""
    with db.connect() as conn:
        rows = conn.execute(
            select(invoice_lines, invoices.c.type.label("invoice_type"))
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .where(invoice_lines.c.deleted_at.is_(None))
        ).all()
    return sorted(
        (
            r.unique_reference_id,
            r.service_period_start,
            r.service_period_end,
            r.billing_period_start,
            r.invoice_at,
            repr(sorted(r.price.items())),
            r.invoice_type,
        )
        for r in rows
    )


def invariants(db: Engine) -> None:
    with db.connect() as conn:
        dupes = conn.execute(
            select(invoice_lines.c.unique_reference_id, func.count())
            .where(invoice_lines.c.deleted_at.is_(None), invoice_lines.c.unique_reference_id.is_not(None))
            .group_by(invoice_lines.c.unique_reference_id)
            .having(func.count() > 1)
        ).all()
        gathering = conn.execute(
            select(invoices.c.customer_id, invoices.c.currency, func.count())
            .where(invoices.c.type == "gathering", invoices.c.deleted_at.is_(None))
            .group_by(invoices.c.customer_id, invoices.c.currency)
            .having(func.count() > 1)
        ).all()
    assert dupes == [] and gathering == []


def reference(db: Engine, subs: int, final_version: int) -> list[tuple]:
    for sub in range(subs):
        seed(db, sub, final_version)
    for sub in range(subs):
        sync_subscription(db, "acme", f"sub_{sub:02d}", as_of=AS_OF, now=NOW)
    return snapshot(db)


def test_eight_threads_200_events_20_customers_match_a_sequential_run(db: Engine, database_url: str) -> None:
    subs, versions = 40, 4  # two subscriptions per customer: many events for one customer at once
    expected = reference(db, subs, versions - 1)
    with db.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE invoice_lines, split_line_groups, invoice_validation_issues, invoices, "
            "subscription_sync_states CASCADE"
        )
    for sub in range(subs):
        seed(db, sub, 0)

    engine = make_engine(database_url, pool_size=9, max_overflow=0)
    rng = random.Random(7)
    events: queue.Queue[str | None] = queue.Queue()
    errors: list[BaseException] = []
    handled = Counter[str]()

    def consumer() -> None:
        while (sub_id := events.get()) is not None:
            try:
                sync_subscription(engine, "acme", sub_id, as_of=AS_OF, now=NOW)
                handled[sub_id] += 1
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=consumer) for _ in range(8)]
    for th in threads:
        th.start()
    changes = [(sub, v) for v in range(1, versions) for sub in range(subs)]
    rng.shuffle(changes)
    changes.sort(key=lambda c: c[1])  # versions of one subscription are applied in order
    published = 0
    for sub, version in changes:
        seed(engine, sub, version)  # the upstream change commits, then its event is published
        for _ in range(rng.randint(1, 3)):
            events.put(f"sub_{sub:02d}")
            published += 1
    for _ in threads:
        events.put(None)
    for th in threads:
        th.join(timeout=120)
    engine.dispose()
    assert errors == []
    assert published >= 200 and sum(handled.values()) == published
    assert snapshot(db) == expected
    invariants(db)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deliveries=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 5)), min_size=1, max_size=6), seed_=st.randoms())
def test_redelivery_in_any_order_gives_the_same_lines(
    db: Engine, deliveries: list[tuple[int, int]], seed_: random.Random
) -> None:
    """Every event delivered 1-5 times, shuffled: the lines equal one sync per subscription."""
    with db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE customers CASCADE")
    expected = reference(db, 3, 2)
    with db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE invoice_lines, invoices, subscription_sync_states CASCADE")
    order = [sub for sub, times in deliveries for _ in range(times)] + [0, 1, 2]
    seed_.shuffle(order)
    for sub in order:
        sync_subscription(db, "acme", f"sub_{sub:02d}", as_of=AS_OF, now=NOW)
    assert snapshot(db) == expected
    invariants(db)


@pytest.mark.parametrize("threads", [8])
def test_same_subscription_synced_by_many_threads_at_once(db: Engine, database_url: str, threads: int) -> None:
    seed(db, 0, 3)
    engine = make_engine(database_url, pool_size=threads, max_overflow=0)
    barrier = threading.Barrier(threads)
    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        results.append(sync_subscription(engine, "acme", "sub_00", as_of=AS_OF, now=NOW))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    engine.dispose()
    assert len(results) == threads
    assert sum(1 for r in results if r.patches) == 1  # the lock serialises them: one writes, the rest see it
    invariants(db)
