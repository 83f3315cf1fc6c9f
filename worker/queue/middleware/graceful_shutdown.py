"""On worker shutdown, a grace period for in-flight messages, then interrupt them."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Shutdown, ShutdownNotifications, raise_thread_exception


class GracefulShutdown(ShutdownNotifications):
    """On worker shutdown, let in-flight messages run for `grace_seconds`, then interrupt them
    with `Shutdown`: their transaction rolls back and the message is retried (requeued).

    Parameters:
      grace_seconds(float): How long in-flight messages may still run once the worker stops.
    """

    def __init__(self, grace_seconds: float) -> None:
        super().__init__(notify_shutdown=True)
        self.grace_seconds = grace_seconds
        self._timer: threading.Timer | None = None

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.grace_seconds <= 0:
            self._interrupt()
            return
        self._timer = threading.Timer(self.grace_seconds, self._interrupt)
        self._timer.daemon = True
        self._timer.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _interrupt(self) -> None:
        notifications: set[int] = getattr(self.manager, "notifications", set())
        for thread_id in list(notifications):
            self.logger.warning("interrupting an in-flight message to shut down (it will be retried)")
            interrupt: Any = raise_thread_exception
            interrupt(thread_id, Shutdown)
