"""Liveness and readiness of a real `subsync worker`, through HTTP on its metrics port
(docs/operations.md §4 "Health").

- A worker thread wedged inside a message — blocked in Postgres where Dramatiq's time limit cannot
  interrupt it (`worker.infra.faults` holds it on an advisory lock) — makes `/livez` answer 503 and
  name the message, while `/readyz` stays 200; released, the worker is live again.
- Redis going away makes `/readyz` answer 503 naming Redis while `/livez` stays 200 (the consumers
  keep polling: restarting the worker would not help); Redis back, ready again.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine

from tests.builders import apply, document, fee, unique
from tests.reliability.processes import (
    AdvisoryLock,
    Processes,
    WorkerProcess,
    drain,
    free_port,
    http_get,
    wait_until,
    worker_env,
)
from worker.config import Settings
from worker.contract.events import SubscriptionEvent
from worker.queue.broker import build_broker
from worker.queue.publish import publish

WAIT = 30.0


@pytest.fixture
def fault_lock(engine: Engine) -> Iterator[AdvisoryLock]:
    lock = AdvisoryLock(engine, secrets.randbelow(2**31 - 2) + 1)
    try:
        yield lock
    finally:
        lock.close()


def wait_for_answer(worker: WorkerProcess, port: int, path: str, status: int) -> dict[str, object]:
    """Poll `path` until it answers `status`; its JSON body."""
    answer: tuple[int, str] = (0, "")

    def answered() -> bool:
        nonlocal answer
        worker.check_alive()
        answer = http_get(port, path)
        return answer[0] == status

    wait_until(answered, f"{path} to answer {status} (last: {answer})", WAIT, on_timeout=worker.tail)
    body = json.loads(answer[1])
    assert isinstance(body, dict)
    return body


def test_a_wedged_worker_thread_fails_liveness_and_recovers(
    engine: Engine, database_url: str, redis_url: str, broker_namespace: str, broker: RedisBroker,
    processes: Processes, fault_lock: AdvisoryLock,
) -> None:  # fmt: skip
    env = worker_env(
        database_url,
        redis_url,
        broker_namespace,
        SUBSYNC_FAULT_BLOCK_AFTER_WRITE=str(fault_lock.key),
        SUBSYNC_TIME_LIMIT_SECONDS="1",
        SUBSYNC_LIVENESS_TIMEOUT_SECONDS="3",  # above the idle poll (1 s): wedged 4 s into the message
    )
    port = free_port()
    worker = processes.worker(env, threads=2, metrics_port=port)
    live = wait_for_answer(worker, port, "/livez", 200)
    assert live == {"status": "ok", "worker_processes": 1}

    ns = unique("wedged")
    apply(engine, document(ns, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    event = SubscriptionEvent.new(
        "subscription.created", namespace=ns, subscription_id="sub_1", as_of=datetime(2024, 2, 15, tzinfo=UTC)
    )
    message_id = publish(event, broker=broker)

    wedged = wait_for_answer(worker, port, "/livez", 503)
    assert wedged["status"] == "fail"
    problems = wedged["problems"]
    assert isinstance(problems, list) and len(problems) == 1
    assert f"running message {message_id} (subscription_event)" in problems[0]
    assert "over its time limit of 1 s" in problems[0]
    assert http_get(port, "/readyz")[0] == 200  # Postgres and Redis answer: only liveness fails

    fault_lock.release()
    wait_for_answer(worker, port, "/livez", 200)
    drain(broker, [worker], WAIT)
    warnings = [e for e in worker.events() if e.get("event") == "worker is not live"]
    assert warnings and message_id in warnings[0]["problems"][0]


def test_redis_down_fails_readiness_not_liveness(
    database_url: str, broker_namespace: str, processes: Processes
) -> None:
    server = processes.redis()
    env = worker_env(database_url, server.url, broker_namespace, SUBSYNC_LIVENESS_TIMEOUT_SECONDS="10")
    port = free_port()
    worker = processes.worker(env, threads=1, metrics_port=port)
    ready = wait_for_answer(worker, port, "/readyz", 200)
    assert ready == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok", "schema": "ok"}}
    for path in ("/healthz", "/", "/metrics/extra", "/livez/x"):  # Dramatiq's server answered any path
        assert http_get(port, path)[0] == 404, path

    server.kill()
    not_ready = wait_for_answer(worker, port, "/readyz", 503)
    checks = not_ready["checks"]
    assert isinstance(checks, dict) and checks["postgres"] == "ok" and checks["redis"].startswith("ConnectionError")
    assert http_get(port, "/livez")[0] == 200  # the consumers keep polling while Redis is away

    server.start()
    wait_for_answer(worker, port, "/readyz", 200)
    producer = build_broker(server.url, Settings(broker_namespace=broker_namespace))
    try:
        drain(producer, [worker], WAIT)
    finally:
        producer.close()
    assert http_get(port, "/livez")[0] == 200
