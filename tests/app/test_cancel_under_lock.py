"""docs/sync.md §8.2: a `subscription.cancelled` syncs up to the `active_to` of the row the sync locks — a change
committed while the sync waited for the lock is the one it uses, never a value read before the lock."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select, text, update

from tests.builders import flat, item, phase, seed_subscription, t
from worker.app.handlers import Handled, handle_subscription_event
from worker.contract.events import SubscriptionEvent
from worker.store.locks import lock_customer
from worker.store.tables import subscriptions

NOW = datetime(2024, 2, 15, 12, tzinfo=UTC)


def waiting_on_a_lock(db: Engine) -> int:
    with db.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(text("pg_stat_activity"))
                .where(text("wait_event_type = 'Lock' AND datname = current_database()"))
            ).scalar_one()
        )


def test_cancelled_uses_the_active_to_committed_while_it_waited_for_the_lock(db: Engine) -> None:
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")), end="2024-06-10")
    cancelled = SubscriptionEvent.new("subscription.cancelled", namespace="acme", subscription_id="sub_01", as_of=None)
    results: list[Handled | BaseException] = []

    def run() -> None:
        try:
            results.append(handle_subscription_event(db, cancelled, invoice_after_sync=False, now=NOW))
        except BaseException as exc:  # reported by the assertion below
            results.append(exc)

    with db.connect() as holder:
        holder.begin()
        lock_customer(holder, "acme", "cust_01")  # an upstream writer moves the end while holding the lock
        holder.execute(update(subscriptions).values(active_to=t("2024-03-20")))
        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 30
        while waiting_on_a_lock(db) == 0:  # the sync is blocked behind the holder (bounded poll)
            assert worker.is_alive() and time.monotonic() < deadline, results
        holder.commit()
    worker.join(timeout=60)
    (result,) = results
    assert isinstance(result, Handled), result
    assert result.syncs[0].as_of == t("2024-03-20")  # not the 2024-06-10 stored before the lock was taken
