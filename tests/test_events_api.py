"""docs/contract.md §4: Python producers call `worker.events.publish(event)`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from tests.builders import delete_redis_namespace, unique
from worker import events


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    name = unique("subsync-events-api")
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        delete_redis_namespace(client, name)
    finally:
        client.close()


def test_publish_with_the_settings_broker_puts_one_message_on_the_queue(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SUBSYNC_BROKER_NAMESPACE", namespace)
    event = events.make_event("subscription.updated", namespace="acme", subscription_id="sub_01", event_id="ev-1")

    message_id = events.publish(event)

    client = redis.Redis.from_url(redis_url)
    try:
        queued = client.lrange(f"{namespace}:{events.QUEUE_NAME}", 0, -1)
        stored = client.hgetall(f"{namespace}:{events.QUEUE_NAME}.msgs")
    finally:
        client.close()
    assert len(queued) == 1 and len(stored) == 1
    body = json.loads(next(iter(stored.values())))
    assert body["message_id"] == message_id
    assert body["queue_name"] == events.QUEUE_NAME and body["actor_name"] == "subscription_event"
    [payload] = body["args"]
    assert events.parse_event(payload) == event


def test_an_invalid_event_is_refused_before_anything_is_published() -> None:
    with pytest.raises(events.InvalidEvent):
        events.make_event("subscription.updated", namespace="acme", invoice_id="inv_01")
