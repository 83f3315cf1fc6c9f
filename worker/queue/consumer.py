"""The one module that touches Dramatiq's private internals: the worker's Redis consumer and broker.

Everything else extends Dramatiq through its public interfaces (middleware, `consumer_class`). What is
copied here is pinned to one Dramatiq minor version (`pyproject.toml`), and
`tests/queue/test_consumer.py` fails loudly when the copied internal changes upstream.

- `GuardedRedisConsumer` subclasses `dramatiq.brokers.redis._RedisConsumer` and re-implements its
  `__next__` loop, adding the checks of messages Dramatiq cannot decode.
- `GuardedRedisBroker` relies on the layout of Dramatiq's in-flight sets (`worker.queue.keys.in_flight_key`),
  its `enqueue_many` on the layout of a queue (`worker.queue.keys.queue_keys`), and it runs Dramatiq's
  `dispatch.lua` with one command appended (`fetch_with_ids`), through the broker's private `_dispatch` and
  `scripts`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

import dramatiq
import dramatiq.brokers.redis as dramatiq_redis
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message

from worker.contract.events import MAX_MESSAGE_BYTES
from worker.infra.logging import get_logger
from worker.queue.dead_letters import dead_letter_record, log_dead_letter, store_dead_letter_reason
from worker.queue.failures import FAILURE_OPTION, INVALID_ENVELOPE, INVALID_PAYLOAD, describe
from worker.queue.keys import in_flight_key, queue_keys
from worker.queue.liveness import beat
from worker.queue.middleware.owed_invoice_events import UNPUBLISHED_OPTION

log = get_logger(__name__)


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

#: Longest `actor_name` and `message_id` accepted (they are logged and kept with dead letters).
MAX_NAME_CHARS = 256
#: `message_timestamp` and `options.eta` are milliseconds since the epoch before the year 10000.
_MAX_EPOCH_MS = 253_402_300_800_000
#: Slack for producers' clocks when checking how far ahead an `eta` is.
_CLOCK_SLACK_MS = 60_000

#: Options Dramatiq or its middleware read from a message to override how it is handled (retry
#: policy, limits, callbacks, pipelines, priority). This worker's policy is its own
#: (docs/operations.md §6): a message carrying one is refused rather than half-honoured.
POLICY_OPTIONS = frozenset(
    {
        "max_retries", "min_backoff", "max_backoff", "retry_when", "throws", "on_retry_exhausted",
        "max_age", "time_limit", "notify_shutdown", "on_success", "on_failure", "callbacks",
        "pipe_target", "pipe_ignore", "group_completion_uuid", "group_completion_callbacks",
        "delay", "broker_priority", "priority", "store_results", "result_ttl",
    }
)  # fmt: skip


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _option_problem(name: str, value: object, *, now_ms: int, max_delay_ms: int) -> str | None:
    """What is wrong with one message option, if anything. Accepted: the options Dramatiq's broker and
    Retries write (`redis_message_id`, `retries`, `eta`, `traceback`, `requeue_timestamp`) and the
    worker's own (`subsync_failure`, `subsync_unpublished`), each of its type."""
    if name == "redis_message_id":
        return None  # replaced by the key the body was fetched under (`GuardedRedisConsumer._decode`)
    if name == "retries":
        if not _is_int(value) or value < 0:  # type: ignore[operator]
            return f"options.retries must be an integer >= 0, not {_shown(value)}"
        return None
    if name == "eta":
        latest = now_ms + max_delay_ms + _CLOCK_SLACK_MS
        if not _is_int(value) or not 0 <= value <= latest:  # type: ignore[operator]
            return (
                f"options.eta must be an integer time in milliseconds since the epoch, at most "
                f"{max_delay_ms // 1000} s ahead (SUBSYNC_MAX_DELAY_SECONDS), not {_shown(value)}"
            )
        return None
    if name == "traceback":
        return None if value is None or isinstance(value, str) else "options.traceback must be a string"
    if name == "requeue_timestamp":
        if not _is_int(value) or not 0 <= value < _MAX_EPOCH_MS:  # type: ignore[operator]
            return f"options.requeue_timestamp must be a time in milliseconds since the epoch, not {_shown(value)}"
        return None
    if name == FAILURE_OPTION:
        return None if isinstance(value, dict) else f"options.{FAILURE_OPTION} must be an object"
    if name == UNPUBLISHED_OPTION:
        return None if isinstance(value, list) else f"options.{UNPUBLISHED_OPTION} must be an array"
    if name in POLICY_OPTIONS:
        return f"options.{name} is not accepted: the worker's retry policy, limits and callbacks are its own"
    return f"options.{_shown(name)[1:-1]} is not an option this worker knows"


def _envelope_problem(fields: object, queue_name: str, *, now_ms: int, max_delay_ms: int) -> str | None:
    """What is wrong with a decoded message body fetched from `queue_name`, if anything: Dramatiq
    checks none of it, and some of it (another `queue_name`, odd options) kills a worker thread or
    loses the message (docs/operations.md §8 lists the rules)."""
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
    if fields["queue_name"] != queue_name:
        return f"queue_name must be {queue_name!r}, the queue the message is on, not {_shown(fields['queue_name'])}"
    for name in ("actor_name", "message_id"):
        value = fields[name]
        if not 0 < len(value) <= MAX_NAME_CHARS or not value.isprintable():
            return f"{name} must be 1-{MAX_NAME_CHARS} printable characters, not {_shown(value)}"
    timestamp = fields["message_timestamp"]
    if not (math.isfinite(timestamp) and 0 <= timestamp < _MAX_EPOCH_MS):
        return f"message_timestamp must be milliseconds since the epoch, not {_shown(timestamp)}"
    options = fields["options"]
    for name, value in options.items():
        problem = _option_problem(name, value, now_ms=now_ms, max_delay_ms=max_delay_ms)
        if problem is not None:
            return problem
    if queue_name.endswith(".DQ") and "eta" not in options:
        return "options.eta is required on the delay queue"
    return None


class GuardedRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, except for messages it cannot turn into a `Message`.

    Dramatiq's own consumer raises out of its iterator on a body that is not a Dramatiq message
    (not JSON, nested too deeply to decode, missing fields): its consumer thread restarts, and the
    bad message *and every message prefetched with it* stay in this worker's in-flight set until
    the process dies — then another worker takes them and gets stuck the same way. Here such a
    message, or one larger than `MAX_MESSAGE_BYTES` (not even decoded), is dead-lettered at once
    with reason `invalid_payload`, and consuming goes on.

    A message that decodes but whose envelope a worker cannot honour is dead-lettered at once with
    reason `invalid_envelope` (`_envelope_problem`): Dramatiq would otherwise run it and then kill
    the worker thread post-processing it (a `queue_name` this worker does not consume), ack it on
    the wrong queue (stranding it in flight), lose it (odd `retries` and policy options break the
    Retries middleware, and the message is acknowledged), or hold it in memory "in progress" until
    an `eta` centuries away.

    Messages are fetched with the key each was stored under (`GuardedRedisBroker.fetch_with_ids`) and
    acknowledged under that key, whatever their `options.redis_message_id` says.
    """

    def __next__(self) -> MessageProxy | None:  # the loop of `_RedisConsumer.__next__`, plus the checks
        beat()  # this consumer thread is polling (worker.queue.liveness)
        try:
            while True:
                if not self.message_cache:
                    fetched: list[tuple[str, bytes]] = []
                    if self.outstanding_message_count < self.prefetch:
                        self.message_cache = fetched = self.broker.fetch_with_ids(
                            self.queue_name, self.prefetch - self.outstanding_message_count
                        )
                    if not fetched:
                        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                        time.sleep(backoff_ms / 1000)
                        return None
                    continue
                redis_id, data = self.message_cache.pop(0)
                self.misses = 0
                message = self._decode(redis_id, data)
                if message is None:
                    continue
                self.queued_message_ids.add(message.message_id)
                return MessageProxy(message)
        except redis.ConnectionError as e:
            closed: Any = ConnectionClosed  # what the worker's consumer thread expects (untyped in Dramatiq)
            raise closed(e) from None

    def _decode(self, redis_id: str, data: bytes) -> Message[Any] | None:
        if len(data) > MAX_MESSAGE_BYTES:
            self._reject(redis_id, f"the message is {len(data)} bytes, over the limit of {MAX_MESSAGE_BYTES}")
            return None
        try:
            fields = dramatiq.get_encoder().decode(data)
        except Exception as exc:  # not UTF-8, not JSON, or nested too deeply for the decoder
            cause = exc.error if isinstance(exc, DecodeError) and isinstance(exc.error, BaseException) else exc
            self._reject(redis_id, f"not a Dramatiq message: {describe(cause, limit=300)}")
            return None
        now_ms = int(time.time() * 1000)
        max_delay_ms = getattr(self.broker, "max_delay_ms", DEFAULT_MAX_DELAY_MS)
        problem = _envelope_problem(fields, self.queue_name, now_ms=now_ms, max_delay_ms=max_delay_ms)
        if problem is not None:
            self._reject(redis_id, problem, INVALID_ENVELOPE, fields)
            return None
        claimed = fields["options"].get("redis_message_id")
        if claimed is not None and claimed != redis_id:
            log.warning("message's redis_message_id is not its key; using the key", claimed=str(claimed)[:100])
        # A message is acknowledged by `options.redis_message_id`; Dramatiq's own messages carry their
        # key, a foreign producer's may carry another one (the same body stored under two keys), or
        # none: each delivery is acknowledged under the key it was fetched under (docs/operations.md §5).
        fields["options"]["redis_message_id"] = redis_id
        return Message(**{**fields, "args": tuple(fields["args"])})

    def _reject(self, redis_id: str, error: str, reason: str = INVALID_PAYLOAD, fields: object = None) -> None:
        """Dead-letter the in-flight message fetched under `redis_id`."""
        fields = fields if isinstance(fields, dict) else {}
        message_id, actor_name = (_text_field(fields, name) for name in ("message_id", "actor_name"))
        record = dead_letter_record(reason, error, 1, message_id, actor_name)
        log_dead_letter(record, message_id=message_id or redis_id, redis_message_id=redis_id, queue=self.queue_name)
        store_dead_letter_reason(self.broker, redis_id, record)
        self.broker.do_nack(self.queue_name, redis_id)


def _text_field(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    return value[:MAX_NAME_CHARS] if isinstance(value, str) and value else None


#: The dispatch command `GuardedRedisBroker.fetch_with_ids` runs.
FETCH_WITH_IDS = "subsync_fetch"

#: Appended to Dramatiq's `dispatch.lua` (which returns only from the branch of the command it ran, and
#: has none for this one): Dramatiq's `fetch`, except that an id whose body is gone is not marked in
#: flight, and each body is returned after its id (`id1, body1, id2, body2, …`; `false` for no body).
_FETCH_WITH_IDS_LUA = """
if command == "subsync_fetch" then
    local prefetch = math.min(ARGS[1], max_unpack_size)
    local fetched = {}
    for i=1,prefetch do
        local message_id = redis.call("lpop", queue_full_name)
        if not message_id then
            break
        end
        local message_data = redis.call("hget", queue_messages, message_id)
        if message_data then
            redis.call("sadd", queue_acks, message_id)
        end
        table.insert(fetched, message_id)
        table.insert(fetched, message_data)
    end
    return fetched
end
"""
_DISPATCH_WITH_FETCH_IDS = (
    Path(dramatiq_redis.__file__).parent / "redis" / "dispatch.lua"
).read_text() + _FETCH_WITH_IDS_LUA

#: How far ahead an `options.eta` may be unless the broker is told otherwise (`SUBSYNC_MAX_DELAY_SECONDS`).
DEFAULT_MAX_DELAY_MS = 7 * 86_400_000


class GuardedRedisBroker(RedisBroker):
    """The worker's Redis broker: Dramatiq's, with `GuardedRedisConsumer`, and one more repair.

    Dramatiq's delay-queue consumer thread keeps the retries it fetched in memory until their eta;
    on a Redis connection error it drops them and starts a new consumer, while Redis still lists
    them as in flight for this worker — which is alive and heartbeating, so no maintenance pass
    ever requeues them: they would wait for this process to die. So each new consumer of a delay
    queue first puts back whatever this broker still holds in flight on it (at the first start
    that is nothing; after a restart, exactly what was dropped).
    """

    def __init__(self, *args: Any, max_delay_ms: int = DEFAULT_MAX_DELAY_MS, **kwargs: Any) -> None:
        init: Any = super().__init__  # untyped in Dramatiq
        init(*args, **kwargs)
        # Dramatiq's dispatch script with one more command (`fetch_with_ids`); every other command is unchanged.
        self.scripts["dispatch"] = self.client.register_script(_DISPATCH_WITH_FETCH_IDS)
        #: Latest `options.eta` a consumer accepts, from now (`GuardedRedisConsumer`).
        self.max_delay_ms = max_delay_ms

    def fetch_with_ids(self, queue_name: str, count: int) -> list[tuple[str, bytes]]:
        """Up to `count` messages of `queue_name`, each with the key it was fetched under, marked in
        flight on this worker. Dramatiq's `fetch` returns bodies only, marks an id in flight even when
        its body is gone (an id pushed again after its message was handled: it stayed in flight for
        the worker's life), and leaves a body stored under two keys to be acknowledged under one of
        them. Here an id without a body is dropped, not marked in flight, and every body comes with
        its own key (docs/operations.md §5)."""
        dispatch: Any = self._dispatch  # untyped in Dramatiq
        reply: Any = dispatch(FETCH_WITH_IDS)(queue_name, count)
        fetched: list[tuple[str, bytes]] = []
        for index in range(0, len(reply), 2):
            key = reply[index].decode() if isinstance(reply[index], bytes) else str(reply[index])
            body = reply[index + 1]
            if body is False or body is None:
                log.warning("an id without a message body was dropped from the queue", queue=queue_name, key=key[:100])
                continue
            fetched.append((key, body))
        return fetched

    @property
    def consumer_class(self) -> type[GuardedRedisConsumer]:
        return GuardedRedisConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        beat()  # a consumer thread restarting after an error is alive (worker.queue.liveness)
        if queue_name.endswith(".DQ"):
            try:
                self.requeue_in_flight(queue_name)
            except redis.ConnectionError as e:
                closed: Any = ConnectionClosed  # the consumer thread waits and tries again
                raise closed(e) from None
        return super().consume(queue_name, prefetch=prefetch, timeout=timeout)

    def enqueue_many(self, messages: Sequence[Message[Any]]) -> list[Message[Any]]:
        """`enqueue` each message (no delay) in one round trip: what `RedisBroker.enqueue` does for one — a
        fresh `redis_message_id`, the middleware's before/after hooks, the message stored in the queue's
        hash and its id pushed on the queue's list (the `enqueue` command of Dramatiq's dispatch script) —
        for the whole batch in one MULTI/EXEC of two commands (one HSET, one RPUSH per queue). The
        `reconcile_due` fan-out thus enqueues a page per round trip (docs/scaling.md §3). The batch is
        atomic; the dispatch script's extras (this producer's heartbeat, the occasional maintenance pass)
        are left to the brokers that consume."""
        sent: list[Message[Any]] = []
        by_queue: dict[str, dict[str, bytes]] = {}
        for original in messages:
            message = original.copy(options={"redis_message_id": str(uuid4())})
            self.emit_before("enqueue", message, None)
            by_queue.setdefault(message.queue_name, {})[message.options["redis_message_id"]] = message.encode()
            sent.append(message)
        if by_queue:
            pipe = self.client.pipeline(transaction=True)
            for queue_name, stored in by_queue.items():
                keys = queue_keys(self, queue_name)
                pipe.hset(keys["messages"], mapping=stored)  # type: ignore[arg-type]
                pipe.rpush(keys["ready"], *stored)
            pipe.execute()
        for message in sent:
            self.emit_after("enqueue", message, None)
        return sent

    def requeue_in_flight(self, queue_name: str) -> int:
        """Put this broker's in-flight messages of `queue_name` back on it; returns how many."""
        in_flight = in_flight_key(self.namespace, self.broker_id, queue_name)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in self.client.smembers(in_flight)]
        if ids:
            log.warning("requeueing messages dropped by a restarted consumer", queue=queue_name, count=len(ids))
            self.do_requeue(queue_name, *ids)
        return len(ids)
