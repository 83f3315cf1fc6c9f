"""The scheduler enqueues exactly one `reconcile_due` per tick, however many schedulers run."""

from __future__ import annotations

import threading
from pathlib import Path

from dramatiq.brokers.redis import RedisBroker

from worker.queue.keys import queue_keys
from worker.queue.scheduler import Scheduler, run_tick, tick_of


def queued_actors(broker: RedisBroker) -> list[str]:
    import json

    keys = queue_keys(broker)
    return [json.loads(v)["actor_name"] for v in broker.client.hvals(keys["messages"])]


def test_one_enqueue_per_tick(redis_broker: RedisBroker) -> None:
    assert run_tick(redis_broker, 60, 1000) is not None
    assert run_tick(redis_broker, 60, 1000) is None
    assert run_tick(redis_broker, 60, 1001) is not None
    # docs/credits.md §2.5: `advance_charges` (no argument) beside `reconcile_due` on every tick
    assert sorted(queued_actors(redis_broker)) == ["advance_charges"] * 2 + ["reconcile_due"] * 2


def test_two_schedulers_share_the_ticks(redis_broker: RedisBroker) -> None:
    clock_value = [1000.0]
    lock = threading.Lock()

    def clock() -> float:
        with lock:
            return clock_value[0]

    schedulers = [Scheduler(redis_broker, 10, clock=clock) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[int] = []

    def run(scheduler: Scheduler) -> None:
        barrier.wait()
        results.append(scheduler.run(max_ticks=1))

    threads = [threading.Thread(target=run, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [0, 1]
    assert sorted(queued_actors(redis_broker)) == ["advance_charges", "reconcile_due"]


def test_the_loop_waits_for_the_next_tick_and_stops(redis_broker: RedisBroker) -> None:
    scheduler = Scheduler(redis_broker, 0.2)
    done = threading.Event()
    result: list[int] = []

    def run() -> None:
        result.append(scheduler.run(max_ticks=3))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(5)
    assert result == [3] and queued_actors(redis_broker).count("reconcile_due") == 3
    assert tick_of(10.0, 0.2) == 50


def test_the_health_file_is_rewritten_after_each_tick_that_reached_redis(
    redis_broker: RedisBroker, tmp_path: Path
) -> None:
    import json

    health = tmp_path / "scheduler.health"
    now = [1000.0]
    scheduler = Scheduler(redis_broker, 10, clock=lambda: now[0], health_file=health)
    scheduler.run(max_ticks=1)
    first = json.loads(health.read_text())
    assert first["tick"] == 100 and first["message_id"] is not None and first["interval"] == 10

    now[0] = 1010.0  # the next tick, already taken by another scheduler: still a tick that reached Redis
    assert run_tick(redis_broker, 10, 101) is not None
    scheduler.run(max_ticks=1)
    assert json.loads(health.read_text()) == {**first, "tick": 101, "message_id": None}


def test_without_redis_the_health_file_is_not_written(tmp_path: Path) -> None:
    unreachable = RedisBroker(url="redis://127.0.0.1:1/0", namespace="nowhere", socket_connect_timeout=0.2)
    health = tmp_path / "scheduler.health"
    assert Scheduler(unreachable, 10, health_file=health).run(max_ticks=1) == 0
    assert not health.exists()
