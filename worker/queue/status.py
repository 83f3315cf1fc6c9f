"""`subsync status`: queue depth, dead letters and how far behind the reconciler is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine

from worker.contract.events import QUEUE_NAME
from worker.contract.text import format_optional_time
from worker.infra.clock import utcnow
from worker.queue.keys import queue_keys
from worker.store.due import overdue_summary


def queue_depth(broker: RedisBroker, queue_name: str = QUEUE_NAME) -> dict[str, int]:
    """Messages waiting (`ready`), fetched by a worker and not yet acknowledged (`in_progress`),
    waiting for a retry backoff (`delayed`) and dead-lettered (`dead_letters`)."""
    keys = queue_keys(broker, queue_name)
    pipe = broker.client.pipeline(transaction=True)
    pipe.llen(keys["ready"])
    pipe.hlen(keys["messages"])
    pipe.hlen(keys["delayed_messages"])
    pipe.zcard(keys["dead"])
    ready, stored, delayed, dead = (int(v) for v in pipe.execute())
    return {"ready": ready, "in_progress": max(stored - ready, 0), "delayed": delayed, "dead_letters": dead}


def status(
    engine: Engine, broker: RedisBroker, *, namespace: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    now = now or utcnow()
    depth = queue_depth(broker)
    with engine.connect() as conn:
        overdue = overdue_summary(conn, now, namespace=namespace)
    lag = None
    if overdue.oldest_next_sync_after is not None:
        lag = max(int((now - overdue.oldest_next_sync_after).total_seconds()), 0)
    return {
        "queue": QUEUE_NAME,
        "broker_namespace": broker.namespace,
        **depth,
        "namespace": namespace,
        "due_subscriptions": overdue.count,
        "never_synced_subscriptions": overdue.never_synced,
        "oldest_overdue_next_sync_after": format_optional_time(overdue.oldest_next_sync_after),
        "overdue_seconds": lag,
    }
