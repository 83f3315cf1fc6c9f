"""Crashes in the middle of a sync, with real worker processes.

The window is made deterministic by `worker.infra.faults`: the worker runs with
`SUBSYNC_FAULT_BLOCK_AFTER_WRITE=<key>` while the test holds the advisory lock `<key>`, so the sync
stops inside its transaction right after it wrote invoice lines, and stays there until the test
has done its damage:

- the worker process is SIGKILLed → Postgres rolls the transaction back; the message stays in the
  dead worker's in-flight set, and a new worker takes it over once the dead worker's heartbeat is
  older than `SUBSYNC_BROKER_HEARTBEAT_TIMEOUT_MS` (shortened here, with maintenance on every broker
  command, so that it takes seconds, not minutes);
- its Postgres connection is terminated (`pg_terminate_backend`) → rolled back, classified
  `database_unavailable` (transient), retried, and the retry succeeds;
- Redis (a throwaway server with an fsynced append-only file) is killed and restarted while
  messages are queued and in flight → they survive, and the same worker process reconnects and
  handles them all.

Each ends with the lines that one sequential run of the same handlers produces.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, func, select, text

from tests.builders import apply, comparable, document, fee, lines_json, unique, usage
from tests.reliability.processes import (
    AdvisoryLock,
    Processes,
    backend_exists,
    blocked_backends,
    drain,
    pending,
    wait_until,
    worker_env,
)
from worker.app.handlers import handle_invoice_created, handle_subscription_event
from worker.config import Settings
from worker.contract.events import InvoiceCreatedEvent, SubscriptionEvent
from worker.queue.broker import build_broker
from worker.queue.dead_letters import list_dead_letters
from worker.queue.keys import queue_keys
from worker.queue.publish import publish
from worker.store.tables import invoice_lines, invoices, subscription_sync_states

AS_OF = datetime(2024, 2, 15, tzinfo=UTC)
HEARTBEAT_TIMEOUT_MS = 3000
WAIT = 30.0

#: Dead workers are detected after 3 s, and every broker command may run the maintenance that
#: requeues their messages (production: 60 s, and one command in a thousand).
FAST_RECOVERY = {
    "SUBSYNC_BROKER_HEARTBEAT_TIMEOUT_MS": str(HEARTBEAT_TIMEOUT_MS),
    "SUBSYNC_BROKER_MAINTENANCE_CHANCE": "1000000",
}


def subscription(ns: str, subscription_id: str = "sub_1", customer_id: str = "cust_1") -> dict[str, Any]:
    """A fee, a support fee added mid-period and a usage item: several lines, an invoice after sync."""
    return document(
        ns,
        {
            "platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")],
            "support": [fee("it_support", "30", "2024-02-10T00:00:00Z")],
            "api-calls": [usage("it_api", "0.01", "2024-02-10T00:00:00Z")],
        },
        subscription_id=subscription_id,
        customer_id=customer_id,
    )


def created(ns: str, subscription_id: str = "sub_1") -> SubscriptionEvent:
    return SubscriptionEvent.new("subscription.created", namespace=ns, subscription_id=subscription_id, as_of=AS_OF)


def reference_lines(engine: Engine) -> list[dict[str, Any]]:
    """The lines of one subscription handled once, sequentially, by the worker's own handlers."""
    ns = unique("reference")
    apply(engine, subscription(ns))
    invoiced: list[InvoiceCreatedEvent] = []
    handle_subscription_event(engine, created(ns), publish=invoiced.append)
    for invoice_event in invoiced:
        handle_invoice_created(engine, invoice_event)
    lines = lines_json(engine, ns)
    assert len(lines) >= 5 and {line["invoice_status"] for line in lines} == {"draft", "gathering"}
    return comparable(lines)


def written(engine: Engine, ns: str) -> dict[str, int]:
    """Rows the sync writes, deleted or not, in one namespace."""
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).where(table.c.namespace == ns)).scalar_one()
            for table in (invoice_lines, invoices, subscription_sync_states)
        }


NOTHING = {"invoice_lines": 0, "invoices": 0, "subscription_sync_states": 0}


@pytest.fixture
def fault_lock(engine: Engine) -> Iterator[AdvisoryLock]:
    lock = AdvisoryLock(engine, secrets.randbelow(2**31 - 2) + 1)
    try:
        yield lock
    finally:
        lock.close()


def wait_blocked(engine: Engine, count: int = 1, exclude: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def blocked() -> bool:
        nonlocal found
        found = [b for b in blocked_backends(engine) if b["backend_pid"] not in exclude]
        return len(found) >= count

    wait_until(blocked, f"{count} sync(s) blocked after writing", WAIT)
    assert all(b["wrote"] for b in found)  # the transaction has written before it blocked
    return found


def test_a_worker_killed_mid_transaction_leaves_nothing_and_a_new_worker_redoes_the_message(
    engine: Engine,
    database_url: str,
    redis_url: str,
    broker: RedisBroker,
    broker_namespace: str,
    processes: Processes,
    fault_lock: AdvisoryLock,
) -> None:
    expected = reference_lines(engine)
    ns = unique("killed")
    apply(engine, subscription(ns))
    env = worker_env(
        database_url, redis_url, broker_namespace, SUBSYNC_FAULT_BLOCK_AFTER_WRITE=str(fault_lock.key), **FAST_RECOVERY
    )
    first = processes.worker(env, threads=2, name="first")
    message_id = publish(created(ns), broker=broker)

    [blocked] = wait_blocked(engine)
    os.kill(blocked["worker_pid"], signal.SIGKILL)  # the worker process that runs the sync
    wait_until(lambda: not first.alive(), "Dramatiq's supervisor to exit", WAIT, on_timeout=first.tail)
    assert first.process.returncode != 0  # a dead worker process stops the whole worker: restart it

    fault_lock.release()  # the orphaned backend may go on now: it finds its client gone and aborts
    wait_until(lambda: not backend_exists(engine, blocked["backend_pid"]), "the orphaned backend to exit", WAIT)
    assert written(engine, ns) == NOTHING  # rolled back: not one line, invoice or sync state

    keys = queue_keys(broker)
    assert pending(broker) == 1  # neither acknowledged nor lost: still in flight in the dead worker's set
    in_flight = [k for k in broker.client.scan_iter(match=f"{broker_namespace}:__acks__.*") if broker.client.scard(k)]
    assert len(in_flight) == 1 and broker.client.llen(keys["ready"]) == 0

    second = processes.worker(env, threads=2, name="second")
    drain(broker, [second], WAIT + HEARTBEAT_TIMEOUT_MS / 1000)
    done = [e for e in second.events() if e.get("event") == "message.done" and e.get("message_id") == message_id]
    assert len(done) == 1 and done[0]["attempt"] == 1  # redelivered, not retried: no failure was recorded
    assert comparable(lines_json(engine, ns)) == expected
    assert list_dead_letters(broker) == []


def test_a_terminated_database_connection_rolls_back_and_is_retried_as_transient(
    engine: Engine,
    database_url: str,
    redis_url: str,
    broker: RedisBroker,
    broker_namespace: str,
    processes: Processes,
    fault_lock: AdvisoryLock,
) -> None:
    expected = reference_lines(engine)
    ns = unique("terminated")
    apply(engine, subscription(ns))
    env = worker_env(database_url, redis_url, broker_namespace, SUBSYNC_FAULT_BLOCK_AFTER_WRITE=str(fault_lock.key))
    worker = processes.worker(env, threads=2)
    message_id = publish(created(ns), broker=broker)

    [blocked] = wait_blocked(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": blocked["backend_pid"]}).scalar()
    # The retry runs the sync again on a new connection and blocks at the same point: the terminated
    # attempt is gone without a trace, and the retry has not committed yet.
    [retry] = wait_blocked(engine, exclude=frozenset({blocked["backend_pid"]}))
    assert retry["worker_pid"] == blocked["worker_pid"]  # the same worker process, still running
    wait_until(lambda: not backend_exists(engine, blocked["backend_pid"]), "the terminated backend to exit", WAIT)
    assert written(engine, ns) == NOTHING

    fault_lock.release()
    drain(broker, [worker], WAIT)
    events = [e for e in worker.events() if e.get("message_id") == message_id]
    failed = [e for e in events if e.get("event") == "message.failed"]
    assert [(e["reason"], e["kind"], e["will_retry"]) for e in failed] == [("database_unavailable", "transient", True)]
    assert [e["attempt"] for e in events if e.get("event") == "message.done"] == [2]
    assert comparable(lines_json(engine, ns)) == expected
    assert list_dead_letters(broker) == []


def test_messages_survive_a_redis_restart_and_the_running_worker_reconnects(
    engine: Engine, database_url: str, processes: Processes, fault_lock: AdvisoryLock
) -> None:
    """Throwaway Redis with `appendonly yes` and `appendfsync always`, SIGKILLed and restarted from its
    append-only file while two messages are in flight (blocked in their syncs) and four are queued."""
    expected = reference_lines(engine)
    server = processes.redis()
    namespace = unique("subsync-restart")
    settings = Settings(broker_namespace=namespace)
    producer = build_broker(server.url, settings)
    tenants = [unique("restart") for _ in range(8)]  # one subscription each: the same expected lines
    for ns in tenants:
        apply(engine, subscription(ns))
    env = worker_env(database_url, server.url, namespace, SUBSYNC_FAULT_BLOCK_AFTER_WRITE=str(fault_lock.key))
    worker = processes.worker(env, threads=2)
    try:
        for ns in tenants[:6]:
            publish(created(ns), broker=producer)
        wait_blocked(engine, count=2)  # both threads are inside a sync; four messages wait
        assert pending(producer) == 6

        server.kill()
        server.start()  # same port, same append-only file
        producer.close()
        producer = build_broker(server.url, settings)
        assert pending(producer) == 6  # every queued and in-flight message survived the crash
        for ns in tenants[6:]:  # and the queue takes new ones
            publish(created(ns), broker=producer)

        fault_lock.release()
        drain(producer, [worker], 60)
        assert producer.client.zcard(queue_keys(producer)["dead"]) == 0
    finally:
        producer.close()
    assert worker.alive()  # the same worker process, reconnected by itself
    for ns in tenants:
        assert comparable(lines_json(engine, ns)) == expected, ns
    done = [e for e in worker.events() if e.get("event") == "message.done" and e.get("actor") == "subscription_event"]
    assert len(done) == len(tenants)


def test_a_retry_waiting_for_its_backoff_survives_a_redis_outage(
    engine: Engine, database_url: str, processes: Processes, fault_lock: AdvisoryLock
) -> None:
    """A message that failed (transiently) waits for its retry in the worker's memory, fetched from the
    delay queue. Redis goes down; Dramatiq's delay-queue consumer drops what it held in memory when it
    sees the connection error, while Redis still counts those messages as in flight for this (live)
    worker — nobody would ever run them again until the worker process restarts. The worker's broker
    (`GuardedRedisBroker`) puts them back on the delay queue when that consumer reconnects."""
    expected = reference_lines(engine)
    server = processes.redis()
    namespace = unique("subsync-outage")
    ns = unique("outage")
    apply(engine, subscription(ns))
    env = worker_env(
        database_url,
        server.url,
        namespace,
        SUBSYNC_FAULT_BLOCK_AFTER_WRITE=str(fault_lock.key),
        SUBSYNC_MIN_BACKOFF_MS="6000",  # the retry's eta: 3-6 s after the failure
        SUBSYNC_MAX_BACKOFF_MS="6000",
    )
    worker = processes.worker(env, threads=2)
    producer = build_broker(server.url, Settings(broker_namespace=namespace))
    try:
        keys = queue_keys(producer)
        publish(created(ns), broker=producer)
        [blocked] = wait_blocked(engine)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": blocked["backend_pid"]})
        fault_lock.release()

        def held_in_memory() -> bool:  # fetched from the delay queue by the worker, waiting for its eta
            acks = list(producer.client.scan_iter(match=f"{namespace}:__acks__.*.subscription-sync.DQ"))
            return (
                producer.client.hlen(keys["delayed_messages"]) == 1
                and producer.client.llen(keys["delayed"]) == 0
                and sum(int(producer.client.scard(k)) for k in acks) == 1
            )

        wait_until(held_in_memory, "the retry to wait in the worker's delay queue", WAIT, on_timeout=worker.tail)
        [body] = producer.client.hvals(keys["delayed_messages"])
        assert json.loads(body)["options"]["eta"] > time.time() * 1000 + 500  # still waiting when Redis dies
        server.kill()

        def delay_consumer_lost_redis() -> bool:
            return any(
                e.get("logger") == "dramatiq.worker.ConsumerThread(subscription-sync.DQ)"
                and "connection error" in str(e.get("event"))
                for e in worker.events()
            )

        wait_until(delay_consumer_lost_redis, "the delay-queue consumer to lose Redis", WAIT, on_timeout=worker.tail)
        server.start()
        producer.close()
        producer = build_broker(server.url, Settings(broker_namespace=namespace))
        drain(producer, [worker], WAIT)
        assert producer.client.zcard(keys["dead"]) == 0
    finally:
        producer.close()
    assert "requeueing messages dropped by a restarted consumer" in worker.log()
    assert comparable(lines_json(engine, ns)) == expected


def test_a_message_that_fails_while_redis_is_down_is_still_retried(
    engine: Engine, database_url: str, processes: Processes, fault_lock: AdvisoryLock
) -> None:
    """The sync and the invoicing commit, then publishing `invoice.created` finds Redis down: the
    message fails (`broker_unavailable`, transient). Dramatiq's Retries middleware cannot enqueue the
    retry then, swallows that error, and acknowledges the original once Redis is back — the message
    would be gone. The worker's `DurableRetries` keeps trying to enqueue the retry until Redis
    answers, and the retry publishes the `invoice.created` the first attempt owed (it creates no
    invoice itself, so it would have nothing to publish)."""
    server = processes.redis()
    namespace = unique("subsync-down")
    ns = unique("down")
    apply(engine, subscription(ns))
    env = worker_env(database_url, server.url, namespace, SUBSYNC_FAULT_BLOCK_AFTER_WRITE=str(fault_lock.key))
    worker = processes.worker(env, threads=2)
    producer = build_broker(server.url, Settings(broker_namespace=namespace))
    try:
        message_id = publish(created(ns), broker=producer)
        wait_blocked(engine)
        server.kill()
        fault_lock.release()

        def failed_on_redis() -> bool:
            return any(
                e.get("event") == "message.failed" and e.get("reason") == "broker_unavailable" for e in worker.events()
            )

        wait_until(failed_on_redis, "the publish of invoice.created to fail", WAIT, on_timeout=worker.tail)
        server.start()
        producer.close()
        producer = build_broker(server.url, Settings(broker_namespace=namespace))
        drain(producer, [worker], WAIT)

        def retried() -> bool:
            return any(
                e.get("event") == "message.done" and e.get("message_id") == message_id and e.get("attempt") == 2
                for e in worker.events()
            )

        wait_until(retried, "the retry to run", WAIT, on_timeout=worker.tail)
        drain(producer, [worker], WAIT)
        assert producer.client.zcard(queue_keys(producer)["dead"]) == 0
    finally:
        producer.close()
    # The invoice the first attempt created still gets its invoice.created: the retry publishes it.
    with engine.connect() as conn:
        [invoice_id] = conn.execute(
            select(invoices.c.id).where(invoices.c.namespace == ns, invoices.c.type == "standard")
        ).scalars()
    handled = [e for e in worker.events() if e.get("event") == "message.done" and e.get("actor") == "invoice_created"]
    assert [e["invoice_id"] for e in handled] == [invoice_id]
    assert comparable(lines_json(engine, ns)) == reference_lines(engine)
