"""The scheduler enqueues exactly one `reconcile_due` per tick, however many schedulers run."""

from __future__ import annotations

import threading

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
    # CREDITS §2.5: `advance_charges` (no argument) beside `reconcile_due` on every tick
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
