"""Process-level concurrency: two `subsync worker` processes of four threads each (eight workers)
handle a few hundred interleaved events for 20 customers through Redis, while the producer keeps
changing the subscriptions, and end with exactly the lines of one sequential run (docs/sync.md §6.1, §8.5).

The worker's invoicing step (docs/sync.md §8.3) stays on: the sequential reference runs the same handlers
(`handle_subscription_event`, then `handle_invoice_created` for every invoice it created), one
event at a time, on the final state of every subscription.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, select

from tests.reliability.processes import Processes, drain, worker_env
from tests.reliability.test_sync_concurrency import AS_OF, CUSTOMERS, invariants, seed
from worker.app.handlers import handle_invoice_created, handle_subscription_event
from worker.contract.events import InvoiceCreatedEvent, SubscriptionEvent
from worker.queue.dead_letters import list_dead_letters
from worker.queue.publish import publish
from worker.store.tables import invoice_lines, invoices

SUBSCRIPTIONS, VERSIONS = 40, 4  # two subscriptions per customer
DRAIN_TIMEOUT = 120.0


def snapshot(db: Engine) -> list[tuple[Any, ...]]:
    """Live lines without ids: identity, periods, invoice_at, price, quantity and the invoice's
    type and status."""
    with db.connect() as conn:
        rows = conn.execute(
            select(invoice_lines, invoices.c.type.label("invoice_type"), invoices.c.status.label("invoice_status"))
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .where(invoice_lines.c.deleted_at.is_(None))
        ).all()
    return sorted(
        (
            r.namespace,
            r.unique_reference_id,
            r.service_period_start,
            r.service_period_end,
            r.billing_period_start,
            r.billing_period_end,
            r.invoice_at,
            repr(sorted(r.price.items())),
            r.quantity,
            r.invoice_type,
            r.invoice_status,
        )
        for r in rows
    )


def event(sub: int, type_: str = "subscription.updated") -> SubscriptionEvent:
    return SubscriptionEvent.new(type_, namespace="acme", subscription_id=f"sub_{sub:02d}", as_of=AS_OF)


def sequential_reference(db: Engine) -> list[tuple[Any, ...]]:
    """The final state of every subscription, each handled once, in order, by the worker's handlers."""
    for sub in range(SUBSCRIPTIONS):
        seed(db, sub, VERSIONS - 1)
    created: list[InvoiceCreatedEvent] = []
    for sub in range(SUBSCRIPTIONS):
        handle_subscription_event(db, event(sub, "subscription.created"), publish=created.append)
    for invoice_event in created:
        handle_invoice_created(db, invoice_event)
    return snapshot(db)


def test_two_worker_processes_of_four_threads_match_a_sequential_run(
    db: Engine, database_url: str, redis_url: str, broker: RedisBroker, broker_namespace: str, processes: Processes
) -> None:
    expected = sequential_reference(db)
    assert len(expected) > SUBSCRIPTIONS * 3
    with db.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE invoice_lines, split_line_groups, invoice_validation_issues, invoices, "
            "subscription_sync_states CASCADE"
        )
    for sub in range(SUBSCRIPTIONS):
        seed(db, sub, 0)

    env = worker_env(database_url, redis_url, broker_namespace, SUBSYNC_TIME_LIMIT_SECONDS="60")
    workers = [processes.worker(env, threads=4, name=f"worker{i}") for i in range(2)]

    rng = random.Random(8)
    published = 0
    # Every subscription is created, then changed three times; each committed change is followed by
    # its event, delivered 1-3 times. Changes of different subscriptions interleave at random, so
    # both subscriptions of a customer, and copies of one event, are handled at the same time.
    changes = [(sub, 0) for sub in range(SUBSCRIPTIONS)]
    later = [(sub, v) for v in range(1, VERSIONS) for sub in range(SUBSCRIPTIONS)]
    rng.shuffle(later)
    later.sort(key=lambda c: c[1])  # the versions of one subscription are applied in order
    for sub, version in changes + later:
        if version:
            seed(db, sub, version)
        for _ in range(rng.randint(1, 3)):
            publish(event(sub, "subscription.updated" if version else "subscription.created"), broker=broker)
            published += 1
    assert published >= 200

    drain(broker, workers, DRAIN_TIMEOUT)

    logs = [e for w in workers for e in w.events()]
    done = Counter(e["actor"] for e in logs if e.get("event") == "message.done")
    failed = Counter(e.get("reason") for e in logs if e.get("event") == "message.failed")
    assert done["subscription_event"] == published, (done, failed)
    assert all(w.log().count("message.done") > 0 for w in workers)  # both processes took part
    assert list_dead_letters(broker) == [], failed
    assert snapshot(db) == expected
    invariants(db)
    with db.connect() as conn:
        customers = conn.execute(select(invoices.c.customer_id).distinct()).scalars().all()
    assert len(customers) == CUSTOMERS
