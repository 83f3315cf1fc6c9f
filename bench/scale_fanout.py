"""The `reconcile_due` fan-out at scale (issue 25): due rows found per second, messages enqueued per second, and
the Redis memory a queued message takes.

The fan-out runs the real handler (`worker.app.handlers.handle_reconcile_due`, keyset pages of
`Settings.reconcile_page_size`), first with an enqueue that only counts (the due scan alone), then the
`reconcile_due` actor's own body (its run lock, the handler, its enqueue of a page per round trip) on a private
broker namespace `subsync-scale-<pid>` of the configured Redis, whose keys are measured (`MEMORY USAGE`) and
deleted afterwards.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from worker.app.handlers import handle_reconcile_due
from worker.bootstrap import actor_settings
from worker.config import Settings
from worker.queue.actors import declare_actors
from worker.queue.broker import build_broker
from worker.queue.outcome import current_outcome


@dataclass(frozen=True, slots=True)
class FanOut:
    found: int  # due subscriptions the scan found
    scan_seconds: float  # the due scan alone
    enqueued: int
    enqueue_seconds: float  # scan and enqueue, as the actor runs it
    redis_bytes: int  # MEMORY USAGE of the namespace's keys with the messages queued
    message_bytes: float  # an encoded message, on average (a sample of the queued ones)

    @property
    def found_per_second(self) -> float:
        return self.found / self.scan_seconds if self.scan_seconds else 0.0

    @property
    def enqueued_per_second(self) -> float:
        return self.enqueued / self.enqueue_seconds if self.enqueue_seconds else 0.0

    @property
    def redis_bytes_per_message(self) -> float:
        return self.redis_bytes / self.enqueued if self.enqueued else 0.0


def measure(engine: Engine, redis_url: str, *, page_size: int | None = None) -> FanOut:
    settings = Settings(broker_namespace=f"subsync-scale-{os.getpid()}", metrics_port=0)
    size = page_size or settings.reconcile_page_size
    broker = build_broker(redis_url, settings)
    pattern = f"{settings.broker_namespace}:*"
    try:
        began = time.perf_counter()
        found = int(str(handle_reconcile_due(engine, lambda requests: None, page_size=size).extra["enqueued"]))
        scan_seconds = time.perf_counter() - began

        actors = declare_actors(broker, actor_settings(settings), engine=lambda: engine)
        began = time.perf_counter()
        actors.reconcile_due.fn()  # the actor body itself: its run lock, the handler, its enqueue
        enqueue_seconds = time.perf_counter() - began
        outcome = current_outcome()
        enqueued = int(str(outcome.extra.get("enqueued", 0))) if outcome is not None else 0
        keys = list(broker.client.scan_iter(match=pattern, count=1000))
        used = sum(int(broker.client.memory_usage(key, samples=0) or 0) for key in keys)
        bodies: list[int] = []
        for key in keys:
            if key.endswith(b".msgs"):
                sample: Any = broker.client.hscan(key, count=200)[1]
                bodies += [len(v) for v in sample.values()]
    finally:
        for key in broker.client.scan_iter(match=pattern, count=1000):
            broker.client.delete(key)
        broker.close()
    return FanOut(found, scan_seconds, enqueued, enqueue_seconds, used, sum(bodies) / len(bodies) if bodies else 0.0)
