"""Fixtures for worker tests: a Redis broker on its own key namespace (cleaned up afterwards)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dramatiq.brokers.redis import RedisBroker

from tests.worker.support import delete_redis_namespace, unique
from worker.broker import WorkerSettings, build_broker


def fast_settings(namespace: str, **overrides: object) -> WorkerSettings:
    """Quick retries so that failure paths finish in milliseconds."""
    values: dict[str, object] = {
        "broker_namespace": namespace,
        "min_backoff_ms": 10,
        "max_backoff_ms": 50,
        "transient_max_retries": 2,
        "domain_max_retries": 1,
        "shutdown_grace_seconds": 1,
        "metrics_port": 0,
        **overrides,
    }
    return WorkerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def broker_namespace(redis_url: str) -> Iterator[str]:
    namespace = unique("subsync-test")
    yield namespace
    cleanup = build_broker(redis_url, fast_settings(namespace))
    try:
        delete_redis_namespace(cleanup.client, namespace)
    finally:
        cleanup.close()


@pytest.fixture
def redis_broker(redis_url: str, broker_namespace: str) -> Iterator[RedisBroker]:
    broker = build_broker(redis_url, fast_settings(broker_namespace))
    yield broker
    broker.close()
