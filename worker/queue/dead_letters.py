"""Inspecting and replaying Dramatiq's dead-letter queue of `subscription-sync` (`subsync dead-letters`).

Dead letters live in `NS:subscription-sync.XQ` (sorted set of ids scored by the time they failed, in
ms) and `NS:subscription-sync.XQ.msgs` (id → message JSON); their reason is kept by the worker under
`NS:subsync.dead-letter-reason:<id>` (`worker.queue.middleware.dead_letter_reasons`). Dramatiq drops
dead letters older than its dead-message TTL (7 days by default).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from worker.contract.events import QUEUE_NAME
from worker.contract.text import format_time
from worker.errors import NotFoundError
from worker.infra.clock import utcnow
from worker.infra.logging import get_logger
from worker.queue.failures import kind_of
from worker.queue.keys import dead_letter_reason_key, queue_keys

log = get_logger(__name__)


def dead_letter_record(
    reason: str, error: str, attempts: int, message_id: str | None, actor_name: str | None
) -> dict[str, Any]:
    """What `NS:subsync.dead-letter-reason:<id>` holds (JSON)."""
    return {
        "reason": reason,
        "error": error,
        "kind": str(kind_of(reason)),
        "attempts": attempts,
        "dead_lettered_at": format_time(utcnow().replace(microsecond=0)),
        "message_id": message_id,
        "actor_name": actor_name,
    }


def store_dead_letter_reason(broker: RedisBroker, redis_message_id: str, record: dict[str, Any]) -> None:
    broker.client.set(
        dead_letter_reason_key(broker.namespace, redis_message_id), json.dumps(record), px=broker.dead_message_ttl
    )


def log_dead_letter(record: dict[str, Any], *, message_id: str | None, **fields: Any) -> None:
    """The one `message.dead_lettered` log line of a dead letter."""
    log.error(
        "message.dead_lettered",
        message_id=message_id,
        **fields,
        reason=record["reason"],
        error=record["error"],
        attempts=record["attempts"],
    )


#: Options that belong to one delivery and are dropped when a dead letter is replayed.
_DELIVERY_OPTIONS = ("redis_message_id", "retries", "traceback", "requeue_timestamp", "eta", "subsync_failure")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str  # the id in the dead-letter queue (Dramatiq's redis_message_id)
    dead_lettered_at: datetime
    message: dict[str, Any] | None  # the message as stored, None when it cannot be decoded
    raw: str
    reason: dict[str, Any] | None

    @property
    def payload(self) -> Any:
        if self.message is None:
            return None
        args = self.message.get("args") or []
        return args[0] if args else None

    def to_json(self) -> dict[str, Any]:
        message = self.message or {}
        options = message.get("options") or {}
        reason = self.reason or {}
        return {
            "id": self.id,
            "message_id": message.get("message_id"),
            "actor_name": message.get("actor_name"),
            "dead_lettered_at": format_time(self.dead_lettered_at),
            "reason": reason.get("reason", "unknown"),
            "error": reason.get("error"),
            "attempts": reason.get("attempts", int(options.get("retries") or 0) + 1),
            "event": self.payload if self.message is not None else _preview(self.raw),
        }


#: How much of an undecodable dead letter `to_json` shows (it may be up to the message size limit).
RAW_PREVIEW_CHARS = 2000


def _preview(raw: str) -> str:
    return raw if len(raw) <= RAW_PREVIEW_CHARS else f"{raw[:RAW_PREVIEW_CHARS]}… ({len(raw)} characters)"


def _decode(value: bytes | str | None) -> tuple[dict[str, Any] | None, str]:
    if value is None:
        return None, ""
    raw = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to decode (a poison message)
        return None, raw
    return (decoded if isinstance(decoded, dict) else None), raw


def list_dead_letters(
    broker: RedisBroker, *, limit: int = 100, queue_name: str = QUEUE_NAME, ids: Sequence[str] | None = None
) -> list[DeadLetter]:
    """Dead letters, newest first (at most `limit`), or exactly `ids` (unknown ids are skipped)."""
    keys = queue_keys(broker, queue_name)
    client = broker.client
    if ids is None:
        entries: Any = client.zrevrange(keys["dead"], 0, max(limit, 1) - 1, withscores=True)
        scored = [(_text(member), float(score)) for member, score in entries]
    else:
        pipe = client.pipeline(transaction=False)
        for dead_id in ids:
            pipe.zscore(keys["dead"], dead_id)
        scores = pipe.execute()
        scored = [(dead_id, float(score)) for dead_id, score in zip(ids, scores, strict=True) if score is not None]
    if not scored:
        return []
    message_ids = [dead_id for dead_id, _ in scored]
    bodies = client.hmget(keys["dead_messages"], message_ids)
    reasons = client.mget([dead_letter_reason_key(broker.namespace, dead_id) for dead_id in message_ids])
    letters = []
    for (dead_id, score), body, reason in zip(scored, bodies, reasons, strict=True):
        message, raw = _decode(body)
        reason_data, _ = _decode(reason)
        letters.append(
            DeadLetter(
                id=dead_id,
                dead_lettered_at=datetime.fromtimestamp(score / 1000, UTC).replace(microsecond=0),
                message=message,
                raw=raw,
                reason=reason_data,
            )
        )
    return letters


def count_dead_letters(broker: RedisBroker, queue_name: str = QUEUE_NAME) -> int:
    return int(broker.client.zcard(queue_keys(broker, queue_name)["dead"]))


@dataclass(frozen=True, slots=True)
class Replayed:
    id: str
    message_id: str
    actor_name: str


def retry_dead_letters(
    broker: RedisBroker, ids: Sequence[str] | None, *, queue_name: str = QUEUE_NAME
) -> list[Replayed]:
    """Re-enqueue dead letters (`ids`, or every one when None) as fresh deliveries of the same message
    (same `message_id`, retry count and age reset) and remove them from the dead-letter queue.

    Raises NotFoundError, before replaying anything, when an id is not in the dead-letter queue or
    cannot be decoded. Replaying is at least once: a crash between the enqueue and the removal leaves
    the dead letter in place (handling a message twice is harmless)."""
    keys = queue_keys(broker, queue_name)
    if ids is None:
        letters = list_dead_letters(broker, limit=count_dead_letters(broker, queue_name) or 1, queue_name=queue_name)
    else:
        unique = list(dict.fromkeys(ids))
        letters = list_dead_letters(broker, ids=unique, queue_name=queue_name)
        missing = sorted(set(unique) - {letter.id for letter in letters})
        if missing:
            raise NotFoundError(f"not in the dead-letter queue: {', '.join(missing)}")
    undecodable = [letter.id for letter in letters if letter.message is None]
    if undecodable:
        raise NotFoundError(f"cannot decode dead letter(s) {', '.join(undecodable)}; remove them with redis-cli")
    replayed: list[Replayed] = []
    for letter in letters:
        assert letter.message is not None
        fields = letter.message
        options = {k: v for k, v in (fields.get("options") or {}).items() if k not in _DELIVERY_OPTIONS}
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue_name,
            actor_name=str(fields.get("actor_name")),
            args=tuple(fields.get("args") or ()),
            kwargs=dict(fields.get("kwargs") or {}),
            options=options,
            message_id=str(fields.get("message_id") or letter.id),
            # a fresh timestamp, so that an age limit does not drop the replay at once
        )
        broker.enqueue(message)
        pipe = broker.client.pipeline(transaction=True)
        pipe.zrem(keys["dead"], letter.id)
        pipe.hdel(keys["dead_messages"], letter.id)
        pipe.delete(dead_letter_reason_key(broker.namespace, letter.id))
        pipe.execute()
        replayed.append(Replayed(letter.id, message.message_id, message.actor_name))
    return replayed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
