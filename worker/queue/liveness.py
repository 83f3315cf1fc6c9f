"""Liveness of the worker processes: are their consumer and worker threads alive and heart-beating?
(docs/operations.md §4 "Health").

What "heart-beating" means:

- a **consumer thread** (one per queue and delay queue in each process) beats each time it polls
  Redis — `GuardedRedisConsumer.__next__` and each (re)start of a consumer call `beat()` — about once
  a second when idle, and keeps polling during a Redis outage (only readiness fails then). Its beat
  is stale when older than the liveness timeout (`SUBSYNC_LIVENESS_TIMEOUT_SECONDS`, 60 s: above the
  30 s Redis socket timeout a poll may block for);
- a **worker thread** runs one message at a time (the `Heartbeats` middleware notes when it started,
  through `before/after_process_message`): it is wedged when one message has been running for longer
  than the message's time limit plus the liveness timeout — Dramatiq's `TimeLimit` should have
  interrupted it by then, so it is stuck where no exception reaches it (a C call, a lock wait);
- every thread must still be alive (`Thread.is_alive`), and the process must keep reporting.

Each worker process writes its threads' state to `<metrics dir>/health/<pid>.json` every second
(`ReportWriter`); the exposition server (`worker.queue.exposition`, another process) reads the files
and `assess()`es them. Times are `time.monotonic()`, which is one clock for every process of a host.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.infra.logging import get_logger

log = get_logger(__name__)

#: Folder, inside the metrics folder, of the per-process reports.
HEALTH_DIR = "health"
#: How often a worker process writes its report.
REPORT_INTERVAL_SECONDS = 1.0


def health_dir(metrics_dir: Path) -> Path:
    return metrics_dir / HEALTH_DIR


@dataclass
class _ConsumerState:
    thread: threading.Thread
    beat: float


@dataclass
class _WorkerState:
    thread: threading.Thread
    busy_since: float | None = None
    time_limit: float | None = None
    actor_name: str | None = None
    message_id: str | None = None


class Heartbeats:
    """The threads of this process and their last sign of life."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._consumers: dict[int, _ConsumerState] = {}
        self._workers: dict[int, _WorkerState] = {}

    def consumer_started(self, thread: threading.Thread) -> None:
        with self._lock:
            self._consumers[_ident(thread)] = _ConsumerState(thread, time.monotonic())

    def consumer_stopped(self, thread: threading.Thread) -> None:
        with self._lock:
            self._consumers.pop(_ident(thread), None)

    def beat(self) -> None:
        """The calling consumer thread is polling (a no-op in a thread that is not a registered consumer)."""
        state = self._consumers.get(threading.get_ident())
        if state is not None:
            state.beat = time.monotonic()

    def worker_started(self, thread: threading.Thread) -> None:
        with self._lock:
            self._workers[_ident(thread)] = _WorkerState(thread)

    def worker_stopped(self, thread: threading.Thread) -> None:
        with self._lock:
            self._workers.pop(_ident(thread), None)

    def message_started(self, actor_name: str, message_id: str, time_limit: float | None) -> None:
        state = self._workers.get(threading.get_ident())
        if state is not None:
            state.actor_name, state.message_id, state.time_limit = actor_name, message_id, time_limit
            state.busy_since = time.monotonic()

    def message_ended(self) -> None:
        state = self._workers.get(threading.get_ident())
        if state is not None:
            state.busy_since = state.time_limit = None
            state.actor_name = state.message_id = None

    def report(self) -> dict[str, Any]:
        """This process's threads, as `assess` reads them."""
        with self._lock:
            consumers = list(self._consumers.values())
            workers = list(self._workers.values())
        return {
            "pid": os.getpid(),
            "reported_at": time.monotonic(),
            "consumers": [
                {"thread": _consumer_name(c.thread), "alive": c.thread.is_alive(), "beat": c.beat} for c in consumers
            ],
            "workers": [
                {
                    "thread": w.thread.name,
                    "alive": w.thread.is_alive(),
                    "busy_since": w.busy_since,
                    "time_limit": w.time_limit,
                    "actor_name": w.actor_name,
                    "message_id": w.message_id,
                }
                for w in workers
            ],
        }


def _consumer_name(thread: threading.Thread) -> str:
    """`Thread-2 (subscription-sync.DQ)`: Dramatiq's consumer threads say which queue they consume."""
    queue_name = getattr(thread, "queue_name", None)
    return f"{thread.name} ({queue_name})" if isinstance(queue_name, str) else thread.name


def _ident(thread: threading.Thread) -> int:
    return thread.ident if thread.ident is not None else id(thread)


#: This process's threads (the consumer calls `beat()`; the `Heartbeats` middleware the rest).
heartbeats = Heartbeats()


def beat() -> None:
    heartbeats.beat()


class ReportWriter:
    """Writes `heartbeats.report()` to `<directory>/<pid>.json` every second, on a daemon thread."""

    def __init__(self, directory: Path, source: Heartbeats = heartbeats) -> None:
        self.path = directory / f"{os.getpid()}.json"
        self.source = source
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="subsync-liveness-report", daemon=True)

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.write()
        self._thread.start()

    def write(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.source.report()))
        os.replace(temporary, self.path)

    def _run(self) -> None:
        while not self._stop.wait(REPORT_INTERVAL_SECONDS):
            try:
                self.write()
            except OSError as exc:  # a full disk: the report goes stale and liveness says so
                log.warning("liveness report not written", path=str(self.path), error=str(exc))

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=2 * REPORT_INTERVAL_SECONDS)
        self.path.unlink(missing_ok=True)


def read_reports(directory: Path) -> list[dict[str, Any]]:
    """Every worker process's last report (unreadable files are skipped: one is being replaced)."""
    reports = []
    for path in sorted(directory.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            report = json.loads(path.read_text())
            if isinstance(report, dict):
                reports.append(report)
    return reports


def assess(reports: list[dict[str, Any]], now: float, timeout: float) -> list[str]:
    """What is wrong with the worker processes' threads (nothing: they are live)."""
    if not reports:
        return ["no worker process has reported yet"]
    problems: list[str] = []
    for report in reports:
        process = f"worker process {report.get('pid')}"
        reported_at = float(report.get("reported_at", 0.0))
        silent = now - reported_at
        if silent > timeout + 2 * REPORT_INTERVAL_SECONDS:  # a report may be one interval old when read
            problems.append(f"{process} has not reported for {silent:.0f} s")
            continue
        consumers, workers = report.get("consumers") or [], report.get("workers") or []
        if not consumers:
            problems.append(f"{process} has no consumer thread")
        if not workers:
            problems.append(f"{process} has no worker thread")
        for consumer in consumers:
            name = f"consumer thread {consumer.get('thread')} of {process}"
            quiet = reported_at - float(consumer.get("beat", 0.0))
            if not consumer.get("alive"):
                problems.append(f"{name} has stopped")
            elif quiet > timeout:
                problems.append(f"{name} has not polled for {quiet:.0f} s")
        for worker in workers:
            name = f"worker thread {worker.get('thread')} of {process}"
            if not worker.get("alive"):
                problems.append(f"{name} has stopped")
                continue
            busy_since, limit = worker.get("busy_since"), worker.get("time_limit")
            if busy_since is None or limit is None:
                continue
            running = now - float(busy_since)
            if running > float(limit) + timeout:
                problems.append(
                    f"{name} has been running message {worker.get('message_id')} ({worker.get('actor_name')}) "
                    f"for {running:.0f} s, over its time limit of {float(limit):g} s"
                )
    return problems
