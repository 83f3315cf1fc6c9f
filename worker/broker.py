"""The Dramatiq Redis broker of the worker, its middleware and the worker's settings.

One broker per process, built from the environment (`REDIS_URL`, or the embedded Redis under
`SUBSYNC_HOME` when it is unset) and installed with `dramatiq.set_broker` by `get_broker()`.

Middleware, in order: Prometheus (worker processes only, when metrics are on), AgeLimit, TimeLimit,
GracefulShutdown (a ShutdownNotifications that first lets in-flight syncs finish), Callbacks,
Pipelines, Retries (the policy of `worker.failures`), CurrentMessage, DeadLetterReasons,
ForeignMessageIds, and SyncMetrics (with Prometheus).

Redis keys (Dramatiq's Redis broker; `NS` is the broker namespace, `dramatiq` by default):

| key | type | holds |
|---|---|---|
| `NS:subscription-sync` | list | ids of ready messages, consumed from the left |
| `NS:subscription-sync.msgs` | hash | id → message JSON, until acknowledged |
| `NS:subscription-sync.DQ` / `.DQ.msgs` | list / hash | delayed messages (retries waiting for their backoff) |
| `NS:subscription-sync.XQ` | sorted set | dead-lettered ids, scored by the time they failed (ms) |
| `NS:subscription-sync.XQ.msgs` | hash | id → dead-lettered message JSON |
| `NS:subsync.dead-letter-reason:<id>` | string | JSON reason of a dead letter (this project), same TTL as the dead letter |
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    Shutdown,
    ShutdownNotifications,
    TimeLimit,
    raise_thread_exception,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.config import Settings, load_settings
from worker.events import QUEUE_NAME
from worker.failures import RetryPolicy, classify, describe, kind_of
from worker.formatting import format_time
from worker.logging import get_logger

log = get_logger("worker.broker")

DEFAULT_BROKER_NAMESPACE = "dramatiq"


class WorkerSettings(BaseSettings):
    """Worker tuning, from `SUBSYNC_*` environment variables (all optional)."""

    model_config = SettingsConfigDict(env_prefix="SUBSYNC_", extra="ignore", frozen=True, case_sensitive=False)

    #: Invoice the customer's pending lines after a created/updated/continued/cancelled sync (SPEC §8.3).
    invoice_after_sync: bool = True
    #: Prefix of every Redis key of the broker (Dramatiq's `namespace`).
    broker_namespace: str = Field(default=DEFAULT_BROKER_NAMESPACE, min_length=1, max_length=64)
    #: Longest time one message may run before it is interrupted (and retried).
    time_limit_seconds: float = Field(default=300.0, gt=0)
    #: `reconcile_due` pages through every due subscription, so it gets a longer limit.
    reconcile_time_limit_seconds: float = Field(default=1800.0, gt=0)
    transient_max_retries: int = Field(default=10, ge=0)
    domain_max_retries: int = Field(default=3, ge=0)
    min_backoff_ms: int = Field(default=1000, ge=1)
    max_backoff_ms: int = Field(default=300_000, ge=1)
    #: On shutdown, in-flight syncs may finish for this long; then they are interrupted and requeued.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    #: Drop (dead-letter) messages older than this; unset: no limit.
    max_age_seconds: float | None = Field(default=None, gt=0)
    #: How long dead letters are kept in Redis.
    dead_letter_ttl_seconds: int = Field(default=7 * 86400, ge=60)
    #: Prometheus exposition port of `subsync worker` (0 disables metrics).
    metrics_port: int = Field(default=9191, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    #: Page size of `reconcile_due`.
    reconcile_page_size: int = Field(default=500, ge=1, le=10_000)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.transient_max_retries, self.domain_max_retries)


def load_worker_settings() -> WorkerSettings:
    return WorkerSettings()


def resolve_redis_url(settings: Settings) -> str:
    """`REDIS_URL`, or the URL of the embedded Redis (started if needed)."""
    if settings.redis_url is not None:
        return settings.redis_url
    from worker.embedded import ensure_redis

    return ensure_redis(settings.home_path)


# --- middleware --------------------------------------------------------------------------------


def dead_letter_reason_key(broker_namespace: str, redis_message_id: str) -> str:
    return f"{broker_namespace}:subsync.dead-letter-reason:{redis_message_id}"


class DeadLetterReasons(Middleware):
    """Logs why a message is dead-lettered and keeps the reason next to it in Redis.

    Dramatiq's dead-letter queue stores the message as it was enqueued, without the error, so the
    reason is kept under `NS:subsync.dead-letter-reason:<redis message id>` with the same TTL.
    """

    def __init__(self) -> None:
        self.logger = get_logger("worker.deadletters")

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        failure = message.options.get("subsync_failure")
        if not isinstance(failure, dict):
            exc = getattr(message, "_exception", None)
            reason = classify(exc) if exc is not None else "unknown"
            failure = {"reason": reason, "error": describe(exc) if exc is not None else "rejected"}
        record = {
            "reason": str(failure.get("reason")),
            "error": str(failure.get("error")),
            "kind": str(kind_of(str(failure.get("reason")))),
            "attempts": int(failure.get("attempt") or message.options.get("retries") or 1),
            "dead_lettered_at": format_time(datetime.now(UTC).replace(microsecond=0)),
            "message_id": message.message_id,
            "actor_name": message.actor_name,
        }
        payload = message.args[0] if message.args and isinstance(message.args[0], dict) else {}
        event_fields = {
            ("event_type" if key == "type" else key): payload[key]
            for key in ("event_id", "type", "namespace", "subscription_id", "invoice_id")
            if isinstance(payload.get(key), str)
        }
        self.logger.error(
            "message.dead_lettered",
            message_id=message.message_id,
            actor=message.actor_name,
            **event_fields,
            reason=record["reason"],
            error=record["error"],
            attempts=record["attempts"],
        )
        if isinstance(broker, RedisBroker):
            redis_id = message.options.get("redis_message_id") or message.message_id
            try:
                broker.client.set(
                    dead_letter_reason_key(broker.namespace, redis_id),
                    json.dumps(record),
                    px=broker.dead_message_ttl,
                )
            except redis.RedisError as exc:
                self.logger.warning("dead-letter reason not stored", error=str(exc))


class ForeignMessageIds(Middleware):
    """Messages written by hand (README) may omit `options.redis_message_id`; Dramatiq needs it to
    acknowledge them. It then defaults to the `message_id`, which must equal the hash field used."""

    def before_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        message.options.setdefault("redis_message_id", message.message_id)

    before_nack = before_ack


class GracefulShutdown(ShutdownNotifications):
    """On worker shutdown, let in-flight messages run for `grace_seconds`, then interrupt them
    with `Shutdown`: their transaction rolls back and the message is retried (requeued)."""

    def __init__(self, grace_seconds: float) -> None:
        super().__init__(notify_shutdown=True)
        self.grace_seconds = grace_seconds
        self._timer: threading.Timer | None = None

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.grace_seconds <= 0:
            self._interrupt()
            return
        self._timer = threading.Timer(self.grace_seconds, self._interrupt)
        self._timer.daemon = True
        self._timer.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _interrupt(self) -> None:
        notifications: set[int] = getattr(self.manager, "notifications", set())
        for thread_id in list(notifications):
            self.logger.warning("interrupting an in-flight message to shut down (it will be retried)")
            interrupt: Any = raise_thread_exception
            interrupt(thread_id, Shutdown)


def build_middleware(settings: WorkerSettings, *, metrics: bool = False) -> list[Middleware]:
    policy = settings.retry_policy
    middleware: list[Middleware] = [
        AgeLimit(max_age=int(settings.max_age_seconds * 1000) if settings.max_age_seconds else None),
        TimeLimit(time_limit=int(settings.time_limit_seconds * 1000), interval=500),
        GracefulShutdown(settings.shutdown_grace_seconds),
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=max(policy.transient_max_retries, policy.domain_max_retries),
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
            retry_when=policy.retry_when,
        ),
        CurrentMessage(),
        DeadLetterReasons(),
        ForeignMessageIds(),
    ]
    if metrics:
        from dramatiq.middleware.prometheus import Prometheus

        from worker.metrics import SyncMetrics

        middleware.insert(0, Prometheus())
        middleware.append(SyncMetrics())
    return middleware


# --- the broker --------------------------------------------------------------------------------


def build_broker(url: str, settings: WorkerSettings | None = None, *, metrics: bool = False) -> RedisBroker:
    """A Redis broker for `url` with the worker's middleware; the queue is declared."""
    settings = settings or load_worker_settings()
    options: dict[str, Any] = {"socket_connect_timeout": 10, "socket_timeout": 30, "health_check_interval": 30}
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True
    client = redis.Redis.from_url(url, **options)
    make: Any = RedisBroker
    broker: RedisBroker = make(
        client=client,
        namespace=settings.broker_namespace,
        middleware=build_middleware(settings, metrics=metrics),
        dead_message_ttl=settings.dead_letter_ttl_seconds * 1000,
    )
    broker.declare_queue(QUEUE_NAME)
    return broker


_lock = threading.Lock()
_broker: RedisBroker | None = None
_broker_key: tuple[str, str] | None = None


def _environment_key(settings: Settings, worker_settings: WorkerSettings) -> tuple[str, str]:
    where = settings.redis_url if settings.redis_url is not None else f"embedded:{settings.home_path}"
    return where, worker_settings.broker_namespace


def get_broker(*, metrics: bool = False) -> RedisBroker:
    """The process's broker, built on first use from the environment and set as Dramatiq's global.

    It is rebuilt when `REDIS_URL`, `SUBSYNC_HOME` or `SUBSYNC_BROKER_NAMESPACE` changed since (tests
    run many CLI invocations in one process)."""
    global _broker, _broker_key
    settings, worker_settings = load_settings(), load_worker_settings()
    key = _environment_key(settings, worker_settings)
    with _lock:
        if _broker is None or key != _broker_key:
            _broker = build_broker(resolve_redis_url(settings), worker_settings, metrics=metrics)
            _broker_key = key
            dramatiq.set_broker(_broker)
        return _broker


def use_broker(broker: RedisBroker) -> RedisBroker:
    """Install `broker` as the process's broker until the environment changes (tests, the demo)."""
    global _broker, _broker_key
    with _lock:
        _broker = broker
        _broker_key = _environment_key(load_settings(), load_worker_settings())
        dramatiq.set_broker(broker)
    return broker


def boot_once(broker: dramatiq.Broker) -> None:
    """Emit `process_boot` once per broker, for in-process workers (the `dramatiq` CLI does it itself)."""
    with _lock:
        if getattr(broker, "_subsync_booted", False):
            return
        broker._subsync_booted = True  # type: ignore[attr-defined]
    broker.emit_after("process_boot")


def queue_keys(broker: RedisBroker, queue_name: str = QUEUE_NAME) -> dict[str, str]:
    base = f"{broker.namespace}:{queue_name}"
    return {
        "ready": base,
        "messages": f"{base}.msgs",
        "delayed": f"{base}.DQ",
        "delayed_messages": f"{base}.DQ.msgs",
        "dead": f"{base}.XQ",
        "dead_messages": f"{base}.XQ.msgs",
        "heartbeats": f"{broker.namespace}:__heartbeats__",
    }


def now_ms() -> int:
    return int(time.time() * 1000)
