"""Worker processes draining a backlog at scale (issue 25): throughput and the CPU share of workers and Postgres.

`subsync worker --processes K --threads T` runs as in production (like `bench.e2e`) on the scale database and a
private broker namespace (deleted afterwards), invoicing after the sync off so that a message is one sync. A batch
is a list of `subscription.updated` events (each as of its subscription's seeded instant: a steady-state sync);
its time runs from the first publish until every one of its sync states is rewritten. CPU is read from /proc
(psutil): the worker's process tree, and the Postgres backends serving the scale database (background processes
such as the WAL writer are not counted). Per-message handling times come from the workers' `message.done` lines.
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

import psutil
from sqlalchemy import Engine, text

from bench.scale_seed import NAMESPACE
from worker.config import Settings
from worker.contract.events import SubscriptionEvent
from worker.queue.broker import build_broker
from worker.queue.publish import publish


class DrainError(RuntimeError):
    """The workers did not drain a batch in time (their log tail is in the message)."""


@dataclass(frozen=True, slots=True)
class Batch:
    label: str
    subscriptions: list[tuple[str, datetime]]  # (subscription id, as_of)


@dataclass(slots=True)
class Drained:
    label: str
    processes: int
    threads: int
    count: int
    seconds: float
    worker_cpu: float  # CPU seconds of the worker processes
    postgres_cpu: float  # CPU seconds of the database's backends
    message_ms: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def share(self, cpu_seconds: float) -> float:
        """Of the machine's CPU over the batch (1.0: every core busy)."""
        return cpu_seconds / (self.seconds * (os.cpu_count() or 1)) if self.seconds else 0.0


def _cpu(processes: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in processes:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = t.user + t.system
    return out


def _worker_tree(worker: subprocess.Popen[bytes]) -> list[psutil.Process]:
    root = psutil.Process(worker.pid)
    return [root, *root.children(recursive=True)]


def _backends(engine: Engine) -> list[psutil.Process]:
    with engine.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars()
        found = []
        for pid in pids:
            try:
                found.append(psutil.Process(int(pid)))
            except psutil.Error:
                continue
        return found


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def _synced(engine: Engine, since: datetime, ids: list[str]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM subscription_sync_states"
                    " WHERE namespace = :ns AND subscription_id = ANY(:ids) AND synced_at >= :since"
                ),
                {"ns": NAMESPACE, "ids": ids, "since": since},
            ).scalar_one()
        )


def run_pool(
    engine: Engine,
    database_url: str,
    redis_url: str,
    *,
    processes: int,
    threads: int,
    warmup: Batch,
    batches: list[Batch],
    timeout: float = 300.0,
) -> list[Drained]:
    """Start the workers, drain `warmup` (not reported), then each batch in turn."""
    namespace = f"subsync-scale-{os.getpid()}-{processes}x{threads}"
    broker = build_broker(redis_url, Settings(broker_namespace=namespace, metrics_port=0))
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SUBSYNC_BROKER_NAMESPACE": namespace,
        "SUBSYNC_INVOICE_AFTER_SYNC": "false",
        "SUBSYNC_LOG_FORMAT": "json",
        "SUBSYNC_METRICS_PORT": "0",
    }
    log_path = Path(tempfile.mkstemp(prefix="subsync-scale-worker-", suffix=".log")[1])
    argv = [sys.executable, "-m", "worker", "worker", "--processes", str(processes), "--threads", str(threads)]
    results: list[Drained] = []
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        for n, batch in enumerate([warmup, *batches]):
            tree, backends = _worker_tree(worker), _backends(engine)
            worker_before, pg_before = _cpu(tree), _cpu(backends)
            since = datetime.now(UTC)
            began = time.perf_counter()
            for sub_id, as_of in batch.subscriptions:
                event = SubscriptionEvent.new(
                    "subscription.updated",
                    namespace=NAMESPACE,
                    subscription_id=sub_id,
                    as_of=as_of,
                    event_id=f"scale-{n}-{sub_id}",
                )
                publish(event, broker=broker)
            ids = [s for s, _ in batch.subscriptions]
            while _synced(engine, since, ids) < len(ids):
                if worker.poll() is not None or time.perf_counter() - began > timeout:
                    raise DrainError(f"workers did not drain {batch.label!r}; log tail:\n{_tail(log_path)}")
                time.sleep(0.05)
            seconds = time.perf_counter() - began
            worker_cpu = _delta(worker_before, _cpu(_worker_tree(worker)))
            pg_cpu = _delta(pg_before, _cpu(_backends(engine)))
            if n > 0:
                results.append(Drained(batch.label, processes, threads, len(ids), seconds, worker_cpu, pg_cpu))
    finally:
        _stop(worker)
        for key in broker.client.scan_iter(match=f"{namespace}:*", count=1000):
            broker.client.delete(key)
        broker.close()
    times = _message_times(log_path)
    for n, drained in enumerate(results, start=1):
        drained.message_ms = times.get(n, [])
    log_path.unlink(missing_ok=True)
    return results


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _message_times(log_path: Path) -> dict[int, list[float]]:
    """Handling times (ms) of each batch's messages, by batch number (from the `scale-<n>-` event ids)."""
    times: dict[int, list[float]] = {}
    for raw in log_path.read_text(errors="replace").splitlines():
        if '"message.done"' not in raw:
            continue
        try:
            record = json.loads(raw)
            batch = int(str(record.get("event_id", "")).split("-")[1])
            times.setdefault(batch, []).append(float(record["duration_ms"]))
        except (ValueError, IndexError, KeyError):
            continue
    return times


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
