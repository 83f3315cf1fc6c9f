"""On worker shutdown, a grace period for in-flight messages, then interrupt them
(docs/operations.md §2 "Shutdown")."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, Shutdown, raise_thread_exception

from worker.infra.logging import get_logger
from worker.store.db import cancel_statements

log = get_logger(__name__)


class GracefulShutdown(Middleware):
    """On worker shutdown, let in-flight messages run for `grace_seconds`, then interrupt them
    with `Shutdown`: their transaction rolls back and the message is retried (requeued).

    A thread blocked inside a Postgres statement (a lock wait, a long query) runs no Python code, so
    the `Shutdown` raised in it would wait for the statement to end — up to the lock timeout. At the
    interrupt, the statements of those threads are therefore cancelled on the server
    (`worker.store.db.cancel_statements`): the statement fails, the transaction rolls back, and the
    `Shutdown` takes effect at once.

    It keeps its own map of the threads running a message (Dramatiq's `ShutdownNotifications`
    keeps one too, but inside a private manager), and interrupts them with Dramatiq's public
    `raise_thread_exception`.

    Parameters:
      grace_seconds(float): How long in-flight messages may still run once the worker stops.
    """

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self._lock = threading.Lock()
        self._running: dict[int, tuple[str | None, str | None]] = {}  # thread id → (message_id, actor_name)
        self._timer: threading.Timer | None = None

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._running[threading.get_ident()] = (
                getattr(message, "message_id", None),
                getattr(message, "actor_name", None),
            )

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            self._running.pop(threading.get_ident(), None)

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
        """Raise `Shutdown` in every thread still running a message, then cancel their statements."""
        with self._lock:
            running = sorted(self._running.items())
        for thread_id, (message_id, actor_name) in running:
            log.warning(
                "interrupting an in-flight message to shut down (it will be retried)",
                message_id=message_id,
                actor=actor_name,
                grace_seconds=self.grace_seconds,
            )
            interrupt: Any = raise_thread_exception
            interrupt(thread_id, Shutdown)
        if running:
            cancelled = cancel_statements(thread_id for thread_id, _ in running)
            if cancelled:
                log.info("cancelled the database statements of interrupted messages", connections=cancelled)
