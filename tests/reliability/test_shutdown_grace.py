"""The shutdown grace period is enforced (issue 21 item 10; docs/operations.md §2 "Shutdown"): a message
blocked inside a Postgres statement — held by the fault hook (`worker.infra.faults`) on an advisory
lock, after it wrote — is interrupted at SIGTERM + grace: its statement is cancelled, its transaction
rolls back, the message is requeued, the worker exits within grace + 5 s, and the interrupt's log line
names the message. A new worker then handles it."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine

from tests.builders import apply, comparable, lines_json, unique
from tests.reliability.processes import AdvisoryLock, Processes, drain, pending, worker_env
from tests.reliability.test_crashes import NOTHING, created, reference_lines, subscription, wait_blocked, written
from worker.queue.dead_letters import list_dead_letters
from worker.queue.publish import publish

GRACE_SECONDS = 2


@pytest.fixture
def fault_lock(engine: Engine) -> Iterator[AdvisoryLock]:
    lock = AdvisoryLock(engine, secrets.randbelow(2**31 - 2) + 1)
    try:
        yield lock
    finally:
        lock.close()


def test_a_message_blocked_in_postgres_is_cancelled_at_the_end_of_the_grace_period(
    engine: Engine,
    database_url: str,
    redis_url: str,
    broker: RedisBroker,
    broker_namespace: str,
    processes: Processes,
    fault_lock: AdvisoryLock,
) -> None:
    expected = reference_lines(engine)
    ns = unique("grace")
    apply(engine, subscription(ns))
    env = worker_env(
        database_url,
        redis_url,
        broker_namespace,
        SUBSYNC_FAULT_BLOCK_AFTER_WRITE=str(fault_lock.key),
        SUBSYNC_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
    )
    first = processes.worker(env, threads=2, name="first")
    message_id = publish(created(ns), broker=broker)
    wait_blocked(engine)

    stopped_at = time.monotonic()
    os.kill(first.process.pid, signal.SIGTERM)  # to the supervisor, as an orchestrator does
    try:
        first.process.wait(GRACE_SECONDS + 5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker did not exit within grace + 5 s\n{first.tail()}") from None
    assert time.monotonic() - stopped_at >= GRACE_SECONDS, first.tail()  # the grace period was given
    assert first.process.returncode == 0, first.tail()

    assert written(engine, ns) == NOTHING  # the cancelled transaction rolled back
    interrupts = [e for e in first.events() if e.get("event", "").startswith("interrupting an in-flight message")]
    assert [e.get("message_id") for e in interrupts] == [message_id]
    failed = [e for e in first.events() if e.get("event") == "message.failed"]
    assert failed and failed[0]["message_id"] == message_id and failed[0]["will_retry"] is True
    assert pending(broker) == 1  # requeued (waiting for its retry), not lost, not dead-lettered

    fault_lock.release()
    second = processes.worker(env, threads=2, name="second")
    drain(broker, [second], 30.0)
    assert comparable(lines_json(engine, ns)) == expected
    assert list_dead_letters(broker) == []
