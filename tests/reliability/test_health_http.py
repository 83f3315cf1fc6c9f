"""The worker's HTTP endpoints and metrics, against a real `subsync worker` (issue 21 items 9, 11, 13;
docs/operations.md §2, §4):

- `/readyz` also requires the database schema at this release's head; `subsync worker` refuses to
  start on a schema that is behind or from a newer release;
- `HEAD` answers like `GET`; idle and half-sent connections are closed after the read timeout and never
  hold a thread each; `--metrics-host` chooses the address;
- `dramatiq_delayed_messages_inprogress` never goes negative and has no `pid` label.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import create_engine, pool, text

from tests.builders import unique
from tests.reliability.processes import (
    WORKER_COMMAND,
    Processes,
    WorkerProcess,
    drain,
    free_port,
    http_get,
    wait_until,
    worker_env,
)
from tests.reliability.test_health import wait_for_answer
from worker.contract.events import SubscriptionEvent
from worker.queue.exposition import MAX_CONNECTIONS, READ_TIMEOUT_SECONDS
from worker.queue.publish import publish
from worker.store import migrations

WAIT = 30.0


def set_revision(url: str, revision: str | None) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
            if revision is not None:
                conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": revision})
    finally:
        engine.dispose()


def test_readiness_requires_the_schema_at_head(
    empty_database: Callable[[], str], redis_url: str, broker_namespace: str, processes: Processes
) -> None:
    url = empty_database()
    migrations.upgrade(url)
    head = migrations.head_revision()
    port = free_port()
    worker = processes.worker(worker_env(url, redis_url, broker_namespace), threads=1, metrics_port=port)
    ready = wait_for_answer(worker, port, "/readyz", 200)
    assert ready["checks"] == {"postgres": "ok", "redis": "ok", "schema": "ok"}

    behind = [r.revision for r in migrations.history()][-1]
    set_revision(url, behind)
    not_ready = wait_for_answer(worker, port, "/readyz", 503)
    checks = not_ready["checks"]
    assert isinstance(checks, dict) and "run `subsync db upgrade`" in checks["schema"]
    assert checks["postgres"] == "ok"
    assert http_get(port, "/livez")[0] == 200  # restarting would not help

    set_revision(url, "9999_from_a_newer_release")
    wait_until(lambda: "newer release" in http_get(port, "/readyz")[1], "/readyz to name a newer release", WAIT)
    assert http_get(port, "/readyz")[0] == 503
    set_revision(url, head)
    wait_for_answer(worker, port, "/readyz", 200)


def test_the_worker_refuses_to_start_unless_the_schema_is_at_head(
    empty_database: Callable[[], str], redis_url: str, broker_namespace: str, processes: Processes
) -> None:
    url = empty_database()
    env = {**os.environ, **worker_env(url, redis_url, broker_namespace)}
    for revision in (None, "9999_from_a_newer_release"):
        if revision is not None:
            migrations.upgrade(url)
            set_revision(url, revision)
        result = subprocess.run(
            [*WORKER_COMMAND, "--metrics-port", "0"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 1, result.stderr
        assert "run `subsync db upgrade`" in result.stderr and "the worker will not start" in result.stderr
        assert "worker process ready" not in result.stderr


def exposition_process(worker: WorkerProcess, port: int) -> psutil.Process:
    """The forked process that listens on the metrics port."""
    for child in psutil.Process(worker.process.pid).children(recursive=True):
        try:
            if any(c.laddr and c.laddr.port == port and c.status == "LISTEN" for c in child.net_connections()):
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no process of the worker listens on {port}")


def head(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("HEAD", path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_head_answers_like_get_and_slow_clients_do_not_hold_threads(
    database_url: str, redis_url: str, broker_namespace: str, processes: Processes
) -> None:
    port = free_port()
    env = worker_env(database_url, redis_url, broker_namespace)
    worker = processes.worker(env, threads=1, metrics_port=port, args=("--metrics-host", "127.0.0.1"))
    wait_for_answer(worker, port, "/livez", 200)
    for path in ("/livez", "/readyz", "/metrics", "/nope"):
        got = http_get(port, path)
        status, headers, body = head(port, path)
        assert (status, body) == (got[0], b""), path
        assert int(headers["content-length"]) > 0 and headers["content-type"], path

    server = exposition_process(worker, port)
    threads_before = server.num_threads()
    clients = []
    for index in range(3 * MAX_CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_SECONDS + 10)
        if index % 2:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # half-sent: no blank line
        clients.append(sock)
    started = time.monotonic()
    assert server.num_threads() <= threads_before + MAX_CONNECTIONS
    for sock in clients:  # each blocks until the server closes it
        assert closed_by_server(sock)
        sock.close()
    assert time.monotonic() - started < READ_TIMEOUT_SECONDS + 10
    wait_until(lambda: http_get(port, "/livez")[0] == 200, "/livez to answer again", WAIT)
    assert server.num_threads() <= threads_before + 1


def test_the_delayed_messages_gauge_is_never_negative_and_has_no_pid_label(
    database_url: str, redis_url: str, broker: RedisBroker, broker_namespace: str, processes: Processes
) -> None:
    port = free_port()
    worker = processes.worker(worker_env(database_url, redis_url, broker_namespace), threads=2, metrics_port=port)
    namespace = unique("delayed")
    for index in range(3):  # no such subscription: not_found, retried once after a backoff, dead-lettered
        publish(
            SubscriptionEvent.new(
                "subscription.updated",
                namespace=namespace,
                subscription_id=f"sub_{index}",
                as_of=datetime(2024, 2, 15, tzinfo=UTC),
            ),
            broker=broker,
        )
    drain(broker, [worker], WAIT)
    wait_until(
        lambda: "dramatiq_message_rejects_total" in http_get(port, "/metrics")[1], "the dead letters' metrics", WAIT
    )
    metrics = http_get(port, "/metrics")[1]
    samples = [line for line in metrics.splitlines() if line.startswith("dramatiq_delayed_messages_inprogress")]
    assert all("pid=" not in line and float(line.rsplit(" ", 1)[1]) >= 0 for line in samples), samples
    assert "# TYPE dramatiq_delayed_messages_inprogress gauge" in metrics
    retried = [line for line in metrics.splitlines() if line.startswith("dramatiq_message_retries_total{")]
    assert retried and float(retried[0].rsplit(" ", 1)[1]) >= 3  # the retries went through the delay queue

    # every metric and every label served is documented (docs/operations.md §4 "Metrics")
    docs = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    section = docs[docs.index("## §4") : docs.index("## §5")]
    names = {m.group(1) for m in re.finditer(r"^([a-z_]+?)(?:_bucket|_count|_sum|_created)?[{ ]", metrics, re.M)}
    labels = set(re.findall(r"[{,]([a-z_]+)=", metrics)) - {"le"}
    assert names and labels >= {"queue_name", "actor_name", "state"}
    assert [n for n in sorted(names) if f"`{n}`" not in section] == []
    assert [label for label in sorted(labels) if f"`{label}`" not in section] == []
