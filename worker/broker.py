"""The Dramatiq Redis broker of the worker, its middleware and the worker's settings.

One broker per process, built from the environment (`REDIS_URL`, or the embedded Redis under
`SUBSYNC_HOME` when it is unset) and installed with `dramatiq.set_broker` by `get_broker()`.

Middleware, in order: Prometheus (worker processes only, when metrics are on), AgeLimit, TimeLimit,
GracefulShutdown (a ShutdownNotifications that first lets in-flight syncs finish), Callbacks,
Pipelines, DurableRetries (Retries with the policy of `worker.failures`, riding out Redis outages),
CurrentMessage, DeadLetterReasons, ForeignMessageIds, and SyncMetrics (with Prometheus).

The broker is `GuardedRedisBroker`: Dramatiq's Redis broker, which also dead-letters messages it
cannot decode (or over 1 MiB) instead of stranding them, and requeues delayed retries its consumer
dropped after a Redis connection error.

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
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message
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
from worker.events import MAX_MESSAGE_BYTES, QUEUE_NAME
from worker.failures import INVALID_PAYLOAD, RetryPolicy, classify, describe, kind_of
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
    #: A worker process whose last Redis command is older than this is presumed dead: the next
    #: maintenance pass of any other worker puts its unacknowledged messages back on the queue.
    #: Keep it well above the idle poll interval (1 s) and the longest Redis outage you ride out.
    broker_heartbeat_timeout_ms: int = Field(default=60_000, ge=1_000)
    #: Out of a million broker commands, how many also run that maintenance (Dramatiq's default 1000:
    #: an idle worker makes about 2 commands a second, so it runs every ~8 minutes on average).
    broker_maintenance_chance: int = Field(default=1_000, ge=0, le=1_000_000)

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


def dead_letter_record(
    reason: str, error: str, attempts: int, message_id: str | None, actor_name: str | None
) -> dict[str, Any]:
    """What `NS:subsync.dead-letter-reason:<id>` holds (JSON)."""
    return {
        "reason": reason,
        "error": error,
        "kind": str(kind_of(reason)),
        "attempts": attempts,
        "dead_lettered_at": format_time(datetime.now(UTC).replace(microsecond=0)),
        "message_id": message_id,
        "actor_name": actor_name,
    }


def store_dead_letter_reason(broker: RedisBroker, redis_message_id: str, record: dict[str, Any]) -> None:
    broker.client.set(
        dead_letter_reason_key(broker.namespace, redis_message_id), json.dumps(record), px=broker.dead_message_ttl
    )


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
        record = dead_letter_record(
            str(failure.get("reason")),
            str(failure.get("error")),
            int(failure.get("attempt") or message.options.get("retries") or 1),
            message.message_id,
            message.actor_name,
        )
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
                store_dead_letter_reason(broker, redis_id, record)
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


class _EnqueueUntilDone:
    """A broker whose `enqueue` waits out a Redis outage instead of raising (see DurableRetries)."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        wait = 0.5
        while True:
            try:
                return self._broker.enqueue(message, delay=delay)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning(
                    "retry not enqueued yet: Redis unreachable",
                    message_id=message.message_id,
                    error=str(exc),
                    next_try_seconds=wait,
                )
                time.sleep(wait)
                wait = min(wait * 2, 5.0)


class DurableRetries(Retries):
    """Dramatiq's Retries, except that a retry which cannot be enqueued because Redis is unreachable
    is tried again until Redis answers. Dramatiq's own swallows that error (middleware errors are
    only logged) and then acknowledges the failed message once Redis is back: the message would be
    lost. A worker killed while waiting here loses nothing either: the message is still in flight."""

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        proxy: Any = _EnqueueUntilDone(broker)
        retries: Any = super()  # Dramatiq's middleware hooks are untyped
        retries.after_process_message(proxy, message, result=result, exception=exception)


def build_middleware(settings: WorkerSettings, *, metrics: bool = False) -> list[Middleware]:
    policy = settings.retry_policy
    middleware: list[Middleware] = [
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
    ]
    if metrics:
        from dramatiq.middleware.prometheus import Prometheus

        from worker.metrics import SyncMetrics

        middleware.insert(0, Prometheus())
        middleware.append(SyncMetrics())
    return middleware


# --- the broker --------------------------------------------------------------------------------


_ENVELOPE: dict[str, tuple[type, ...]] = {
    "queue_name": (str,),
    "actor_name": (str,),
    "args": (list,),
    "kwargs": (dict,),
    "options": (dict,),
    "message_id": (str,),
    "message_timestamp": (int, float),
}
_KIND_NAMES = {str: "a string", list: "an array", dict: "an object", int: "a number"}


def _envelope_problem(fields: object) -> str | None:
    """What is wrong with a decoded message body, if anything (Dramatiq does not check the types)."""
    if not isinstance(fields, dict):
        return "the message must be a JSON object"
    for name, kinds in _ENVELOPE.items():
        if name not in fields:
            return f"the message has no {name!r}"
        value = fields[name]
        if not isinstance(value, kinds) or isinstance(value, bool):
            return f"the message field {name!r} must be {_KIND_NAMES[kinds[0]]}"
    unknown = sorted(str(k) for k in fields if k not in _ENVELOPE)
    if unknown:
        return f"the message has unknown fields: {', '.join(unknown)[:200]}"
    return None


class GuardedRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, except for messages it cannot turn into a `Message`.

    Dramatiq's own consumer raises out of its iterator on a body that is not a Dramatiq message
    (not JSON, nested too deeply to decode, missing fields): its consumer thread restarts, and the
    bad message *and every message prefetched with it* stay in this worker's in-flight set until
    the process dies — then another worker takes them and gets stuck the same way. Here such a
    message, or one larger than `MAX_MESSAGE_BYTES` (not even decoded), is dead-lettered at once
    with reason `invalid_payload`, and consuming goes on.
    """

    def __next__(self) -> MessageProxy | None:  # the loop of `_RedisConsumer.__next__`, plus the checks
        try:
            while True:
                if not self.message_cache:
                    messages: list[bytes | None] = []
                    if self.outstanding_message_count < self.prefetch:
                        self.message_cache = messages = self.broker.do_fetch(
                            self.queue_name, self.prefetch - self.outstanding_message_count
                        )
                    if not messages:
                        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                        time.sleep(backoff_ms / 1000)
                        return None
                    continue
                data = self.message_cache.pop(0)
                if data is None:  # an id pushed without its body: nothing to run
                    self.logger.warning("Found an id without a message body in queue %r.", self.queue_name)
                    continue
                self.misses = 0
                message = self._decode(data)
                if message is None:
                    continue
                self.queued_message_ids.add(message.message_id)
                return MessageProxy(message)
        except redis.ConnectionError as e:
            closed: Any = ConnectionClosed  # what the worker's consumer thread expects (untyped in Dramatiq)
            raise closed(e) from None

    def _decode(self, data: bytes) -> Message[Any] | None:
        if len(data) > MAX_MESSAGE_BYTES:
            self._reject(data, f"the message is {len(data)} bytes, over the limit of {MAX_MESSAGE_BYTES}")
            return None
        try:
            fields = dramatiq.get_encoder().decode(data)
        except Exception as exc:  # not UTF-8, not JSON, or nested too deeply for the decoder
            cause = exc.error if isinstance(exc, DecodeError) and isinstance(exc.error, BaseException) else exc
            self._reject(data, f"not a Dramatiq message: {describe(cause, limit=300)}")
            return None
        problem = _envelope_problem(fields)
        if problem is not None:
            self._reject(data, problem)
            return None
        self._check_redis_id(fields["options"], data)
        return Message(**{**fields, "args": tuple(fields["args"])})

    @property
    def _in_flight_key(self) -> str:
        return f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"

    def _in_flight_ids_with_body(self, data: bytes) -> list[str]:
        """This worker's in-flight ids on this queue whose stored body is `data` (the fetch script
        returns bodies only)."""
        client = self.broker.client
        ids = sorted(i.decode() if isinstance(i, bytes) else str(i) for i in client.smembers(self._in_flight_key))
        bodies = client.hmget(queue_keys(self.broker, self.queue_name)["messages"], ids) if ids else []
        return [redis_id for redis_id, body in zip(ids, bodies, strict=True) if body == data]

    def _check_redis_id(self, options: dict[str, Any], data: bytes) -> None:
        """A message is acknowledged by `options.redis_message_id` (Dramatiq's own messages always
        carry the right one). A foreign producer may get it wrong or leave it out; the message could
        then never be acknowledged, and would run again at every worker restart. Use the id its body
        was actually fetched under instead."""
        claimed = options.get("redis_message_id")
        if isinstance(claimed, str) and self.broker.client.sismember(self._in_flight_key, claimed):
            return
        found = self._in_flight_ids_with_body(data)
        if found:
            if claimed is not None:
                log.warning("message's redis_message_id is not its key; using the key", claimed=str(claimed)[:100])
            options["redis_message_id"] = found[0]

    def _reject(self, data: bytes, error: str) -> None:
        """Dead-letter the in-flight message(s) of this worker whose body is `data`."""
        for redis_id in self._in_flight_ids_with_body(data):
            _dead_letter_log.error(
                "message.dead_lettered", message_id=redis_id, reason=INVALID_PAYLOAD, error=error, attempts=1
            )
            store_dead_letter_reason(self.broker, redis_id, dead_letter_record(INVALID_PAYLOAD, error, 1, None, None))
            self.broker.do_nack(self.queue_name, redis_id)


_dead_letter_log = get_logger("worker.deadletters")


class GuardedRedisBroker(RedisBroker):
    """The worker's Redis broker: Dramatiq's, with `GuardedRedisConsumer`, and one more repair.

    Dramatiq's delay-queue consumer thread keeps the retries it fetched in memory until their eta;
    on a Redis connection error it drops them and starts a new consumer, while Redis still lists
    them as in flight for this worker — which is alive and heartbeating, so no maintenance pass
    ever requeues them: they would wait for this process to die. So each new consumer of a delay
    queue first puts back whatever this broker still holds in flight on it (at the first start
    that is nothing; after a restart, exactly what was dropped).
    """

    @property
    def consumer_class(self) -> type[GuardedRedisConsumer]:
        return GuardedRedisConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        if queue_name.endswith(".DQ"):
            try:
                self.requeue_in_flight(queue_name)
            except redis.ConnectionError as e:
                closed: Any = ConnectionClosed  # the consumer thread waits and tries again
                raise closed(e) from None
        return super().consume(queue_name, prefetch=prefetch, timeout=timeout)

    def requeue_in_flight(self, queue_name: str) -> int:
        """Put this broker's in-flight messages of `queue_name` back on it; returns how many."""
        in_flight = f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in self.client.smembers(in_flight)]
        if ids:
            log.warning("requeueing messages dropped by a restarted consumer", queue=queue_name, count=len(ids))
            self.do_requeue(queue_name, *ids)
        return len(ids)


def build_broker(url: str, settings: WorkerSettings | None = None, *, metrics: bool = False) -> RedisBroker:
    """A Redis broker for `url` with the worker's middleware; the queue is declared."""
    settings = settings or load_worker_settings()
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
