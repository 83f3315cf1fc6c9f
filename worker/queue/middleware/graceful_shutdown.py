"""On worker shutdown, a grace period for in-flight messages, then interrupt them."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, Shutdown, raise_thread_exception

from worker.infra.logging import get_logger

log = get_logger(__name__)


class GracefulShutdown(Middleware):
    """On worker shutdown, let in-flight messages run for `grace_seconds`, then interrupt them
    with `Shutdown`: their transaction rolls back and the message is retried (requeued).

    It keeps its own set of the threads running a message (Dramatiq's `ShutdownNotifications`
    keeps one too, but inside a private manager), and interrupts them with Dramatiq's public
    `raise_thread_exception`.

    Parameters:
      grace_seconds(float): How long in-flight messages may still run once the worker stops.
    """

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self._lock = threading.Lock()
        self._running: set[int] = set()
        self._timer: threading.Timer | None = None

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._running.add(threading.get_ident())

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            self._running.discard(threading.get_ident())

    after_skip_message = after_process_message

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.grace_seconds <= 0:
            self.interrupt()
            return
        self._timer = threading.Timer(self.grace_seconds, self.interrupt)
        self._timer.daemon = True
        self._timer.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def interrupt(self) -> None:
        """Raise `Shutdown` in every thread still running a message."""
        with self._lock:
            for thread_id in sorted(self._running):
                log.warning("interrupting an in-flight message to shut down (it will be retried)")
                interrupt: Any = raise_thread_exception
                interrupt(thread_id, Shutdown)
