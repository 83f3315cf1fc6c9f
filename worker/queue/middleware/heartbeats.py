"""Liveness: the worker process's threads report that they are alive (`worker.queue.liveness`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from worker.queue.liveness import ReportWriter, health_dir, heartbeats


class Heartbeats(Middleware):
    """Registers the consumer and worker threads as they boot and stop, notes when each worker
    thread starts and ends a message (with the message's time limit), and has a `ReportWriter`
    write the process's report for the exposition server from worker boot to worker shutdown.
    The consumer's polls beat through `worker.queue.liveness.beat` (`GuardedRedisConsumer`).

    It is the last middleware: its before-hook runs last and its after-hook first, so a message
    counts as running for its actor body, not for the other middleware's work (a retry waiting for
    Redis to come back is an outage for readiness, not a wedged thread).

    Parameters:
      metrics_dir(Path): the metrics folder; reports go to its `health/` folder.
      default_time_limit_ms(int): the time limit of messages whose actor sets none.
    """

    def __init__(self, metrics_dir: Path, default_time_limit_ms: int) -> None:
        self.directory = health_dir(metrics_dir)
        self.default_time_limit_ms = default_time_limit_ms
        self._writer: ReportWriter | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._writer = ReportWriter(self.directory)
        self._writer.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

    def after_consumer_thread_boot(self, broker: dramatiq.Broker, thread: threading.Thread) -> None:
        heartbeats.consumer_started(thread)

    def before_consumer_thread_shutdown(self, broker: dramatiq.Broker, thread: threading.Thread) -> None:
        heartbeats.consumer_stopped(thread)

    def after_worker_thread_boot(self, broker: dramatiq.Broker, thread: threading.Thread) -> None:
        heartbeats.worker_started(thread)

    def before_worker_thread_shutdown(self, broker: dramatiq.Broker, thread: threading.Thread) -> None:
        heartbeats.worker_stopped(thread)

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        heartbeats.message_started(message.actor_name, message.message_id, self._time_limit(broker, message) / 1000)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        heartbeats.message_ended()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        heartbeats.message_ended()

    def _time_limit(self, broker: dramatiq.Broker, message: Any) -> float:
        """The message's time limit in ms, as Dramatiq's `TimeLimit` reads it: message, actor, default."""
        limit = message.options.get("time_limit")
        if limit is None:
            try:
                limit = broker.get_actor(message.actor_name).options.get("time_limit")
            except dramatiq.ActorNotFound:
                limit = None
        return float(limit) if isinstance(limit, int | float) and limit > 0 else float(self.default_time_limit_ms)
