"""One log context per message, and one line when it is done: `message.done` or `message.failed`."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import Middleware

from worker.app.handlers import Handled
from worker.app.sync import SyncResult
from worker.contract.text import format_time
from worker.infra.logging import get_logger
from worker.queue.failures import FAILURE_OPTION, ActorFailed, RetryPolicy, classify, describe, kind_of
from worker.queue.outcome import current_outcome, set_outcome

log = get_logger("worker.queue.actors")

_STARTED: ContextVar[float] = ContextVar("subsync_message_started", default=0.0)


class MessageLog(Middleware):
    """Binds the log context of each message (`actor`, `message_id`, `attempt`; the actor body adds
    the event's fields), then logs its end once: `message.done` with what it did, or `message.failed`
    with the classified `reason` (docs/operations.md §6), which it also keeps in the message option
    `subsync_failure` for the dead-letter record; an `unexpected` failure's line is at error level and
    carries the traceback. Worker threads run one message at a time, so the
    context is that message's only; it is cleared when the message ends.

    Parameters:
      policy(RetryPolicy): Whether a failure will be retried (said in the `message.failed` line).
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        message.options.pop(FAILURE_OPTION, None)  # left by an earlier attempt
        set_outcome(None)
        _STARTED.set(time.monotonic())
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            actor=message.actor_name, message_id=message.message_id, attempt=_retries(message) + 1
        )

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        try:
            duration_ms = round((time.monotonic() - _STARTED.get()) * 1000, 1)
            if exception is None:
                _log_done(current_outcome() or Handled(), duration_ms)
            else:
                self._failed(message, exception, duration_ms)
        finally:
            structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        structlog.contextvars.clear_contextvars()

    def _failed(self, message: Any, exception: BaseException, duration_ms: float) -> None:
        retries = _retries(message)
        reason, error = classify(exception), describe(exception)
        will_retry = self.policy.should_retry(retries, reason)
        message.options[FAILURE_OPTION] = {"reason": reason, "error": error, "attempt": retries + 1}
        cause = exception.cause if isinstance(exception, ActorFailed) else exception
        # An exception the worker does not know is a bug to diagnose: its traceback goes with the
        # one line of the attempt, at error level (Dramatiq logs none for the `Retry` it arrives as).
        unexpected = {"exc_info": cause} if reason == "unexpected" else {}
        (log.warning if will_retry and not unexpected else log.error)(
            "message.failed",
            reason=reason,
            kind=str(kind_of(reason)),
            error=error,
            will_retry=will_retry,
            duration_ms=duration_ms,
            **unexpected,
        )


def _retries(message: Any) -> int:
    """Earlier failed attempts (Retries counts them in the message, after this middleware has run)."""
    return int(message.options.get("retries", 0) or 0)


def _log_done(handled: Handled, duration_ms: float) -> None:
    log.info(
        "message.done",
        duration_ms=duration_ms,
        customer_id=handled.customer_id,
        patches=handled.counts(),
        syncs=[_sync_summary(r) for r in handled.syncs] if len(handled.syncs) > 1 else None,
        as_of=format_time(handled.syncs[0].as_of) if len(handled.syncs) == 1 else None,
        invoices=[i.id for i in handled.invoices] or None,
        skipped=handled.skipped,
        **handled.extra,
    )


def _sync_summary(result: SyncResult) -> dict[str, Any]:
    return {"subscription_id": result.subscription_id, "patches": result.counts()}
