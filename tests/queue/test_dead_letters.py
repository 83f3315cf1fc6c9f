"""Dead letters on the real Redis broker: the reason is kept, `list` shows it, `retry` replays it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine

from tests.builders import apply, document, fast_settings, fee, lines_json
from worker.bootstrap import actor_settings
from worker.contract.events import QUEUE_NAME, SubscriptionEvent
from worker.errors import NotFoundError
from worker.queue.actors import declare_actors
from worker.queue.dead_letters import count_dead_letters, list_dead_letters, retry_dead_letters
from worker.queue.publish import event_message, publish
from worker.queue.status import queue_depth

NS = "acme"


@pytest.fixture
def running(db: Engine, redis_broker: RedisBroker, broker_namespace: str) -> Iterator[RedisBroker]:
    declare_actors(redis_broker, actor_settings(fast_settings(broker_namespace)), engine=lambda: db)
    worker = dramatiq.Worker(redis_broker, queues={QUEUE_NAME}, worker_timeout=50, worker_threads=2)
    worker.start()
    yield redis_broker
    worker.stop()


def drain(broker: RedisBroker) -> None:
    broker.join(QUEUE_NAME, interval=20, timeout=20_000)


def event(subscription_id: str = "sub_1") -> SubscriptionEvent:
    return SubscriptionEvent.new(
        "subscription.created",
        namespace=NS,
        subscription_id=subscription_id,
        as_of=datetime(2024, 2, 15, tzinfo=UTC),
    )


def test_dead_letters_keep_their_reason_and_can_be_replayed(db: Engine, running: RedisBroker) -> None:
    bad = event_message(event()).copy(args=({"type": "subscription.created", "namespace": NS},))
    running.enqueue(bad)
    publish(event("sub_1"), broker=running)  # the subscription does not exist yet: not_found
    drain(running)

    letters = {d.to_json()["reason"]: d.to_json() for d in list_dead_letters(running)}
    assert set(letters) == {"invalid_payload", "not_found"}
    invalid = letters["invalid_payload"]
    assert invalid["attempts"] == 1 and invalid["actor_name"] == "subscription_event"
    assert "subscription_id: is required" in invalid["error"]
    assert invalid["message_id"] == bad.message_id and invalid["event"] == bad.args[0]
    assert letters["not_found"]["attempts"] == 2 and "sub_1" in letters["not_found"]["error"]
    assert queue_depth(running) == {"ready": 0, "in_progress": 0, "delayed": 0, "dead_letters": 2}
    assert lines_json(db, NS) == []

    # fix the data, then replay the not_found letter only
    apply(db, document(NS, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    replayed = retry_dead_letters(running, [letters["not_found"]["id"]])
    assert [r.actor_name for r in replayed] == ["subscription_event"]
    drain(running)
    assert len(lines_json(db, NS)) == 3
    assert [d.to_json()["reason"] for d in list_dead_letters(running)] == ["invalid_payload"]

    with pytest.raises(NotFoundError, match="not in the dead-letter queue"):
        retry_dead_letters(running, ["no-such-id"])

    # --all replays the invalid one, which is dead-lettered again with the same reason
    assert len(retry_dead_letters(running, None)) == 1
    drain(running)
    assert count_dead_letters(running) == 1
    assert list_dead_letters(running)[0].to_json()["reason"] == "invalid_payload"
