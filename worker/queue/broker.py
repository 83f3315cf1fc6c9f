"""The worker's Dramatiq Redis broker and its middleware, built from `Settings`.

Middleware, in order: MessageContext, Exposition (Dramatiq's Prometheus with the health endpoints;
worker processes with metrics on), AgeLimit, TimeLimit, GracefulShutdown, Callbacks, Pipelines,
DurableRetries (Retries with the policy of `worker.queue.failures`, riding out Redis outages),
CurrentMessage, DeadLetterReasons, ForeignMessageIds, OwedInvoiceEvents, MessageLog, and with metrics
SyncMetrics and Heartbeats. The broker is `worker.queue.consumer.GuardedRedisBroker`; its Redis keys
are named in `worker.queue.keys`.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, CurrentMessage, Middleware, Pipelines, TimeLimit

from worker.config import Settings
from worker.contract.events import QUEUE_NAME
from worker.queue.consumer import GuardedRedisBroker
from worker.queue.failures import RetryPolicy
from worker.queue.middleware.dead_letter_reasons import DeadLetterReasons
from worker.queue.middleware.durable_retries import DurableRetries
from worker.queue.middleware.foreign_message_ids import ForeignMessageIds
from worker.queue.middleware.graceful_shutdown import GracefulShutdown
from worker.queue.middleware.heartbeats import Heartbeats
from worker.queue.middleware.message_context import MessageContext
from worker.queue.middleware.message_log import MessageLog
from worker.queue.middleware.owed_invoice_events import OwedInvoiceEvents
from worker.queue.middleware.sync_metrics import SyncMetrics


def build_middleware(settings: Settings, *, metrics: bool = False) -> list[Middleware]:
    policy = RetryPolicy.from_settings(settings)
    middleware: list[Middleware] = [
        MessageContext(),  # first: its after-hook runs last, so every line of a message has its id
        AgeLimit(max_age=int(settings.max_age_seconds * 1000) if settings.max_age_seconds else None),
        TimeLimit(time_limit=int(settings.time_limit_seconds * 1000), interval=500),
        GracefulShutdown(settings.shutdown_grace_seconds),
        Callbacks(),
        Pipelines(),
        DurableRetries(
            max_retries=max(policy.transient_max_retries, policy.domain_max_retries),
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
            retry_when=policy.retry_when,
        ),
        CurrentMessage(),
        DeadLetterReasons(),
        ForeignMessageIds(),
        # After-hooks run in reverse order: these see a failed message before Retries re-enqueues it.
        OwedInvoiceEvents(),
        MessageLog(policy),
    ]
    if metrics:
        # lazy: Dramatiq's Prometheus module reads its environment at import; only worker processes set it
        from worker.queue.exposition import Exposition

        middleware.insert(1, Exposition())
        middleware.append(SyncMetrics())
        if settings.metrics_dir is not None:
            middleware.append(Heartbeats(settings.metrics_dir, int(settings.time_limit_seconds * 1000)))
    return middleware


def build_broker(url: str, settings: Settings, *, metrics: bool = False) -> RedisBroker:
    """A Redis broker for `url` with the worker's middleware; the queue is declared."""
    options: dict[str, Any] = {"socket_connect_timeout": 10, "socket_timeout": 30, "health_check_interval": 30}
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True
    client = redis.Redis.from_url(url, **options)
    make: Any = GuardedRedisBroker
    broker: RedisBroker = make(
        client=client,
        namespace=settings.broker_namespace,
        middleware=build_middleware(settings, metrics=metrics),
        dead_message_ttl=settings.dead_letter_ttl_seconds * 1000,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
        maintenance_chance=settings.broker_maintenance_chance,
        max_delay_ms=max(settings.max_delay_seconds * 1000, settings.max_backoff_ms),
    )
    broker.declare_queue(QUEUE_NAME)
    return broker


_boot_lock = threading.Lock()


def boot_once(broker: dramatiq.Broker) -> None:
    """Emit `process_boot` once per broker, for in-process workers (the `dramatiq` CLI does it itself)."""
    with _boot_lock:
        if getattr(broker, "_subsync_booted", False):
            return
        broker._subsync_booted = True  # type: ignore[attr-defined]
    broker.emit_after("process_boot")
