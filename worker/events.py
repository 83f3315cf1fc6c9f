"""The Python producer API that docs/contract.md §4 promises: `worker.events.publish(event)`.

A producer builds an event (`make_event(...)` or a `SubscriptionEvent` / `InvoiceCreatedEvent`) and
publishes it on the `subscription-sync` queue. This module only gathers what lives in its layers: the
event models in `worker.contract.events`, the message in `worker.queue.publish`, and — when no broker is
given — the broker the settings describe (`worker.bootstrap`: `REDIS_URL`, or the embedded Redis).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.contract.events import (
    QUEUE_NAME,
    Event,
    InvalidEvent,
    InvoiceCreatedEvent,
    SubscriptionEvent,
    make_event,
    parse_event,
)

if TYPE_CHECKING:
    import dramatiq

__all__ = [
    "QUEUE_NAME",
    "Event",
    "InvalidEvent",
    "InvoiceCreatedEvent",
    "SubscriptionEvent",
    "make_event",
    "parse_event",
    "publish",
]


def publish(event: Event, *, broker: dramatiq.Broker | None = None) -> str:
    """Enqueue `event` on the `subscription-sync` queue; returns the Dramatiq message id.

    Uses `broker`, or the broker of this process's settings (`REDIS_URL`, `SUBSYNC_BROKER_NAMESPACE`)."""
    # lazy: Dramatiq and the settings are loaded only by a producer that publishes
    from worker import bootstrap
    from worker.config import load_settings
    from worker.queue.publish import publish as publish_message

    if broker is not None:
        return publish_message(event, broker=broker)
    own = bootstrap.broker(load_settings())
    try:
        return publish_message(event, broker=own)
    finally:
        own.close()
