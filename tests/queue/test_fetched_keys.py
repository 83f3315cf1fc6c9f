"""Every key a message was fetched under is acknowledged (issue 21 item 6; docs/operations.md §5): a
raw producer that stores one body under two keys, or pushes a key again after its message was
handled, must not leave an id in flight for the worker's life (real Redis, raw Redis commands)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine

from tests.builders import apply, document, enqueue_raw, fast_settings, fee, lines_json, raw_message
from worker.bootstrap import actor_settings
from worker.contract.events import QUEUE_NAME, SubscriptionEvent
from worker.queue.actors import declare_actors
from worker.queue.keys import queue_keys
from worker.queue.status import StuckLimits, queue_depth, stuck_messages

NS = "acme"
WAIT = 20.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll every 20 ms until `condition` holds; fail after WAIT seconds (a deadline, not a sleep)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def in_flight(broker: RedisBroker) -> set[str]:
    """Every id any worker of the namespace holds in flight."""
    ids: set[str] = set()
    for key in broker.client.scan_iter(match=f"{broker.namespace}:__acks__.*", count=500):
        ids |= {m.decode() for m in broker.client.smembers(key)}
    return ids


@pytest.fixture
def start_worker(db: Engine, redis_broker: RedisBroker, broker_namespace: str) -> Iterator[Callable[[], None]]:
    declare_actors(redis_broker, actor_settings(fast_settings(broker_namespace)), engine=lambda: db)
    workers: list[dramatiq.Worker] = []

    def start() -> None:
        worker = dramatiq.Worker(redis_broker, queues={QUEUE_NAME}, worker_timeout=50, worker_threads=2)
        worker.start()
        workers.append(worker)

    yield start
    for worker in workers:
        worker.stop()


def body(namespace: str) -> bytes:
    event = SubscriptionEvent.new(
        "subscription.created", namespace=namespace, subscription_id="sub_1", as_of=datetime(2024, 2, 15, tzinfo=UTC)
    )
    return json.dumps(raw_message([event.payload()])).encode()


def settled(broker: RedisBroker) -> bool:
    keys = queue_keys(broker)
    return broker.client.hlen(keys["messages"]) == 0 and not in_flight(broker)


def test_a_body_stored_under_two_keys_is_acknowledged_under_both(
    db: Engine, redis_broker: RedisBroker, start_worker: Callable[[], None]
) -> None:
    apply(db, document(NS, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    data = body(NS)
    first = enqueue_raw(redis_broker, data)  # under its options.redis_message_id
    second = enqueue_raw(redis_broker, data, redis_id="the-same-body-again")
    assert first != second
    start_worker()  # both keys are fetched in one batch

    wait_until(lambda: settled(redis_broker), "both keys to be acknowledged")
    assert len(lines_json(db, NS)) == 3
    assert queue_depth(redis_broker) == {"ready": 0, "in_progress": 0, "delayed": 0, "dead_letters": 0}
    limits = StuckLimits(stuck_after_ms=0, heartbeat_timeout_ms=60_000, max_backoff_ms=1_000)
    assert stuck_messages(redis_broker, limits, now_ms=int(time.time() * 1000)) == []


def test_a_key_pushed_again_after_its_message_was_handled_is_not_left_in_flight(
    db: Engine, redis_broker: RedisBroker, start_worker: Callable[[], None]
) -> None:
    apply(db, document(NS, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    start_worker()
    key = enqueue_raw(redis_broker, body(NS))
    wait_until(lambda: settled(redis_broker), "the message to be handled")

    ready = queue_keys(redis_broker)["ready"]
    redis_broker.client.rpush(ready, key)  # a producer's retry of a push that had worked
    wait_until(lambda: redis_broker.client.llen(ready) == 0, "the worker to fetch the key")
    # the fetch that took the key off the queue is the one that would have marked it in flight
    assert key not in in_flight(redis_broker)
    assert settled(redis_broker)
