"""Publishing events on the `subscription-sync` queue (docs/contract.md §4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dramatiq

from worker.contract.events import QUEUE_NAME, RECONCILE_SUBSCRIPTION_ACTOR, Event, ReconcileRequest


def event_message(event: Event | ReconcileRequest, actor_name: str | None = None) -> dramatiq.Message[Any]:
    """The Dramatiq message carrying `event` (what a foreign producer writes by hand)."""
    if actor_name is None:
        actor_name = RECONCILE_SUBSCRIPTION_ACTOR if isinstance(event, ReconcileRequest) else event.actor_name
    return dramatiq.Message(
        queue_name=QUEUE_NAME, actor_name=actor_name, args=(event.payload(),), kwargs={}, options={}
    )


def publish(event: Event, *, broker: dramatiq.Broker) -> str:
    """Enqueue `event` on the `subscription-sync` queue of `broker`; returns the Dramatiq message id."""
    return broker.enqueue(event_message(event)).message_id


def enqueue_all(broker: dramatiq.Broker, messages: Sequence[dramatiq.Message[Any]]) -> None:
    """Enqueue `messages`: in one round trip on the worker's Redis broker (`GuardedRedisBroker.enqueue_many`),
    one by one on any other broker (the tests' StubBroker)."""
    many = getattr(broker, "enqueue_many", None)
    if callable(many):
        many(messages)
        return
    for message in messages:
        broker.enqueue(message)
