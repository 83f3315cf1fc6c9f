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
from worker.errors import InvalidInputError, NotFoundError
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
    """One dead letter as stored. Nothing about its body is assumed: a foreign producer's message may
    be anything (not JSON, an array, odd `options`), and `to_json` shows whatever is there
    (docs/operations.md §5 "Dead letters")."""

    id: str  # the id in the dead-letter queue (Dramatiq's redis_message_id)
    dead_lettered_at: datetime
    message: dict[str, Any] | None  # the message as stored, None when it is not a JSON object
    raw: str
    reason: dict[str, Any] | None

    @property
    def payload(self) -> Any:
        if self.message is None:
            return None
        args = self.message.get("args")
        return args[0] if isinstance(args, list) and args else None

    @property
    def replayable(self) -> bool:
        """Whether the message can be rebuilt as a Dramatiq message (else `retry` re-enqueues the body as stored)."""
        message = self.message
        return (
            message is not None
            and isinstance(message.get("actor_name"), str)
            and bool(message["actor_name"])
            and isinstance(message.get("args", []), list)
            and isinstance(message.get("kwargs", {}), dict)
        )

    def to_json(self) -> dict[str, Any]:
        message = self.message or {}
        options = message.get("options")
        reason = self.reason or {}
        attempts: Any = reason.get("attempts")
        if not _is_count(attempts):
            retries: Any = options.get("retries") if isinstance(options, dict) else None
            attempts = retries + 1 if _is_count(retries) else None
        return {
            "id": self.id,
            "message_id": _scalar(message.get("message_id")),
            "actor_name": _scalar(message.get("actor_name")),
            "dead_lettered_at": format_time(self.dead_lettered_at),
            "reason": reason.get("reason") if isinstance(reason.get("reason"), str) else "unknown",
            "error": _scalar(reason.get("error")),
            "attempts": attempts,
            "event": self.payload if self.message is not None else _preview(self.raw),
        }


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def _scalar(value: object) -> str | None:
    """A field shown as text: a string as it is, anything else as its JSON (None when absent)."""
    if value is None or isinstance(value, str):
        return value
    return _preview(json.dumps(value, ensure_ascii=False))


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
            DeadLetter(id=dead_id, dead_lettered_at=_score_time(score), message=message, raw=raw, reason=reason_data)
        )
    return letters


def _score_time(score: float) -> datetime:
    """The time a dead letter was dead-lettered (its score, ms); a score nobody could have written
    (a hand-made entry) shows as the epoch rather than failing the listing."""
    try:
        return datetime.fromtimestamp(score / 1000, UTC).replace(microsecond=0)
    except (ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, UTC)


def count_dead_letters(broker: RedisBroker, queue_name: str = QUEUE_NAME) -> int:
    return int(broker.client.zcard(queue_keys(broker, queue_name)["dead"]))


#: Shortest id prefix `dead-letters retry` and `delete` accept (and the table prints).
MIN_ID_PREFIX = 8


def resolve_ids(broker: RedisBroker, given: Sequence[str], *, queue_name: str = QUEUE_NAME) -> list[str]:
    """The dead-letter ids meant by `given`: each an id, or a prefix of exactly one id (at least
    `MIN_ID_PREFIX` characters; the table prints such prefixes). Raises NotFoundError naming the
    ones that match nothing, InvalidInputError the ambiguous ones — before anything is changed."""
    members: Any = broker.client.zrange(queue_keys(broker, queue_name)["dead"], 0, -1)
    every = sorted(_text(member) for member in members)
    known = set(every)
    resolved: list[str] = []
    missing: list[str] = []
    ambiguous: list[str] = []
    for given_id in dict.fromkeys(given):
        wanted = given_id.removesuffix(SHORTENED).removesuffix("...") if given_id not in known else given_id
        if wanted in known:
            resolved.append(wanted)
            continue
        matches = [i for i in every if i.startswith(wanted)] if len(wanted) >= MIN_ID_PREFIX else []
        if len(matches) == 1:
            resolved.append(matches[0])
        elif matches:
            ambiguous.append(f"{given_id} ({len(matches)} ids start with it)")
        else:
            missing.append(given_id)
    if ambiguous:
        raise InvalidInputError(f"ambiguous dead-letter id: {', '.join(ambiguous)}; give more of it")
    if missing:
        raise NotFoundError(f"not in the dead-letter queue: {', '.join(missing)}")
    return list(dict.fromkeys(resolved))


#: After a shortened id (`2fc61815…`); `resolve_ids` accepts a prefix with or without it.
SHORTENED = "…"


def short_ids(ids: Sequence[str]) -> dict[str, str]:
    """Each id's shortest prefix (at least `MIN_ID_PREFIX` characters) that no other id of `ids` starts
    with, followed by `SHORTENED` when it is not the whole id."""
    ordered = sorted(set(ids))
    shortest: dict[str, str] = {}
    for index, dead_id in enumerate(ordered):
        neighbours = ordered[max(index - 1, 0) : index] + ordered[index + 1 : index + 2]
        common = max((_common_prefix(dead_id, other) for other in neighbours), default=0)
        prefix = dead_id[: max(MIN_ID_PREFIX, common + 1)]
        shortest[dead_id] = prefix if prefix == dead_id else prefix + SHORTENED
    return shortest


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True, slots=True)
class Replayed:
    id: str
    message_id: str | None
    actor_name: str | None


def _select(broker: RedisBroker, ids: Sequence[str] | None, queue_name: str) -> list[DeadLetter]:
    if ids is None:
        return list_dead_letters(broker, limit=count_dead_letters(broker, queue_name) or 1, queue_name=queue_name)
    return list_dead_letters(broker, ids=resolve_ids(broker, ids, queue_name=queue_name), queue_name=queue_name)


def _remove(broker: RedisBroker, keys: dict[str, str], dead_id: str) -> None:
    pipe = broker.client.pipeline(transaction=True)
    pipe.zrem(keys["dead"], dead_id)
    pipe.hdel(keys["dead_messages"], dead_id)
    pipe.delete(dead_letter_reason_key(broker.namespace, dead_id))
    pipe.execute()


def retry_dead_letters(
    broker: RedisBroker, ids: Sequence[str] | None, *, queue_name: str = QUEUE_NAME
) -> list[Replayed]:
    """Re-enqueue dead letters (`ids` or unique prefixes of them, or every one when None) as fresh
    deliveries of the same message (same `message_id`, retry count and age reset) and remove them
    from the dead-letter queue. A body that is not a Dramatiq message (not JSON, no actor, odd
    `args`) is re-enqueued as it was stored, so the worker judges it again (and dead-letters it
    again if it is still bad).

    Raises NotFoundError (InvalidInputError for an ambiguous prefix), before replaying anything,
    when an id is not in the dead-letter queue. Replaying is at least once: a crash between the
    enqueue and the removal leaves the dead letter in place (handling a message twice is harmless)."""
    keys = queue_keys(broker, queue_name)
    replayed: list[Replayed] = []
    for letter in _select(broker, ids, queue_name):
        fields = letter.message
        if letter.replayable and fields is not None:
            stored_options = fields.get("options")
            options = {
                k: v for k, v in (stored_options if isinstance(stored_options, dict) else {}).items()
                if k not in _DELIVERY_OPTIONS
            }  # fmt: skip
            message_id = fields.get("message_id")
            message: dramatiq.Message[Any] = dramatiq.Message(
                queue_name=queue_name,
                actor_name=fields["actor_name"],
                args=tuple(fields.get("args") or ()),
                kwargs=dict(fields.get("kwargs") or {}),
                options=options,
                message_id=message_id if isinstance(message_id, str) and message_id else letter.id,
                # a fresh timestamp, so that an age limit does not drop the replay at once
            )
            broker.enqueue(message)
            replayed.append(Replayed(letter.id, message.message_id, message.actor_name))
        else:
            pipe = broker.client.pipeline(transaction=True)  # as a foreign producer enqueues (docs/operations.md §5)
            pipe.hset(keys["messages"], letter.id, letter.raw)
            pipe.rpush(keys["ready"], letter.id)
            pipe.execute()
            replayed.append(Replayed(letter.id, None, None))
        _remove(broker, keys, letter.id)
    return replayed


def delete_dead_letters(broker: RedisBroker, ids: Sequence[str] | None, *, queue_name: str = QUEUE_NAME) -> list[str]:
    """Remove dead letters (`ids` or unique prefixes of them, or every one when None) for good; returns
    the ids removed. Unknown ids raise NotFoundError before anything is removed."""
    keys = queue_keys(broker, queue_name)
    if ids is None:
        members: Any = broker.client.zrange(keys["dead"], 0, -1)
        chosen = [_text(member) for member in members]
    else:
        chosen = resolve_ids(broker, ids, queue_name=queue_name)
    for dead_id in chosen:
        _remove(broker, keys, dead_id)
    return chosen


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
