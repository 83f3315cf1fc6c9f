"""End to end through Redis: `subsync worker` with K processes drains N `subscription.updated` events.

The workers run exactly as in production (`python -m worker worker --processes K --threads T`), on the
benchmark's database and a broker namespace of their own (`subsync-bench-<pid>`, deleted afterwards).
Events carry the benchmark's `as_of`, so each message is a steady-state sync; invoicing after the sync
is switched off (`SUBSYNC_INVOICE_AFTER_SYNC=false`) so that every message is exactly one sync.

A first round warms the workers up (process start, imports, connection pools) and is not counted.
Throughput of a round = N / (time from the first publish until the last sync state is written).
Per-message handling times come from the workers' own `message.done` log lines.
After each counted round, the floor (`bench.floor`, the minimum SQL of a steady-state sync) runs back to
back on one connection over the same number of twin subscriptions of the same database: the single-
connection throughput the workers are compared with (issue 16).
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

from sqlalchemy import Engine, text

from bench import floor
from bench.seeding import REAL, Seeded
from worker.bootstrap import redis_url as resolve_redis_url
from worker.config import Settings, load_settings
from worker.contract.events import SubscriptionEvent
from worker.queue.broker import build_broker
from worker.queue.publish import publish


class EndToEndError(RuntimeError):
    """The workers did not drain the queue (their log tail is in the message)."""


@dataclass(slots=True)
class EndToEnd:
    processes: int
    threads: int
    per_round: list[float] = field(default_factory=list)  # syncs per second, one value per round
    message_ms: list[float] = field(default_factory=list)  # handling time of each message, in the worker
    floor_per_round: list[float] = field(default_factory=list)  # the floor's syncs/s on one connection


def _done_since(engine: Engine, since: datetime, ids: list[str]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM subscription_sync_states"
                    " WHERE namespace = :ns AND subscription_id = ANY(:ids) AND synced_at >= :since"
                ),
                {"ns": REAL, "ids": ids, "since": since},
            ).scalar_one()
        )


def run_end_to_end(
    engine: Engine,
    database_url: str,
    subscriptions: list[Seeded],
    *,
    processes: int,
    threads: int,
    rounds: int,
    timeout: float = 120.0,
) -> EndToEnd:
    redis_url = resolve_redis_url(load_settings())
    namespace = f"subsync-bench-{os.getpid()}"
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
    log_path = Path(tempfile.mkstemp(prefix="subsync-bench-worker-", suffix=".log")[1])
    argv = [sys.executable, "-m", "worker", "worker", "--processes", str(processes), "--threads", str(threads)]
    ids = [s.subscription_id for s in subscriptions]
    result = EndToEnd(processes, threads)
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        for n in range(rounds + 1):  # round 0 warms up
            since = datetime.now(UTC)
            began = time.perf_counter()
            for s in subscriptions:
                event = SubscriptionEvent.new(
                    "subscription.updated",
                    namespace=REAL,
                    subscription_id=s.subscription_id,
                    as_of=s.as_of,
                    event_id=f"bench-{n}-{s.subscription_id}",
                )
                publish(event, broker=broker)
            while _done_since(engine, since, ids) < len(ids):
                if worker.poll() is not None or time.perf_counter() - began > timeout:
                    raise EndToEndError(f"workers did not drain the queue; log tail:\n{_tail(log_path)}")
                time.sleep(0.01)
            if n > 0:
                result.per_round.append(len(ids) / (time.perf_counter() - began))
                result.floor_per_round.append(_floor_throughput(engine, subscriptions))
    finally:
        _stop(worker)
        for key in broker.client.scan_iter(match=f"{namespace}:*"):
            broker.client.delete(key)
        broker.close()
    result.message_ms = _message_times(log_path, skip_prefix="bench-0-")
    log_path.unlink(missing_ok=True)
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
