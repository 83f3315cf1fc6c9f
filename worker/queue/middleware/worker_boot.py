"""At worker process boot: configure logging and say which database and broker the process uses."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import dramatiq
from dramatiq.middleware import Middleware

from worker.config import LogFormat
from worker.contract.events import QUEUE_NAME
from worker.infra.gc_policy import apply_gc_policy
from worker.infra.logging import configure_logging, get_logger
from worker.queue import metrics

log = get_logger("worker.queue.actors")


class WorkerBoot(Middleware):
    """Logs `worker process ready` once the `dramatiq` worker process has booted and its worker started.

    Parameters:
      log_format(str): `console` or `json`, configured at boot (Dramatiq configures its own logging
        after importing the broker's module).
      where(Mapping[str, str]): where the database and the broker are, as `worker.bootstrap.describe`
        says (host and database only, never a password).
      on_boot(callable): run once the process has booted, before any message (the bootstrap passes the
        engine's warm-up, so the first message does not pay for creating the pool); a failure is logged,
        not raised (a database that is down at boot is the first message's retryable failure).
    """

    def __init__(
        self, log_format: LogFormat, where: Mapping[str, str], on_boot: Callable[[], object] | None = None
    ) -> None:
        self.log_format: LogFormat = log_format
        self.where = dict(where)
        self.on_boot = on_boot

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        configure_logging(self.log_format)
        if self.on_boot is not None:
            try:
                self.on_boot()
            except Exception as exc:  # the messages will meet (and classify) the same problem
                log.warning("worker process warm-up failed", error=f"{type(exc).__name__}: {exc}")
        apply_gc_policy()  # booted: what the process holds now lives as long as it (docs/operations.md §2)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: object) -> None:
        # After every middleware's process boot (SyncMetrics enables the metrics there) and once the
        # worker's threads run: the process is ready, and says whether it serves metrics.
        log.info(
            "worker process ready",
            pid=os.getpid(),
            queue=QUEUE_NAME,
            broker_namespace=getattr(broker, "namespace", None),
            metrics=metrics.enabled(),
            **self.where,
        )
