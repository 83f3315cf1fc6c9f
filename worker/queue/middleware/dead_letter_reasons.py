"""Keep why a message was dead-lettered next to it in Redis, and log it once."""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from worker.infra.logging import get_logger
from worker.queue.dead_letters import dead_letter_record, log_dead_letter, store_dead_letter_reason
from worker.queue.failures import FAILURE_OPTION, classify, describe

log = get_logger(__name__)

#: Fields of an event argument that the dead-letter log line repeats (`type` as `event_type`).
_EVENT_FIELDS = ("event_id", "type", "namespace", "subscription_id", "invoice_id")


class DeadLetterReasons(Middleware):
    """Logs why a message is dead-lettered and keeps the reason next to it in Redis.

    Dramatiq's dead-letter queue stores the message as it was enqueued, without the error, so the
    reason is kept under `NS:subsync.dead-letter-reason:<redis message id>` with the same TTL.

    Parameters: none. The reason is the failure the attempt recorded in the message option
    `subsync_failure` (written by `worker.queue.middleware.message_log`), else the classified exception.
    """

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        failure = message.options.get(FAILURE_OPTION)
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
            for key in _EVENT_FIELDS
            if isinstance(payload.get(key), str)
        }
        redis_id = message.options.get("redis_message_id") or message.message_id
        log_dead_letter(
            record, message_id=message.message_id, redis_message_id=redis_id, actor=message.actor_name, **event_fields
        )
        if isinstance(broker, RedisBroker):
            try:
                store_dead_letter_reason(broker, redis_id, record)
            except redis.RedisError as exc:
                log.warning("dead-letter reason not stored", error=str(exc))
