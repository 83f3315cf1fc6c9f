"""The Redis run lock of `reconcile_due` (docs/sync.md §8.4): one run at a time across processes."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from worker.queue.keys import reconcile_lock_key
from worker.queue.run_lock import run_lock


def test_a_second_run_is_refused_while_the_first_holds_the_lock(redis_broker: RedisBroker) -> None:
    key = reconcile_lock_key(redis_broker.namespace)
    with run_lock(redis_broker, reconcile_lock_key, 60_000) as first:
        assert first
        assert redis_broker.client.pttl(key) > 0  # it expires should its holder die
        with run_lock(redis_broker, reconcile_lock_key, 60_000) as second:
            assert not second
        assert redis_broker.client.exists(key)  # the refused run released nothing
    assert not redis_broker.client.exists(key)
    with run_lock(redis_broker, reconcile_lock_key, 60_000) as third:
        assert third


def test_a_run_releases_only_its_own_lock(redis_broker: RedisBroker) -> None:
    """Once the lock expired and another run took it, the first run's release leaves it alone."""
    key = reconcile_lock_key(redis_broker.namespace)
    with run_lock(redis_broker, reconcile_lock_key, 60_000) as held:
        assert held
        redis_broker.client.set(key, "another run")  # as if expired and taken again
    assert redis_broker.client.get(key) == b"another run"


def test_a_broker_without_redis_always_runs() -> None:
    broker = StubBroker()
    try:
        with run_lock(broker, reconcile_lock_key, 1_000) as held:
            assert held
    finally:
        broker.close()
