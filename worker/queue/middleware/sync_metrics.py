"""Count syncs, patches, invoices and failures in Prometheus (`worker.queue.metrics`)."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from worker.queue import metrics
from worker.queue.failures import classify
from worker.queue.outcome import current_outcome


class SyncMetrics(Middleware):
    """Creates the project's counters once the process has booted (after Dramatiq's Prometheus
    middleware has set up the multiprocess directory), then counts each message's outcome.

    Parameters: none.
    """

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        metrics.enable()

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is not None:
            metrics.record_failure(message.actor_name, classify(exception))
            return
        handled = current_outcome()
        if handled is None:
            return
        for sync in handled.syncs:
            metrics.record_sync(message.actor_name, sync.counts())
        metrics.record_invoices(len(handled.invoices))
