"""`subsync status`: queue depth, dead letters, stuck messages and how far behind the reconciler is."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine

from worker.config import Settings
from worker.contract.events import QUEUE_NAME
from worker.contract.text import format_optional_time
from worker.infra.clock import utcnow
from worker.queue.keys import in_flight_key, queue_keys
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


#: How many stuck messages `subsync status` lists (all are counted).
STUCK_LIST_LIMIT = 20

#: Why a message is stuck (docs/operations.md §4, `subsync status`):
DEAD_WORKER = "in_progress_dead_worker"  # in flight on a worker whose heartbeat expired
TOO_LONG = "in_progress_too_long"  # in flight on a live worker, queued longer ago than the threshold
UNOWNED = "unowned"  # stored, but neither queued nor in flight on any worker: nothing will ever run it
DELAYED_FAR = "delayed_beyond_max_backoff"  # waiting for an eta later than any retry backoff
STUCK_REASONS = (DEAD_WORKER, TOO_LONG, UNOWNED, DELAYED_FAR)


@dataclass(frozen=True, slots=True)
class StuckLimits:
    """When a message counts as stuck: in flight for longer than `stuck_after_ms` since it was
    (re)queued, on a worker silent for over `heartbeat_timeout_ms`, or delayed beyond `max_backoff_ms`."""

    stuck_after_ms: int
    heartbeat_timeout_ms: int
    max_backoff_ms: int

    @classmethod
    def from_settings(cls, settings: Settings, stuck_after_seconds: float | None = None) -> StuckLimits:
        """By default a message is stuck once in flight for longer than one run may take (the time
        limit) plus the longest retry wait (the max backoff) since it was last queued."""
        if stuck_after_seconds is None:
            stuck_after_seconds = settings.time_limit_seconds + settings.max_backoff_ms / 1000
        return cls(
            stuck_after_ms=int(stuck_after_seconds * 1000),
            heartbeat_timeout_ms=settings.broker_heartbeat_timeout_ms,
            max_backoff_ms=settings.max_backoff_ms,
        )


def _ids(values: Any) -> list[str]:
    return sorted(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def _fields(body: bytes | str | None) -> dict[str, Any]:
    try:
        decoded = json.loads(body) if body is not None else None
    except (ValueError, RecursionError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _millis(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value) if abs(value) < 2**62 else None


def _time(ms: int | None) -> str | None:
    if ms is None:
        return None
    try:
        return format_optional_time(datetime.fromtimestamp(ms / 1000, UTC).replace(microsecond=0))
    except (ValueError, OverflowError, OSError):
        return str(ms)


def _in_flight(broker: RedisBroker, queue_name: str) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
    """Every worker's in-flight ids of `queue_name` and its delay queue: id → (queue, worker id);
    and each worker's last heartbeat (ms)."""
    prefix = f"{broker.namespace}:__acks__."
    in_flight: dict[str, tuple[str, str]] = {}
    for key in _ids(broker.client.scan_iter(match=f"{prefix}*", count=500)):
        worker_id, _, queue = key[len(prefix) :].partition(".")
        if queue not in (queue_name, f"{queue_name}.DQ"):
            continue
        for redis_id in _ids(broker.client.smembers(in_flight_key(broker.namespace, worker_id, queue))):
            in_flight[redis_id] = (queue, worker_id)
    heartbeats: Any = broker.client.zrange(queue_keys(broker, queue_name)["heartbeats"], 0, -1, withscores=True)
    return in_flight, {_ids([worker_id])[0]: int(score) for worker_id, score in heartbeats}


def delayed_in_memory(broker: RedisBroker, *, now_ms: int, queue_name: str = QUEUE_NAME) -> dict[str, int]:
    """Retries held in memory by live workers until their eta, by actor: the ids of the delay queue in
    flight on a worker whose heartbeat is fresh (what Dramatiq's own `dramatiq_delayed_messages_inprogress`
    miscounts; docs/operations.md §4 "Metrics")."""
    in_flight, heartbeats = _in_flight(broker, queue_name)
    delay_queue = f"{queue_name}.DQ"
    ids = [
        redis_id
        for redis_id, (queue, worker_id) in sorted(in_flight.items())
        if queue == delay_queue and now_ms - heartbeats.get(worker_id, 0) <= broker.heartbeat_timeout
    ]
    counts: dict[str, int] = {}
    if ids:
        for body in broker.client.hmget(queue_keys(broker, queue_name)["delayed_messages"], ids):
            if body is None:
                continue  # acknowledged meanwhile
            actor = _fields(body).get("actor_name")
            name = actor if isinstance(actor, str) else "unknown"
            counts[name] = counts.get(name, 0) + 1
    return counts


def stuck_messages(
    broker: RedisBroker, limits: StuckLimits, *, now_ms: int, queue_name: str = QUEUE_NAME
) -> list[dict[str, Any]]:
    """The messages of `queue_name` (and its delay queue) that nothing will run soon, oldest first."""
    keys = queue_keys(broker, queue_name)
    client = broker.client
    in_flight, heartbeats = _in_flight(broker, queue_name)
    ready = set(_ids(client.lrange(keys["ready"], 0, -1))) | set(_ids(client.lrange(keys["delayed"], 0, -1)))
    stored = {
        **{_ids([k])[0]: (queue_name, v) for k, v in client.hgetall(keys["messages"]).items()},
        **{_ids([k])[0]: (f"{queue_name}.DQ", v) for k, v in client.hgetall(keys["delayed_messages"]).items()},
    }
    if any(redis_id not in ready and redis_id not in in_flight for redis_id in stored):
        in_flight, heartbeats = _in_flight(broker, queue_name)  # a worker may have fetched it meanwhile
        ready |= set(_ids(client.lrange(keys["ready"], 0, -1))) | set(_ids(client.lrange(keys["delayed"], 0, -1)))
    stuck = []
    for redis_id, (queue, body) in stored.items():
        fields = _fields(body)
        options: dict[str, Any] = fields["options"] if isinstance(fields.get("options"), dict) else {}
        queued = [_millis(fields.get("message_timestamp")), _millis(options.get("requeue_timestamp"))]
        queued_ms = max((q for q in queued if q is not None), default=None)
        eta_ms = _millis(options.get("eta"))
        owner = in_flight.get(redis_id, (None, None))[1]
        why = None
        if queue.endswith(".DQ") and (eta_ms is None or eta_ms > now_ms + limits.max_backoff_ms):
            why = DELAYED_FAR
        elif owner is not None and now_ms - heartbeats.get(owner, 0) > limits.heartbeat_timeout_ms:
            why = DEAD_WORKER
        elif owner is not None and queued_ms is not None and now_ms - queued_ms > limits.stuck_after_ms:
            why = TOO_LONG if not queue.endswith(".DQ") else None
        elif owner is None and redis_id not in ready:
            why = UNOWNED
        if why is None:
            continue
        stuck.append(
            {
                "id": redis_id,
                "queue": queue,
                "why": why,
                "worker": owner,
                "message_id": fields.get("message_id") if isinstance(fields.get("message_id"), str) else None,
                "actor_name": fields.get("actor_name") if isinstance(fields.get("actor_name"), str) else None,
                "queued_at": _time(queued_ms),
                "eta": _time(eta_ms),
            }
        )
    return sorted(stuck, key=lambda m: (m["queued_at"] or "", m["id"]))


def status(
    engine: Engine,
    broker: RedisBroker,
    *,
    namespace: str | None = None,
    now: datetime | None = None,
    limits: StuckLimits | None = None,
) -> dict[str, Any]:
    now = now or utcnow()
    limits = limits or StuckLimits.from_settings(Settings.model_construct())  # the defaults
    depth = queue_depth(broker)
    stuck = stuck_messages(broker, limits, now_ms=int(now.timestamp() * 1000))
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
        "stuck": len(stuck),
        **{reason: sum(1 for m in stuck if m["why"] == reason) for reason in STUCK_REASONS},
        "stuck_after_seconds": limits.stuck_after_ms // 1000,
        "stuck_messages": stuck[:STUCK_LIST_LIMIT],
    }
