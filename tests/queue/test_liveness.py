"""Liveness (`worker.queue.liveness`): what a worker process reports about its threads, and when the
exposition server calls the worker wedged. The endpoints themselves: tests/reliability/test_health.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.queue.liveness import REPORT_INTERVAL_SECONDS, Heartbeats, ReportWriter, assess, read_reports

TIMEOUT = 60.0


def report(
    *, reported_at: float = 1000.0, beat: float = 999.0, busy_since: float | None = None, limit: float | None = None
) -> dict[str, Any]:
    return {
        "pid": 7,
        "reported_at": reported_at,
        "consumers": [{"thread": "Thread-1 (subscription-sync)", "alive": True, "beat": beat}],
        "workers": [
            {
                "thread": "Thread-2",
                "alive": True,
                "busy_since": busy_since,
                "time_limit": limit,
                "actor_name": None if busy_since is None else "subscription_event",
                "message_id": None if busy_since is None else "m-1",
            }
        ],
    }


def test_a_fresh_idle_process_is_live() -> None:
    assert assess([report()], now=1000.5, timeout=TIMEOUT) == []


def test_no_report_is_not_live() -> None:
    assert assess([], now=1000.0, timeout=TIMEOUT) == ["no worker process has reported yet"]


def test_a_process_that_stopped_reporting_is_not_live() -> None:
    now = 1000.0 + TIMEOUT + 2 * REPORT_INTERVAL_SECONDS + 1
    assert assess([report()], now=now, timeout=TIMEOUT) == ["worker process 7 has not reported for 63 s"]


def test_a_consumer_that_stopped_polling_is_not_live() -> None:
    assert assess([report(beat=1000.0 - TIMEOUT - 1)], now=1000.0, timeout=TIMEOUT) == [
        "consumer thread Thread-1 (subscription-sync) of worker process 7 has not polled for 61 s"
    ]


def test_dead_threads_and_missing_threads_are_not_live() -> None:
    dead = report()
    dead["consumers"][0]["alive"] = False
    dead["workers"][0]["alive"] = False
    assert assess([dead], now=1000.0, timeout=TIMEOUT) == [
        "consumer thread Thread-1 (subscription-sync) of worker process 7 has stopped",
        "worker thread Thread-2 of worker process 7 has stopped",
    ]
    empty = {**report(), "consumers": [], "workers": []}
    assert assess([empty], now=1000.0, timeout=TIMEOUT) == [
        "worker process 7 has no consumer thread",
        "worker process 7 has no worker thread",
    ]


@given(limit=st.floats(1, 3600), running=st.floats(0, 10_000))
def test_a_message_is_wedged_exactly_when_it_runs_past_its_time_limit_plus_the_timeout(
    limit: float, running: float
) -> None:
    problems = assess([report(busy_since=1000.0 - running, limit=limit)], now=1000.0, timeout=TIMEOUT)
    wedged = 1000.0 - (1000.0 - running) > limit + TIMEOUT
    assert bool(problems) == wedged
    if wedged:
        assert problems[0].startswith("worker thread Thread-2 of worker process 7 has been running message m-1")


@pytest.fixture
def parked_thread() -> Iterator[Callable[[Callable[[], None]], threading.Thread]]:
    """Start threads that run a function, then wait until the test ends."""
    release = threading.Event()
    threads: list[threading.Thread] = []

    def start(body: Callable[[], None]) -> threading.Thread:
        done = threading.Event()

        def run() -> None:
            body()
            done.set()
            release.wait()

        thread = threading.Thread(target=run, daemon=True)
        threads.append(thread)
        thread.start()
        assert done.wait(10)
        return thread

    yield start
    release.set()
    for thread in threads:
        thread.join(10)


def test_heartbeats_follow_the_threads_and_reach_the_report_file(
    parked_thread: Callable[[Callable[[], None]], threading.Thread], tmp_path: Path
) -> None:
    heartbeats = Heartbeats()
    consumer = parked_thread(lambda: None)
    heartbeats.consumer_started(consumer)
    first_beat = heartbeats.report()["consumers"][0]["beat"]
    heartbeats.beat()  # the test's thread is no consumer: nothing changes
    assert heartbeats.report()["consumers"][0]["beat"] == first_beat

    worker = parked_thread(lambda: heartbeats.worker_started(threading.current_thread()))
    busy = Heartbeats()
    busy_worker_holder: list[dict[str, Any]] = []

    def run_message() -> None:
        busy.worker_started(threading.current_thread())
        busy.message_started("subscription_event", "m-9", 300.0)
        busy_worker_holder.append(busy.report()["workers"][0])
        busy.message_ended()
        busy_worker_holder.append(busy.report()["workers"][0])

    parked_thread(run_message)
    during, after = busy_worker_holder
    assert (during["actor_name"], during["message_id"], during["time_limit"]) == ("subscription_event", "m-9", 300.0)
    assert during["busy_since"] is not None and after["busy_since"] is None and after["message_id"] is None

    writer = ReportWriter(tmp_path / "health", heartbeats)
    writer.start()
    try:
        (written,) = read_reports(tmp_path / "health")
        assert [w["thread"] for w in written["workers"]] == [worker.name]
        assert [c["thread"] for c in written["consumers"]] == [consumer.name]
        assert assess([written], now=written["reported_at"], timeout=TIMEOUT) == []
    finally:
        writer.stop()
    assert read_reports(tmp_path / "health") == []  # a process that shut down leaves no report
