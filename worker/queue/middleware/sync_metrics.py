"""Count syncs, patches, invoices and failures, and time every message, in Prometheus (`worker.queue.metrics`)."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from worker.queue import metrics
from worker.queue.failures import classify, kind_of
from worker.queue.outcome import current_outcome

_STARTED: ContextVar[float | None] = ContextVar("subsync_metrics_started", default=None)


class SyncMetrics(Middleware):
    """Creates the project's metrics once the process has booted (after Dramatiq's Prometheus
    middleware has set up the multiprocess directory), then records each message's duration and
    outcome: `subsync_message_duration_seconds`, `subsync_message_failures_total` (by reason), and
    what a successful message did.

    Parameters: none.
    """

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        metrics.enable()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _STARTED.set(time.monotonic())

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        started = _STARTED.get()
        _STARTED.set(None)
        outcome = "done" if exception is None else "failed"
        if started is not None:
            metrics.record_duration(message.actor_name, outcome, time.monotonic() - started)
        if exception is not None:
            reason = classify(exception)
            metrics.record_failure(message.actor_name, reason, str(kind_of(reason)))
            return
        handled = current_outcome()
        if handled is None:
            return
        for sync in handled.syncs:
            metrics.record_sync(message.actor_name, sync.counts())
        metrics.record_invoices(len(handled.invoices))

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _STARTED.set(None)
