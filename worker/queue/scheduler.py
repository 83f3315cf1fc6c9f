"""`subsync scheduler`: every interval, enqueue one `reconcile_due` message.

Time is cut into ticks of `interval` seconds (tick n covers [n·interval, (n+1)·interval) of Unix
time). For each tick a scheduler claims the Redis key `NS:subsync.scheduler.tick:<interval>:<n>` with
`SET NX`; only the one that sets it enqueues. Any number of schedulers may therefore run (for
availability): exactly one `reconcile_due` is enqueued per tick. A `reconcile_due` that is still
running when the next one arrives skips (see `worker.queue.actors`).

Health (docs/operations.md §4): with a `health_file`, the scheduler rewrites that file after every
tick that reached Redis (whether it enqueued or another scheduler did), so the file's age says how
long ago the scheduler last did its job; a check fails when it is older than two intervals plus a
margin (the compose file's scheduler healthcheck).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from worker.contract.events import ADVANCE_CHARGES_ACTOR, QUEUE_NAME, RECONCILE_DUE_ACTOR
from worker.infra.logging import get_logger

log = get_logger("worker.queue.scheduler")


def tick_of(now: float, interval: float) -> int:
    return math.floor(now / interval)


def tick_key(broker: RedisBroker, interval: float, tick: int) -> str:
    return f"{broker.namespace}:subsync.scheduler.tick:{interval:g}:{tick}"


def reconcile_due_message() -> dramatiq.Message[None]:
    return dramatiq.Message(queue_name=QUEUE_NAME, actor_name=RECONCILE_DUE_ACTOR, args=(), kwargs={}, options={})


def advance_charges_message() -> dramatiq.Message[None]:
    """docs/credits.md §2.5: `advance_charges` without argument, enqueued beside `reconcile_due` every tick."""
    return dramatiq.Message(queue_name=QUEUE_NAME, actor_name=ADVANCE_CHARGES_ACTOR, args=(), kwargs={}, options={})


def run_tick(broker: RedisBroker, interval: float, tick: int) -> str | None:
    """Enqueue `reconcile_due` for `tick` unless another scheduler already did; the message id or None."""
    ttl_ms = max(int(interval * 2000), 1000)
    if not broker.client.set(tick_key(broker, interval, tick), "1", nx=True, px=ttl_ms):
        return None
    message_id = broker.enqueue(reconcile_due_message()).message_id
    broker.enqueue(advance_charges_message())
    return message_id


class Scheduler:
    """The scheduling loop; `stop()` (or SIGTERM/SIGINT under `run_forever`) ends it after the current tick."""

    def __init__(
        self,
        broker: RedisBroker,
        interval: float,
        *,
        clock: Callable[[], float] = time.time,
        health_file: Path | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.broker = broker
        self.interval = interval
        self.clock = clock
        self.health_file = health_file
        self._stop = threading.Event()
        self.enqueued = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_ticks: int | None = None) -> int:
        """Loop until stopped (or `max_ticks` ticks have passed); returns how many messages it enqueued."""
        seen = 0
        last: int | None = None
        while not self._stop.is_set():
            tick = tick_of(self.clock(), self.interval)
            if tick != last:
                last = tick
                seen += 1
                try:
                    message_id = run_tick(self.broker, self.interval, tick)
                except Exception as exc:  # a broker outage must not end the scheduler
                    log.warning("scheduler tick failed", tick=tick, error=str(exc))
                else:
                    if message_id is not None:
                        self.enqueued += 1
                        log.info("reconcile_due enqueued", tick=tick, message_id=message_id)
                    else:
                        log.debug("tick taken by another scheduler", tick=tick)
                    self._report_health(tick, message_id)
                if max_ticks is not None and seen >= max_ticks:
                    break
            next_start = (tick + 1) * self.interval
            self._stop.wait(max(0.0, min(next_start - self.clock(), self.interval)) + 0.001)
        return self.enqueued

    def _report_health(self, tick: int, message_id: str | None) -> None:
        """Rewrite the health file (atomically: a checker never reads half a file)."""
        if self.health_file is None:
            return
        report = {"pid": os.getpid(), "tick": tick, "interval": self.interval, "message_id": message_id}
        temporary = self.health_file.with_name(f".{self.health_file.name}.tmp")
        try:
            temporary.write_text(json.dumps(report))
            os.replace(temporary, self.health_file)
        except OSError as exc:  # the file goes stale and the check says so; the scheduler goes on
            log.warning("scheduler health file not written", path=str(self.health_file), error=str(exc))

    def run_forever(self) -> int:
        """`run()` with SIGTERM/SIGINT stopping the loop (main thread only)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("scheduler stopping", signal=signal.Signals(signum).name)
            self.stop()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self.run()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
