"""End to end through Redis: `subsync worker` with K processes drains N `subscription.updated` events, next to
the queue floor (issue 23) run the same way.

The workers run exactly as in production (`python -m worker worker --processes K --threads T`), on the
benchmark's database and a broker namespace of their own (`subsync-bench-<pid>-workers`, deleted afterwards).
Events carry the benchmark's `as_of`, so each message is a steady-state sync; invoicing after the sync
is switched off (`SUBSYNC_INVOICE_AFTER_SYNC=false`) so that every message is exactly one sync.

**The queue floor** (`bench.queue_floor`): the same `dramatiq` command line, broker, middleware, processes
and threads, in a namespace of its own, whose one actor runs the floor's SQL (`bench.floor`) for the
message's subscription on its floor twin. Both run for the whole measurement; their rounds alternate
(which goes first alternates too), so both see the same machine load.

A first round of each warms it up (process start, imports, connection pools) and is not counted.
Throughput of a round = N / (time from the first publish until the last sync state is written).
Per-message handling times come from the processes' own `message.done` log lines. **Worker CPU per
message** = the user + system CPU time of the whole process tree (`/proc`) during a round, over the
round's messages: robust on a busy machine, where wall times are not.
After each counted round, the floor also runs back to back on one connection over the same twins: the
single-connection throughput issue 16 compared the workers with (informational since issue 23).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import floor, queue_floor
from bench.seeding import FLOOR, REAL, Seeded
from worker.bootstrap import redis_url as resolve_redis_url
from worker.config import Settings, load_settings
from worker.contract.events import QUEUE_NAME, SubscriptionEvent
from worker.queue.broker import build_broker
from worker.queue.publish import publish

ROOT = Path(__file__).resolve().parents[1]  # the tree whose code runs (also under `--compare`)


class EndToEndError(RuntimeError):
    """The workers did not drain the queue (their log tail is in the message)."""


@dataclass(slots=True)
class Drain:
    """One worker command's figures over the counted rounds."""

    per_round: list[float] = field(default_factory=list)  # syncs per second, one value per round
    message_ms: list[float] = field(default_factory=list)  # handling time of each message, in the worker
    cpu_per_message: list[float] = field(default_factory=list)  # process-tree CPU seconds per message, per round


@dataclass(slots=True)
class EndToEnd:
    processes: int
    threads: int
    workers: Drain = field(default_factory=Drain)  # `subsync worker`
    queue_floor: Drain | None = None  # `bench.queue_floor` (issue 23)
    floor_per_round: list[float] = field(default_factory=list)  # the floor's syncs/s on one connection

    @property
    def per_round(self) -> list[float]:
        return self.workers.per_round

    @property
    def message_ms(self) -> list[float]:
        return self.workers.message_ms


def _done_since(engine: Engine, namespace: str, since: datetime, ids: list[str]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM subscription_sync_states"
                    " WHERE namespace = :ns AND subscription_id = ANY(:ids) AND synced_at >= :since"
                ),
                {"ns": namespace, "ids": ids, "since": since},
            ).scalar_one()
        )


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` and all its descendants (Linux `/proc`)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids, total = [pid], 0
    while pids:
        p = pids.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
            for children in Path(f"/proc/{p}/task").glob("*/children"):
                pids += [int(c) for c in children.read_text().split()]
        except (OSError, ValueError):  # gone meanwhile
            continue
    return total / tick


class _Group:
    """A running worker command on its own broker namespace, draining the events of one data namespace."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], data_namespace: str, redis_url: str, ids: list[str]
    ) -> None:
        self.broker_namespace = f"subsync-bench-{os.getpid()}-{name}"
        self.data_namespace = data_namespace
        self.ids = ids
        self.broker = build_broker(redis_url, Settings(broker_namespace=self.broker_namespace, metrics_port=0))
        self.log_path = Path(tempfile.mkstemp(prefix=f"subsync-bench-{name}-", suffix=".log")[1])
        env = {**env, "SUBSYNC_BROKER_NAMESPACE": self.broker_namespace}
        with self.log_path.open("w") as log_file:
            self.process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file)
        self.drain = Drain()

    def round(self, engine: Engine, n: int, subscriptions: list[Seeded], timeout: float) -> None:
        # An idle Dramatiq Redis consumer backs off (up to the worker timeout, 1 s) before fetching again, so a group
        # that sat idle through the other group's round would start its own up to a second late: the one running
        # first in a round measured up to 3x faster than the second, whichever it was. One untimed message wakes
        # it first (its log line is skipped like round 0's).
        self._drain(engine, [subscriptions[0]], f"bench-0-wake-{n}", timeout)
        cpu = tree_cpu(self.process.pid)
        began = time.perf_counter()
        self._drain(engine, subscriptions, f"bench-{n}", timeout)
        if n > 0:
            self.drain.per_round.append(len(self.ids) / (time.perf_counter() - began))
            self.drain.cpu_per_message.append((tree_cpu(self.process.pid) - cpu) / len(self.ids))

    def _drain(self, engine: Engine, subscriptions: list[Seeded], prefix: str, timeout: float) -> None:
        """Publish one `subscription.updated` per subscription and wait until every one is synced."""
        since = datetime.now(UTC)
        began = time.perf_counter()
        for s in subscriptions:
            event = SubscriptionEvent.new(
                "subscription.updated",
                namespace=self.data_namespace,
                subscription_id=s.subscription_id,
                as_of=s.as_of,
                event_id=f"{prefix}-{s.subscription_id}",
            )
            publish(event, broker=self.broker)
        ids = [s.subscription_id for s in subscriptions]
        while _done_since(engine, self.data_namespace, since, ids) < len(ids):
            if self.process.poll() is not None or time.perf_counter() - began > timeout:
                raise EndToEndError(f"workers did not drain the queue; log tail:\n{_tail(self.log_path)}")
            time.sleep(0.005)

    def stop(self) -> None:
        _stop(self.process)
        for key in self.broker.client.scan_iter(match=f"{self.broker_namespace}:*"):
            self.broker.client.delete(key)
        self.broker.close()
        self.drain.message_ms = _message_times(self.log_path, skip_prefix="bench-0-")
        self.log_path.unlink(missing_ok=True)


def _worker_argv(processes: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "worker", "worker", "--processes", str(processes), "--threads", str(threads)]


def _queue_floor_argv(processes: int, threads: int) -> list[str]:
    """What `subsync worker` execs (`worker.cli.queue.worker_command`), with the queue floor's entry."""
    shutdown_ms = int((load_settings().shutdown_grace_seconds + 15) * 1000)
    return [
        *(sys.executable, "-m", "dramatiq", queue_floor.ENTRY),
        *("--processes", str(processes), "--threads", str(threads), "--queues", QUEUE_NAME, "--skip-logging"),
        *("--worker-shutdown-timeout", str(shutdown_ms)),
    ]


def run_end_to_end(
    engine: Engine,
    database_url: str,
    subscriptions: list[Seeded],
    *,
    processes: int,
    threads: int,
    rounds: int,
    timeout: float = 120.0,
    with_queue_floor: bool = True,
) -> EndToEnd:
    redis_url = resolve_redis_url(load_settings())
    env: dict[str, Any] = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SUBSYNC_INVOICE_AFTER_SYNC": "false",
        "SUBSYNC_LOG_FORMAT": "json",
        "SUBSYNC_LOG_LEVEL": "INFO",
        "SUBSYNC_WORKER_THREADS": str(threads),
        "SUBSYNC_METRICS_PORT": "0",
    }
    ids = [s.subscription_id for s in subscriptions]
    result = EndToEnd(processes, threads)
    groups: list[_Group] = []
    works_path = Path(tempfile.mkstemp(prefix="subsync-bench-floor-", suffix=".pickle")[1])
    try:
        groups.append(_Group("workers", _worker_argv(processes, threads), env, REAL, redis_url, ids))
        if with_queue_floor:
            queue_floor.save_works(
                [floor.prepare(engine, s.subscription_id, s.as_of) for s in subscriptions], works_path
            )
            floor_env = {**env, queue_floor.WORKS_ENV: str(works_path)}
            groups.append(_Group("floor", _queue_floor_argv(processes, threads), floor_env, FLOOR, redis_url, ids))
        for n in range(rounds + 1):  # round 0 warms up
            for group in groups if n % 2 == 0 else groups[::-1]:
                group.round(engine, n, subscriptions, timeout)
            if n > 0:
                result.floor_per_round.append(_floor_throughput(engine, subscriptions))
    finally:
        for group in groups:
            group.stop()
        works_path.unlink(missing_ok=True)
    result.workers = groups[0].drain
    result.queue_floor = groups[1].drain if with_queue_floor else None
    return result


def _floor_throughput(engine: Engine, subscriptions: list[Seeded]) -> float:
    """Syncs per second of the floor run back to back on one connection (its work prepared untimed)."""
    works = [floor.prepare(engine, s.subscription_id, s.as_of) for s in subscriptions]
    began = time.perf_counter()
    for work in works:
        floor.run(engine, work)
    return len(works) / (time.perf_counter() - began)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _message_times(log_path: Path, *, skip_prefix: str) -> list[float]:
    times = []
    for raw in log_path.read_text(errors="replace").splitlines():
        if '"message.done"' not in raw:
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        event_id = str(record.get("event_id", ""))
        if event_id.startswith("bench-") and not event_id.startswith(skip_prefix):
            times.append(float(record["duration_ms"]))
    return times


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
