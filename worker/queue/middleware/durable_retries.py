"""Retries that survive a Redis outage: a retry is enqueued once Redis answers again."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Retries

from worker.infra.logging import get_logger

log = get_logger(__name__)


class _EnqueueUntilDone:
    """A broker whose `enqueue` waits out a Redis outage instead of raising."""

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
    lost. A worker killed while waiting here loses nothing either: the message is still in flight.

    Parameters: those of `dramatiq.middleware.Retries`.
    """

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        proxy: Any = _EnqueueUntilDone(broker)
        retries: Any = super()  # Dramatiq's middleware hooks are untyped
        retries.after_process_message(proxy, message, result=result, exception=exception)
